"""The gRPC platform every service uses: contexts from the wire, refusals as statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail_platform.commands import AlreadyExists, CommandContext, InvalidCommand, RuleBroken
from casetrail_platform.grpc_platform.context import (
    command_context_from,
    command_context_problems,
    query_context_from,
    query_context_problems,
    read_command,
    read_query,
)
from casetrail_platform.grpc_platform.errors import status_for
from casetrail_platform.grpc_platform.server import Context, streamed_refusals_as_status
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import AccessDenied
from casetrail_platform.queries import QueryContext
from events.catalog.access import AccessPurpose
from events.catalog.base import Role
from events.envelope import Actor
from events.errors import FieldProblem
from tests.support.grpc import details, serving, violated_fields
from tests.support.identity import TestIssuer

ALLOWED = ", ".join(purpose.value for purpose in AccessPurpose)


HOME = "eastbay-dss"
KIM = Principal("kim", Role.COORDINATOR, agency="eastbay-dss", issuer="https://issuer.test")


def _query(purpose: str) -> common_pb2.QueryContext:
    return common_pb2.QueryContext(purpose=purpose)


def _fields(error: InvalidCommand) -> list[str]:
    return [violation.field for violation in error.violations]


def _body_problem(field: str) -> InvalidCommand:
    return InvalidCommand([FieldProblem(field, "required")])


def _no_case_id() -> str:
    raise _body_problem("case_id")


# --- query contexts -----------------------------------------------------------------------------


def test_a_query_names_an_access_purpose() -> None:
    assert query_context_from(KIM, _query("supervision")) == QueryContext(
        Actor("kim", Role.COORDINATOR), AccessPurpose.SUPERVISION
    )


@pytest.mark.parametrize(
    ("purpose", "problem"),
    [
        ("", f"required (need-to-know): one of {ALLOWED}"),
        ("unit test", f"must be one of: {ALLOWED}"),
        ("Coordination", f"must be one of: {ALLOWED}"),
    ],
)
def test_the_purpose_is_required_and_one_of_the_access_purposes(purpose: str, problem: str) -> None:
    context, problems = query_context_problems(KIM, _query(purpose))
    assert context is None
    assert problems == [FieldProblem("context.purpose", problem)]


def test_the_actor_is_the_verified_principal_never_a_request_field() -> None:
    assert "actor" not in common_pb2.QueryContext.DESCRIPTOR.fields_by_name
    assert "actor" not in common_pb2.CommandContext.DESCRIPTOR.fields_by_name
    context = command_context_from(KIM, common_pb2.CommandContext(idempotency_key="k1"))
    assert context.actor == KIM.actor == Actor("kim", Role.COORDINATOR)


def test_a_query_reports_its_context_and_its_body_together() -> None:
    with pytest.raises(InvalidCommand) as refused:
        read_query(KIM, _query(""), _no_case_id)
    assert _fields(refused.value) == ["context.purpose", "case_id"]
    reader, case_id = read_query(KIM, _query("direct_care"), lambda: "case-1")
    assert (reader.purpose, case_id) == (AccessPurpose.DIRECT_CARE, "case-1")


# --- command contexts ---------------------------------------------------------------------------


def test_command_context_problems_come_back_without_raising() -> None:
    message = common_pb2.CommandContext(correlation_id="not-a-uuid", expected_version=-1)
    context, problems = command_context_problems(KIM, message, field="request.context")
    assert context is None
    assert [problem.field for problem in problems] == [
        "request.context.idempotency_key",
        "request.context.correlation_id",
        "request.context.expected_version",
    ]


def test_a_good_command_context_is_read_whole() -> None:
    correlation = "5b0f3a4e-6c1d-4f53-9d57-0c8f1e2a9b61"
    message = common_pb2.CommandContext(
        idempotency_key="k1", correlation_id=correlation, expected_version=3
    )
    context, problems = command_context_problems(KIM, message)
    assert problems == []
    assert context == command_context_from(KIM, message)
    assert context is not None
    assert (str(context.correlation_id), context.expected_version) == (correlation, 3)


def test_a_command_reports_its_context_and_its_body_together() -> None:
    seen: list[CommandContext] = []

    def read(context: CommandContext) -> str:
        seen.append(context)
        return _no_case_id()

    bad = common_pb2.CommandContext()
    with pytest.raises(InvalidCommand) as refused:
        read_command(KIM, bad, read, home_agency=HOME)
    assert _fields(refused.value) == ["context.idempotency_key", "case_id"]
    # The body was read with a stand-in context, since the real one is unusable.
    assert seen[0].actor.role is Role.SYSTEM

    with pytest.raises(InvalidCommand) as refused:
        read_command(KIM, bad, lambda context: "fine", home_agency=HOME)
    assert _fields(refused.value) == ["context.idempotency_key"]

    good = common_pb2.CommandContext(idempotency_key="k1")
    context, body = read_command(
        KIM, good, lambda context: context.idempotency_key, home_agency=HOME
    )
    assert (context.actor.user_id, body) == ("kim", "k1")


@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.RECEPTIONIST, Role.SOCIAL_WORKER])
def test_a_command_from_another_agencys_staff_is_refused_before_its_fields(role: Role) -> None:
    # A role names a job, not an employer: another agency's supervisor is no supervisor here.
    foreign = Principal("dana", role, agency="sunrise-home-care", issuer="https://issuer.test")
    read: list[CommandContext] = []
    with pytest.raises(AccessDenied) as refused:
        read_command(foreign, common_pb2.CommandContext(), read.append, home_agency=HOME)
    status = status_for(refused.value)
    assert status.code == code_pb2.PERMISSION_DENIED
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == "NO_RELATIONSHIP"
    assert read == []  # it learns nothing of its request, not even that a field is bad


def test_a_partner_agency_acts_from_its_own_agency() -> None:
    # Its commands are fenced to the referrals and services addressed to it by the services.
    partner = Principal(
        "bay-recovery", Role.PARTNER_AGENCY, agency="bay-recovery", issuer="https://issuer.test"
    )
    context, _ = read_command(
        partner, common_pb2.CommandContext(idempotency_key="k1"), lambda c: c, home_agency=HOME
    )
    assert context.actor.user_id == "bay-recovery"


# --- refusals as statuses -----------------------------------------------------------------------


def test_extra_details_follow_the_ones_of_the_refusal_kind() -> None:
    error = AlreadyExists("client", "c-1")
    error.extra_details = (
        error_details_pb2.ErrorInfo(reason="POSSIBLE_DUPLICATE_CLIENT"),
        error_details_pb2.ResourceInfo(resource_type="client", resource_name="c-2"),
    )
    status = status_for(error)
    assert status.code == code_pb2.ALREADY_EXISTS
    assert [r.resource_name for r in details(status, error_details_pb2.ResourceInfo)] == [
        "c-1",
        "c-2",
    ]
    assert [i.reason for i in details(status, error_details_pb2.ErrorInfo)] == [
        "POSSIBLE_DUPLICATE_CLIENT"
    ]
    assert not status_for(AlreadyExists("client", "c-1")).details[1:]


def test_invalid_commands_name_their_fields() -> None:
    status = status_for(InvalidCommand([FieldProblem("a", "x"), FieldProblem("b.c", "y")]))
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert violated_fields(status) == ["a", "b.c"]


class _Countdown:
    """A server-streaming method that sends ``count`` messages, then refuses."""

    def __init__(self, count: int) -> None:
        self.count = count

    @streamed_refusals_as_status
    async def stream(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        for number in range(self.count):
            yield str(number).encode()
        raise RuleBroken("OUT_OF_NUMBERS", "no more numbers", subject="countdown")


async def _drain(call: AsyncIterator[bytes], into: list[bytes]) -> None:
    async for message in call:
        into.append(message)


@pytest.mark.parametrize("count", [0, 2])
async def test_a_streaming_refusal_ends_the_stream_with_its_status(
    count: int, issuer: TestIssuer
) -> None:
    servicer = _Countdown(count)

    def register(server: grpc.aio.Server) -> None:
        handler = grpc.unary_stream_rpc_method_handler(servicer.stream)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Countdown", {"Stream": handler}),)
        )

    received: list[bytes] = []
    async with serving(register, "test.Countdown", issuer) as channel:
        token = bearer_metadata(issuer.mint())
        call = channel.unary_stream("/test.Countdown/Stream")(b"", metadata=token)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _drain(call, received)
    assert received == [str(number).encode() for number in range(count)]
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "OUT_OF_NUMBERS" in (raised.value.details() or "")
