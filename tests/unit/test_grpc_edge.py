"""What every request meets at the gRPC platform before and after its handler: the bounds of
``casetrail_platform.limits``, invalid UTF-8 named, bounded refusals, and no exception text in any
answer."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.commands import InvalidCommand, NotFound, RuleBroken
from casetrail_platform.grpc_platform.context import command_context_problems
from casetrail_platform.grpc_platform.edge import request_problems
from casetrail_platform.grpc_platform.errors import MAX_STATUS_BYTES, MAX_VIOLATIONS, status_for
from casetrail_platform.grpc_platform.server import Context, refusals_as_status
from casetrail_platform.grpc_platform.wire import invalid_utf8_field
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.identity.principal import Principal
from casetrail_platform.limits import MAX_ID_CHARS, MAX_KEY_CHARS, MAX_LIST_ITEMS, MAX_TEXT_CHARS
from events.catalog.base import Role
from events.errors import FieldProblem
from tests.support.grpc import details, refusal, serving, violated_fields
from tests.support.identity import TestIssuer

KIM = Principal("kim", Role.COORDINATOR, agency="eastbay-dss", issuer="https://issuer.test")


def _context(key: str = "k-1") -> common_pb2.CommandContext:
    return common_pb2.CommandContext(idempotency_key=key)


def _problems(message: object) -> dict[str, str]:
    return {p.field: p.problem for p in request_problems(message)}  # type: ignore[arg-type]


# --- the bounds every request keeps ---------------------------------------------------------


@pytest.mark.parametrize("control", ["\x00", "\x01", "\x1b", "\x7f", "\x80", "\x85", "\x9f"])
def test_control_characters_in_free_text_are_refused_naming_the_field(control: str) -> None:
    request = planning_pb2.LogContactRequest(
        context=_context(), case_id="case-1", kind="home_visit", summary=f"went{control}well"
    )

    assert list(_problems(request)) == ["summary"]
    assert "control characters" in _problems(request)["summary"]


def test_free_text_keeps_tab_line_feed_and_carriage_return() -> None:
    request = planning_pb2.LogContactRequest(
        context=_context(), case_id="case-1", summary="line one\r\n\tline two"
    )

    assert _problems(request) == {}


@pytest.mark.parametrize("control", ["\x00", "\t", "\n", "\x80", "\x9f"])
def test_ids_and_keys_hold_no_control_characters_at_all(control: str) -> None:
    request = planning_pb2.LogContactRequest(
        context=_context(key=f"k{control}1"), case_id=f"c{control}"
    )

    assert sorted(_problems(request)) == ["case_id", "context.idempotency_key"]


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(10**15, 0), (-(10**15), 0), (315_576_000_001, 0), (60, -1), (-60, 5), (0, 10**9)],
)
def test_a_duration_outside_protobufs_bound_is_refused_naming_the_field(
    seconds: int, nanos: int
) -> None:
    """Python's protobuf parses any seconds; past the spec's bound ``ToTimedelta`` overflows
    in the handler, which answered INTERNAL (found by the fuzz test on OpenEmergencyAccess)."""
    request = intake_pb2.OpenEmergencyAccessRequest(context=_context(), case_id="case-1")
    request.duration.seconds, request.duration.nanos = seconds, nanos

    assert _problems(request) == {"duration": "must be a duration within ±10,000 years"}


def test_a_duration_within_the_bound_passes_the_edge() -> None:
    request = intake_pb2.OpenEmergencyAccessRequest(context=_context(), case_id="case-1")
    request.duration.seconds = 3600

    assert _problems(request) == {}


def test_lengths_and_list_sizes_are_bounded() -> None:
    request = planning_pb2.DraftPlanRequest(
        context=_context(key="k" * (MAX_KEY_CHARS + 1)),
        case_id="c" * (MAX_ID_CHARS + 1),
        goals=[planning_pb2.Goal(statement="s" * (MAX_TEXT_CHARS + 1))],
    )
    request.goals[0].objectives.extend(["o"] * (MAX_LIST_ITEMS + 1))

    assert _problems(request) == {
        "context.idempotency_key": f"at most {MAX_KEY_CHARS} characters",
        "case_id": f"at most {MAX_ID_CHARS} characters",
        "goals[0].statement": f"at most {MAX_TEXT_CHARS} characters",
        "goals[0].objectives": f"at most {MAX_LIST_ITEMS} items",
    }


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(253402300800, 0), (-62135596801, 0), (-2208988801, 0), (7258118400, 0), (0, -1)],
)
def test_timestamps_outside_the_plausible_range_are_refused(seconds: int, nanos: int) -> None:
    context = _context()
    context.occurred_at.CopyFrom(Timestamp(seconds=seconds, nanos=nanos))

    assert list(_problems(planning_pb2.CloseCaseRequest(context=context))) == [
        "context.occurred_at"
    ]


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31", "1899-12-31", "2200-01-01"])
def test_dates_outside_the_plausible_range_are_refused(day: str) -> None:
    request = intake_pb2.RegisterClientRequest(date_of_birth=day)

    assert list(_problems(request)) == ["date_of_birth"]


def test_a_well_formed_request_has_no_problems() -> None:
    context = _context()
    context.occurred_at.FromDatetime(datetime(2026, 3, 3, tzinfo=UTC))
    request = intake_pb2.RegisterClientRequest(
        context=context,
        name=intake_pb2.PersonName(given_names="Marco", family_name="Bellini"),
        date_of_birth="1941-05-02",
    )

    assert _problems(request) == {}


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
        datetime.now(UTC) + timedelta(hours=1),
        datetime(2199, 12, 31, tzinfo=UTC),
    ],
)
def test_a_command_says_it_happened_between_1970_and_now(moment: datetime) -> None:
    context = _context()
    context.occurred_at.FromDatetime(moment)

    found, problems = command_context_problems(KIM, context)

    assert found is None
    assert [p.field for p in problems] == ["context.occurred_at"]


# --- invalid UTF-8 --------------------------------------------------------------------------


def test_the_field_with_invalid_utf8_is_found_in_the_raw_bytes() -> None:
    request = planning_pb2.DraftPlanRequest(
        context=_context(),
        case_id="case-1",
        goals=[planning_pb2.Goal(statement="fine"), planning_pb2.Goal(statement="BAD!")],
    )
    data = request.SerializeToString().replace(b"BAD!", b"B\xffD!")

    assert invalid_utf8_field(planning_pb2.DraftPlanRequest.DESCRIPTOR, data) == (
        "goals[1].statement"
    )
    assert invalid_utf8_field(planning_pb2.DraftPlanRequest.DESCRIPTOR, b"\xff\xff") is None


# --- refusals that can be delivered ---------------------------------------------------------


def test_a_not_found_echoes_a_bounded_id() -> None:
    status = status_for(NotFound("case", "x" * 10_000))

    assert status.code == code_pb2.NOT_FOUND
    assert status.ByteSize() < 400
    assert details(status, error_details_pb2.ResourceInfo)[0].resource_name.endswith("…")


def test_an_invalid_argument_lists_the_first_problems_and_counts_the_rest() -> None:
    problems = [FieldProblem(f"needs[{i}].category", "must be one of: …") for i in range(25)]
    long_ones = [FieldProblem(f"goals[{i}].statement", "p" * 1000) for i in range(25)]

    status = status_for(InvalidCommand(problems))
    cut = status_for(InvalidCommand(long_ones))

    fields = [v.field for v in details(status, error_details_pb2.BadRequest)[0].field_violations]
    assert fields == [f"needs[{i}].category" for i in range(MAX_VIOLATIONS)] + ["request"]
    assert status.message.startswith("25 problems, the first 10 listed: needs[0].category")
    violations = details(cut, error_details_pb2.BadRequest)[0].field_violations
    assert violations[0].field == "goals[0].statement"
    assert violations[-1].field == "request"
    for each in (status, cut):
        assert each.ByteSize() <= MAX_STATUS_BYTES
        assert len(each.message.encode()) <= 400


def test_a_rule_with_huge_details_stays_bounded() -> None:
    status = status_for(RuleBroken("RULE", "d" * 50_000, subject="s" * 50_000, other="o" * 9000))

    assert status.ByteSize() <= MAX_STATUS_BYTES


# --- through a real server ------------------------------------------------------------------


class _Intake(intake_pb2_grpc.IntakeServiceServicer):
    @refusals_as_status
    async def GetCase(  # noqa: N802 (the RPC's name)
        self, request: intake_pb2.GetCaseRequest, context: Context
    ) -> intake_pb2.GetCaseResponse:
        if request.case_id == "crash":
            raise RuntimeError(f"diagnosis of {request.context.purpose}")
        raise NotFound("case", request.case_id)


def _with_intake(issuer: TestIssuer) -> AbstractAsyncContextManager[Any]:
    """A server whose only method is ``_Intake.GetCase`` (the others are gRPC's UNIMPLEMENTED)."""
    servicer = _Intake()  # type: ignore[abstract]
    return serving(
        lambda server: intake_pb2_grpc.add_IntakeServiceServicer_to_server(servicer, server),
        "casetrail.intake.v1.IntakeService",
        issuer,
    )


def token(issuer: TestIssuer) -> tuple[tuple[str, str]]:
    return bearer_metadata(issuer.mint(role="intake_worker"))


def _get_case(case_id: str) -> intake_pb2.GetCaseRequest:
    return intake_pb2.GetCaseRequest(
        context=common_pb2.QueryContext(purpose="emergency"), case_id=case_id
    )


async def test_an_unexpected_exception_is_internal_with_a_reference_and_no_text(
    caplog: pytest.LogCaptureFixture, issuer: TestIssuer
) -> None:
    async with _with_intake(issuer) as channel:
        stub = intake_pb2_grpc.IntakeServiceStub(channel)
        with caplog.at_level(logging.ERROR):
            code, status = await refusal(stub.GetCase(_get_case("crash"), metadata=token(issuer)))

    assert code == grpc.StatusCode.INTERNAL
    assert "emergency" not in status.message
    assert "RuntimeError" not in status.message
    info = details(status, error_details_pb2.ErrorInfo)[0]
    assert info.reason == "INTERNAL_ERROR"
    assert info.metadata["reference"] in caplog.text
    assert "RuntimeError" in caplog.text
    assert "emergency" not in caplog.text


async def test_invalid_utf8_is_invalid_argument_naming_the_field(issuer: TestIssuer) -> None:
    data = _get_case("ABC").SerializeToString().replace(b"ABC", b"A\xffC")
    async with _with_intake(issuer) as channel:
        raw = channel.unary_unary(
            "/casetrail.intake.v1.IntakeService/GetCase",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        code, status = await refusal(raw(data, metadata=token(issuer)))
        garbage, whole = await refusal(raw(b"\x0a\xff\xff\xff", metadata=token(issuer)))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["case_id"]
    assert "Error" not in status.message
    assert garbage == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(whole) == ["request"]


async def test_a_refusal_of_a_long_id_is_delivered(issuer: TestIssuer) -> None:
    async with _with_intake(issuer) as channel:
        stub = intake_pb2_grpc.IntakeServiceStub(channel)
        longest, huge = _get_case("x" * MAX_ID_CHARS), _get_case("x" * 10_000)
        not_found, _ = await refusal(stub.GetCase(longest, metadata=token(issuer)))
        too_long, status = await refusal(stub.GetCase(huge, metadata=token(issuer)))

    assert not_found == grpc.StatusCode.NOT_FOUND
    assert too_long == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["case_id"]
