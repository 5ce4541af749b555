"""From the wire's CommandContext / QueryContext to the domain's, with field-level errors.

The actor is the call's verified principal (``casetrail_platform.identity.principal_of(context)``),
never a request field: the wire's contexts carry none.

A request's context and its other fields are checked together: ``read_command`` and
``read_query`` refuse every bad field of a request in one ``InvalidCommand``. The ``*_problems``
functions give a context (``None`` when a field is bad) and its problems without raising, for
entrypoints that collect problems their own way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

from casetrail.common.v1 import common_pb2
from casetrail_platform.commands import CommandContext, InvalidCommand
from casetrail_platform.grpc_platform.fingerprint import current_fingerprint
from casetrail_platform.identity.principal import Principal
from casetrail_platform.limits import EARLIEST_OCCURRED_AT, MAX_KEY_CHARS, OCCURRED_AT_CLOCK_SKEW
from casetrail_platform.policy.decide import decide_command
from casetrail_platform.policy.guard import AccessDenied
from casetrail_platform.policy.vocabulary import Action
from casetrail_platform.queries import QueryContext
from events.catalog.access import AccessPurpose
from events.catalog.base import Role
from events.envelope import Actor, RecordedEvent
from events.errors import FieldProblem

T = TypeVar("T")


def command_context_problems(
    principal: Principal, message: common_pb2.CommandContext, field: str = "context"
) -> tuple[CommandContext | None, list[FieldProblem]]:
    """The command's context, or ``None`` and every problem of its fields."""
    problems: list[FieldProblem] = []
    key = message.idempotency_key
    if not key or len(key) > MAX_KEY_CHARS:
        problems.append(
            FieldProblem(
                f"{field}.idempotency_key", f"required, at most {MAX_KEY_CHARS} characters"
            )
        )
    correlation: UUID | None = None
    if message.correlation_id:
        try:
            correlation = UUID(message.correlation_id)
        except ValueError:
            problems.append(FieldProblem(f"{field}.correlation_id", "must be a UUID"))
    if message.expected_version < 0:
        problems.append(FieldProblem(f"{field}.expected_version", "must not be negative"))
    occurred_at = _occurred_at(message, f"{field}.occurred_at", problems)
    if problems:
        return None, problems
    context = CommandContext(
        actor=principal.actor,
        idempotency_key=key,
        occurred_at=occurred_at,
        expected_version=message.expected_version or None,
        request_fingerprint=current_fingerprint(),
    )
    if correlation is not None:
        context = replace(context, correlation_id=correlation)
    return context, []


def command_context_from(
    principal: Principal, message: common_pb2.CommandContext, field: str = "context"
) -> CommandContext:
    context, problems = command_context_problems(principal, message, field)
    if context is None:
        raise InvalidCommand(problems)
    return context


def query_context_problems(
    principal: Principal, message: common_pb2.QueryContext, field: str = "context"
) -> tuple[QueryContext | None, list[FieldProblem]]:
    """The query's context, or ``None`` and every problem of its fields.

    The purpose is always required (need-to-know): one of the ``AccessPurpose`` values.
    """
    problems: list[FieldProblem] = []
    purpose: AccessPurpose | None = None
    try:
        purpose = AccessPurpose(message.purpose)
    except ValueError:
        allowed = ", ".join(value.value for value in AccessPurpose)
        problem = "required (need-to-know): one of" if not message.purpose else "must be one of:"
        problems.append(FieldProblem(f"{field}.purpose", f"{problem} {allowed}"))
    if purpose is None or problems:
        return None, problems
    return QueryContext(principal.actor, purpose), []


def query_context_from(
    principal: Principal, message: common_pb2.QueryContext, field: str = "context"
) -> QueryContext:
    context, problems = query_context_problems(principal, message, field)
    if context is None:
        raise InvalidCommand(problems)
    return context


def read_command(
    principal: Principal,
    message: common_pb2.CommandContext,
    read: Callable[[CommandContext], T],
    field: str = "context",
    *,
    home_agency: str | None,
) -> tuple[CommandContext, T]:
    """The command's context and ``read(context)``, which reads the rest of the request.

    First, a caller the services' agency (``home_agency``) does not employ is refused
    (``decide_command``: PERMISSION_DENIED ``NO_RELATIONSHIP``) before anything of the request
    is read, so it learns nothing about it. Every command goes through here, which is why the
    check is here and not in each service's role check. ``None`` only for the commands the
    access policy decides itself against the case (break the glass, its review and closing):
    their refusals are recorded in the case's access log, the agency's among them.

    This refusal, like a command's refusal by role, is not recorded as ``record.access_denied``:
    that event is the access log of reads of a case (it names a purpose and a case), while a
    command states no purpose and often names no case (a registration, an erasure); nothing was
    read or written.

    Every bad field of both is refused in one ``InvalidCommand``. ``read`` must only check and
    convert (no I/O): it also runs when the context is bad, with a stand-in context, so that
    the caller hears about all of the request at once.
    """
    if home_agency is not None:
        decision = decide_command(principal, home_agency=home_agency)
        if not decision.allowed:
            raise AccessDenied(principal, Action.RECORD, decision)
    context, problems = command_context_problems(principal, message, field)
    try:
        body = read(context or _stand_in())
    except InvalidCommand as error:
        raise InvalidCommand([*problems, *error.violations]) from None
    if context is None:
        raise InvalidCommand(problems)
    return context, body


async def read_timely_command(
    principal: Principal,
    message: common_pb2.CommandContext,
    read: Callable[[CommandContext, bool], T],
    recorded_before: Callable[[CommandContext], Awaitable[list[RecordedEvent] | None]],
    *,
    home_agency: str | None,
) -> tuple[CommandContext, T, list[RecordedEvent] | None]:
    """``read_command`` for a request checked against the server's clock too (a date that must
    not have passed): ``read(context, timely)`` checks the clock only when ``timely``. The
    third value is what the command's key recorded before, when the request is refused only by
    the clock and ``recorded_before`` finds it done: a retry sent after the date passed (its
    first answer lost) gets its answer again, not a refusal of what was recorded
    (``decide.recorded_before``; README, "Concurrency and idempotency"). Nothing more is read
    for a request the clock lets through, and any other bad field is refused as before."""
    try:
        context, body = read_command(
            principal, message, lambda ctx: read(ctx, True), home_agency=home_agency
        )
    except InvalidCommand as refused:
        try:
            context, body = read_command(
                principal, message, lambda ctx: read(ctx, False), home_agency=home_agency
            )
        except InvalidCommand:
            raise refused from None
        earlier = await recorded_before(context)
        if earlier is None:
            raise refused
        return context, body, earlier
    return context, body, None


def read_query(
    principal: Principal,
    message: common_pb2.QueryContext,
    read: Callable[[], T],
    field: str = "context",
) -> tuple[QueryContext, T]:
    """The query's context and ``read()`` (the rest of the request), refusing every bad field
    of both in one ``InvalidCommand``; ``read`` must only check and convert."""
    context, problems = query_context_problems(principal, message, field)
    try:
        body = read()
    except InvalidCommand as error:
        raise InvalidCommand([*problems, *error.violations]) from None
    if context is None:
        raise InvalidCommand(problems)
    return context, body


def _occurred_at(
    message: common_pb2.CommandContext, field: str, problems: list[FieldProblem]
) -> datetime | None:
    """When the command says it happened: from 1970 up to now (give or take a clock's drift)."""
    if not message.HasField("occurred_at"):
        return None
    try:
        moment = message.occurred_at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        moment = None
    latest = datetime.now(UTC) + OCCURRED_AT_CLOCK_SKEW
    if moment is None or not EARLIEST_OCCURRED_AT <= moment <= latest:
        problems.append(
            FieldProblem(field, f"must be from {EARLIEST_OCCURRED_AT:%Y-%m-%d} up to now (UTC)")
        )
        return None
    return moment


def _stand_in() -> CommandContext:
    """What ``read_command`` reads a request with when its context is bad: ids derived from it
    are well formed, and the request is refused anyway."""
    return CommandContext(actor=Actor("stand-in", Role.SYSTEM), idempotency_key="stand-in")
