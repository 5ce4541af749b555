"""Hostile input, seen from an API client on both backends (issue 8): NUL, control characters,
out-of-range and implausible times, invalid UTF-8 and oversized fields are INVALID_ARGUMENT
naming the field, refusals are deliverable whatever was sent, and nothing refused is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.limits import MAX_ID_CHARS
from cli.rpc import Refusal, command, eventually, query, refusal_of, refused, timestamp
from cli.walk.story import AUDITOR, COORDINATOR, INTAKE_WORKER, RECEPTIONIST
from tests.e2e.conftest import Casetrail
from tests.e2e.support import Case, new_case
from tests.support.cases import key, registration

pytestmark = pytest.mark.asyncio(loop_scope="package")

NUL = "\x00"


def _invalid(refusal: Refusal, *fields: str) -> None:
    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT, refusal
    assert set(fields) <= set(refusal.field_violations), refusal.field_violations


def _contact(case: Case, summary: str = "Phoned; all well") -> pl.LogContactRequest:
    return pl.LogContactRequest(
        context=command(key()), case_id=case.case_id, kind="phone_call", summary=summary
    )


async def _planning_events(casetrail: Casetrail, case: Case) -> list[str]:
    """The ids of the events planning recorded on the case, as audit's timeline shows them
    (not counting the accesses it records for every read)."""
    response = await casetrail.stubs.as_(AUDITOR).audit.GetTimeline(
        audit_pb2.GetTimelineRequest(context=query("confidentiality_review"), case_id=case.case_id)
    )
    return [
        entry.event_id
        for entry in response.entries
        if "planning" in entry.source and not entry.event_type.startswith("casetrail.record.")
    ]


async def test_nul_is_refused_naming_the_field_and_nothing_is_written(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "home_care")
    stubs = casetrail.stubs
    await eventually(
        lambda: stubs.as_(COORDINATOR).planning.GetCaseView(
            pl.GetCaseViewRequest(context=query("coordination"), case_id=case.case_id)
        ),
        what="planning to learn the case",
        patience=casetrail.patience,
    )

    _invalid(
        await refused(stubs.as_(COORDINATOR).planning.LogContact(_contact(case, f"a{NUL}b"))),
        "summary",
    )
    goal = pl.DraftPlanRequest(
        context=command(key()),
        case_id=case.case_id,
        goals=[pl.Goal(statement=f"Walk{NUL}again", term="short", need_category="home_care")],
    )
    _invalid(await refused(stubs.as_(COORDINATOR).planning.DraftPlan(goal)), "goals[0].statement")
    keyed = _contact(case)
    keyed.context.idempotency_key = f"key{NUL}"
    _invalid(
        await refused(stubs.as_(COORDINATOR).planning.LogContact(keyed)), "context.idempotency_key"
    )
    client = registration()
    client.name.family_name = f"Conti{NUL}"
    _invalid(
        await refused(stubs.as_(RECEPTIONIST).intake.RegisterClient(client)), "name.family_name"
    )

    # A contact logged afterwards reaches audit, and so has everything planning wrote on the
    # case before it (one partition per case): that is the contact alone.
    logged = await stubs.as_(COORDINATOR).planning.LogContact(_contact(case))
    planned = await eventually(
        lambda: _planning_events(casetrail, case),
        lambda ids: logged.result.event_ids[0] in ids,
        what="audit to record the contact",
        patience=casetrail.patience,
    )
    assert planned == list(logged.result.event_ids)


async def test_out_of_range_timestamps_are_invalid_argument_on_every_service(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "home_care")
    stubs = casetrail.stubs
    beyond = Timestamp(seconds=253402300800)

    contact = _contact(case)
    contact.context.occurred_at.CopyFrom(beyond)
    _invalid(
        await refused(stubs.as_(COORDINATOR).planning.LogContact(contact)), "context.occurred_at"
    )
    reopening = intake_pb2.ReopenCaseRequest(
        context=command(key()), case_id=case.case_id, reason="back"
    )
    reopening.context.occurred_at.CopyFrom(beyond)
    _invalid(
        await refused(stubs.as_(INTAKE_WORKER).intake.ReopenCase(reopening)), "context.occurred_at"
    )
    as_of = audit_pb2.GetCaseStateAsOfRequest(
        context=query("confidentiality_review"), case_id=case.case_id, as_of=beyond
    )
    _invalid(await refused(stubs.as_(AUDITOR).audit.GetCaseStateAsOf(as_of)), "as_of")
    schedule = _schedule(case, datetime.now(UTC) + timedelta(days=7), timedelta(hours=1))
    schedule.ends_at.CopyFrom(beyond)
    _invalid(
        await refused(stubs.as_(COORDINATOR).coordination.ScheduleService(schedule)), "ends_at"
    )


def _schedule(case: Case, starts_at: datetime, lasting: timedelta) -> co.ScheduleServiceRequest:
    return co.ScheduleServiceRequest(
        context=command(key()),
        case_id=case.case_id,
        kind="home_care",
        provider=co.Provider(provider_id="sunrise-home-care", name="Sunrise Home Care"),
        starts_at=timestamp(starts_at),
        ends_at=timestamp(starts_at + lasting),
        location=co.ServiceLocation(kind="client_home"),
    )


async def test_implausible_moments_are_refused(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "home_care")
    stubs = casetrail.stubs
    programs = await stubs.as_(COORDINATOR).coordination.ListPrograms(
        co.ListProgramsRequest(context=query("coordination"))
    )
    for year in (1, 9999):
        eligibility = co.DetermineEligibilityRequest(
            context=command(key(), at=datetime(year, 12, 31, tzinfo=UTC)),
            case_id=case.case_id,
            program_id=programs.programs[0].program_id,
        )
        _invalid(
            await refused(stubs.as_(COORDINATOR).coordination.DetermineEligibility(eligibility)),
            "context.occurred_at",
        )
    forever = _schedule(case, datetime(1, 1, 1, tzinfo=UTC), timedelta(days=1))
    forever.ends_at.CopyFrom(timestamp(datetime(9999, 12, 31, tzinfo=UTC)))
    _invalid(
        await refused(stubs.as_(COORDINATOR).coordination.ScheduleService(forever)),
        "starts_at",
        "ends_at",
    )
    week = _schedule(case, datetime.now(UTC) + timedelta(days=7), timedelta(days=3))
    _invalid(await refused(stubs.as_(COORDINATOR).coordination.ScheduleService(week)), "ends_at")
    far = _schedule(case, datetime.now(UTC) + timedelta(days=20 * 365), timedelta(hours=1))
    _invalid(await refused(stubs.as_(COORDINATOR).coordination.ScheduleService(far)), "starts_at")
    born = registration()
    born.date_of_birth = "0001-01-01"
    _invalid(await refused(stubs.as_(RECEPTIONIST).intake.RegisterClient(born)), "date_of_birth")


async def test_invalid_utf8_is_invalid_argument_naming_the_field(casetrail: Casetrail) -> None:
    requests = {
        "/casetrail.intake.v1.IntakeService/GetCase": intake_pb2.GetCaseRequest(
            context=query("direct_care"), case_id="MARK"
        ),
        "/casetrail.coordination.v1.CoordinationService/GetCaseCoordination": (
            co.GetCaseCoordinationRequest(context=query("coordination"), case_id="MARK")
        ),
        "/casetrail.planning.v1.PlanningService/LogContact": pl.LogContactRequest(
            context=command(key()), case_id="c", summary="MARK"
        ),
        "/casetrail.audit.v1.AuditService/GetTimeline": audit_pb2.GetTimelineRequest(
            context=query("confidentiality_review"), case_id="MARK"
        ),
    }
    for method, request in requests.items():
        service = method.split(".")[1]
        async with grpc.aio.insecure_channel(casetrail.addresses[service]) as channel:
            raw = channel.unary_unary(
                method, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            data = request.SerializeToString().replace(b"MARK", b"M\xffRK")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await raw(data, metadata=bearer_metadata(casetrail.tokens(AUDITOR)))
        refusal = refusal_of(raised.value)
        _invalid(refusal, "summary" if "LogContact" in method else "case_id")
        assert "Error" not in refusal.message
        assert "Exception" not in refusal.message


async def test_refusals_are_delivered_whatever_was_sent(casetrail: Casetrail) -> None:
    stubs = casetrail.stubs
    longest = "x" * MAX_ID_CHARS
    for call in (
        stubs.as_(INTAKE_WORKER).intake.GetCase(
            intake_pb2.GetCaseRequest(context=query("direct_care"), case_id=longest)
        ),
        stubs.as_(COORDINATOR).coordination.GetCaseCoordination(
            co.GetCaseCoordinationRequest(context=query("coordination"), case_id=longest)
        ),
    ):
        refusal = await refused(call)
        assert refusal.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    huge = await refused(
        stubs.as_(INTAKE_WORKER).intake.GetCase(
            intake_pb2.GetCaseRequest(context=query("direct_care"), case_id="x" * 10_000)
        )
    )
    _invalid(huge, "case_id")
    needs = intake_pb2.OpenCaseRequest(
        context=command(key()),
        client_id="nobody",
        referral_source=intake_pb2.ReferralSource(kind="self"),
        presenting_needs=[intake_pb2.PresentingNeed(category=f"bad-{i}") for i in range(20)],
    )
    many = await refused(stubs.as_(RECEPTIONIST).intake.OpenCase(needs))
    assert many.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(many.field_violations) <= 11
