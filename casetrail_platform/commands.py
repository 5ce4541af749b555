"""Commands: who asks, under which idempotency key, and how refusals are described.

Services subclass the refusals below in their own ``domain/errors.py``; the gRPC entrypoint
turns each kind into one status code (see ``casetrail_platform.grpc_platform.errors``), so domain
code never deals with transport concerns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import TYPE_CHECKING
from uuid import UUID, uuid4, uuid5

from pydantic import TypeAdapter, ValidationError

from events.catalog.base import CaseEvent, Identifier
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from events.errors import FieldProblem
from events.validation import plain, text_lengths

if TYPE_CHECKING:
    from google.protobuf.message import Message

_COMMAND_NAMESPACE = UUID("5b0f3a4e-6c1d-4f53-9d57-0c8f1e2a9b61")


@lru_cache(maxsize=1024)
def _command_id(service: str, user_id: str, idempotency_key: str) -> UUID:
    # Cached: a command asks for its id several times (retry look-up, event ids, metadata).
    return uuid5(_COMMAND_NAMESPACE, f"{service}\x1f{user_id}\x1f{idempotency_key}")


@lru_cache(maxsize=1024)
def _event_id_base(command_id: UUID, request_fingerprint: str) -> int:
    # One base per command with the index in the low 16 bits: a command's events sit next
    # to each other in the event-id index, so a 100-event append dirties a few index pages
    # instead of one per event (bench/RESULTS.md). 106 random bits keep ids unique. The
    # request's fingerprint is part of it, so the stored ids tell which request was recorded.
    name = f"events\x1f{request_fingerprint}" if request_fingerprint else "events"
    return uuid5(command_id, name).int & ~0xFFFF


def utc_now() -> datetime:
    """The server's clock, unless a service gives a command another (``CommandContext.clock``)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CommandContext:
    actor: Actor
    idempotency_key: str
    correlation_id: UUID = field(default_factory=uuid4)
    occurred_at: datetime | None = None
    expected_version: int | None = None
    request_fingerprint: str = ""
    """A digest of what the request asks for (``casetrail_platform.grpc_platform.fingerprint``);
    empty when the command does not come from a request (tests, in-process callers)."""
    clock: Callable[[], datetime] = field(default=utc_now, compare=False, repr=False)
    """The server's clock, which tells the moment of a command stating none (``moment``): the
    one a service checks the command's day on too, so that both are of one clock."""

    def command_id(self, service: str) -> UUID:
        """Stable id of this command: the same key from the same actor is the same command."""
        return _command_id(service, self.actor.user_id, self.idempotency_key)

    def moment(self) -> datetime:
        """When the command happens: the moment it states (``occurred_at``), else now. Its
        events carry it (``new_events``), and the rules on the order of a case's events check
        it (``require_not_before``): a command stating no moment comes out of order as surely
        as a backdated one when what it follows was stated a little ahead, as any moment may be
        (``OCCURRED_AT_CLOCK_SKEW``). A decision reads it while deciding, under the stream's
        turn; the events, read a moment later, carry the same or a later one."""
        return self.occurred_at or self.clock()

    def new_events(self, service: str, events: Sequence[CaseEvent]) -> list[NewEvent]:
        """Wrap a decision's events with this command's metadata.

        Event ids derive from the command id, so a retried command produces the same ids and the
        store recognises the repeat instead of writing twice.
        """
        command_id = self.command_id(service)
        metadata = EventMetadata(
            source=service,
            actor=self.actor,
            occurred_at=self.moment(),
            correlation_id=self.correlation_id,
            causation_id=command_id,
        )
        base = _event_id_base(command_id, self.request_fingerprint)
        if len(events) > 0xFFFF:
            raise ValueError("a command records at most 65,535 events")
        return [
            NewEvent(event=event, metadata=metadata, event_id=UUID(int=base | index))
            for index, event in enumerate(events)
        ]

    def check_retry(self, service: str, earlier: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """``earlier`` (what this command's key recorded before) when this is a true retry of
        the same request; ``IdempotencyKeyReused`` when the key was first used for another.

        The first request's fingerprint is in the ids of the events it recorded (see
        ``new_events``), so both backends compare without storing anything else. Events
        recorded without a fingerprint (before fingerprints existed, or by a caller that has
        no request) cannot be compared and are taken as the retry's answer.
        """
        if not self.request_fingerprint or not earlier:
            return list(earlier)
        command_id = self.command_id(service)
        stored_base = earlier[0].event_id.int & ~0xFFFF
        if stored_base not in (
            _event_id_base(command_id, self.request_fingerprint),
            _event_id_base(command_id, ""),
        ):
            raise IdempotencyKeyReused(self.idempotency_key)
        return list(earlier)


def derived_id(context: CommandContext, service: str, purpose: str) -> str:
    """An id the command creates (a new case id, say) that a retry creates identically."""
    return uuid5(context.command_id(service), purpose).hex


class CommandRejected(Exception):
    """Base of every refusal. Nothing was written."""

    extra_details: tuple[Message, ...] = ()
    """Status details an entrypoint adds after the ones its kind carries (a service's own
    message listing what the caller needs to decide, say); set on the instance before it is
    re-raised, since domain code knows no wire types."""


COMMAND_MOMENT = "context.occurred_at"
"""The request field a command states its moment in."""


class InvalidCommand(CommandRejected):
    """The command's fields are wrong (maps to INVALID_ARGUMENT with field violations)."""

    def __init__(self, violations: Sequence[FieldProblem]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(f"{v.field}: {v.problem}" for v in self.violations))


def require_not_before(
    moment: datetime | None,
    what: str,
    earlier: datetime | None,
    field: str = COMMAND_MOMENT,
) -> None:
    """``moment`` (given as ``field``) does not come before ``what``, which happened at
    ``earlier`` (``None``: not known). For the command's own moment (``COMMAND_MOMENT``),
    ``moment`` is the one its events carry (``CommandContext.moment``: the one it states, else
    now), so a command stating none is checked too; ``None``: not known (a caller deciding
    without a command), not checked.

    Every service refuses so with this one rule and wording: audit's state of a case as it
    happened folds by the moments stated, so a command dated before the event it follows would
    put the case's history out of order for good (a referral accepted before it was made would
    show as still made, a plan dated before the case was reopened as made on a closed case)."""
    if moment is None or earlier is None or moment >= earlier:
        return
    problem = f"must not be before {what} ({earlier.isoformat()})"
    if field == COMMAND_MOMENT:
        # Said whether or not the caller stated one: a command stating none happens now.
        problem += (
            f", and the command happens at {moment.isoformat()} (the moment it states, else"
            f" now): state a moment at or after {earlier.isoformat()}"
        )
    raise InvalidCommand([FieldProblem(field, problem)])


@cache
def _identifier() -> TypeAdapter[str]:
    return TypeAdapter(Identifier)


def id_problem(field: str, value: str) -> FieldProblem | None:
    """What is wrong with ``value`` as the catalog's id (``Identifier``), naming ``field`` and
    never the value; ``None`` when nothing is. For readers collecting a request's problems.
    An empty one is "required" with the id's bounds, as a text of an event is refused."""
    try:
        _identifier().validate_python(value)
    except ValidationError as error:
        return FieldProblem(field, plain(error.errors()[0], text_lengths(Identifier)))
    return None


def required_id(field: str, value: str) -> str:
    """``value`` if it has the catalog's shape of an id, else ``InvalidCommand`` naming
    ``field``: checked with the rest of the request, before any read or policy decision (an id
    no event can hold names nothing, and a refusal naming it could not be recorded)."""
    problem = id_problem(field, value)
    if problem is not None:
        raise InvalidCommand([problem])
    return value


class RuleBroken(CommandRejected):
    """A business rule refuses it now (FAILED_PRECONDITION naming the rule)."""

    def __init__(self, rule: str, description: str, **details: str) -> None:
        self.rule = rule
        self.description = description
        self.details = details
        super().__init__(f"{rule}: {description}")


class NotFound(CommandRejected):
    def __init__(self, what: str, identifier: str) -> None:
        self.what = what
        self.identifier = identifier
        super().__init__(f"{what} {identifier!r} not found")


class AlreadyExists(CommandRejected):
    def __init__(self, what: str, identifier: str, description: str = "") -> None:
        self.what = what
        self.identifier = identifier
        super().__init__(description or f"{what} {identifier!r} already exists")


class NotAllowed(CommandRejected):
    """The actor's role may not do this (PERMISSION_DENIED)."""

    reason = "ROLE_NOT_ALLOWED"
    """The ErrorInfo reason: which rule refused (the access policy names its own)."""

    def __init__(self, role: str, action: str, description: str = "", **details: str) -> None:
        self.role = role
        self.action = action
        self.details = details
        super().__init__(description or f"role {role!r} may not {action}")


class IdempotencyKeyReused(RuleBroken):
    """The key was first sent with another request: answering with the first request's result
    would tell the caller that this one succeeded (FAILED_PRECONDITION, as payment APIs do)."""

    RULE = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, idempotency_key: str) -> None:
        super().__init__(
            self.RULE,
            "this idempotency key was already used for a different request; a retry must"
            " send the same request again, a new command needs a new key",
            subject="context.idempotency_key",
        )
        self.idempotency_key = idempotency_key


class NotCaughtUp(CommandRejected):
    """The facts a decision needs are older than something this service already holds
    (UNAVAILABLE: nothing was refused or written; the same call succeeds or is refused once the
    bus has brought the rest).

    ``subject`` is what the request asked about (the case id it sent, a client id, a budget
    line, a list such as ``case-list``), never a case the service looked up for it: nothing is
    decided yet, so naming a looked-up case would tell the caller of a case the policy has not
    let them read."""

    reason = "FACTS_NOT_CAUGHT_UP"

    def __init__(self, what: str, subject: str) -> None:
        self.what = what
        self.subject = subject
        super().__init__(f"this service has not caught up with {what} for {subject!r} yet; retry")


class VersionConflict(CommandRejected):
    """The case changed since the caller read it (ABORTED: read again, then retry)."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(f"{stream} is at version {actual}, the command expected {expected}")


class LockHeld(CommandRejected):
    """The lock the command's append takes (``StreamVersion.lock``: opening a case, its
    client's) was held by another command (the client's erasure) for the whole retry budget
    (ABORTED naming the lock: nothing was recorded, and the same request may be sent again)."""

    reason = "LOCK_HELD"

    def __init__(self, stream: str, lock: str) -> None:
        self.stream = stream
        self.lock = lock
        super().__init__(
            f"{stream} was not written: the lock {lock!r} it takes was held by another command"
            " for the whole retry budget; nothing was recorded, send the same request again"
        )
