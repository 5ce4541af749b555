"""A reopened case keeps the times it was closed: no service is scheduled, moved or delivered to
start in one, as none is before the case's opening. Coordination's facts kept only the last
closure, and that only while the case was closed, so after a reopening care was booked,
delivered and claimed inside the time the case had been closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.cases import CaseClosed, CaseReopened, DischargeReason
from events.catalog.funding import BudgetReleased, InsuranceClaimFiled
from events.catalog.scheduling import ServiceCancelled
from events.catalog.values import NeedCategory
from services.coordination.adapters import read_models as views
from services.coordination.app.follow_ups import FollowUps
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain.facts import ClosedPeriod, budget_stream, schedule_stream
from services.coordination.domain.scheduling import CLOSURE_REASON
from tests.unit.coordination.rpc import AN_HOUR, HOME_CARE_CO, refused, schedule_request, usd
from tests.unit.coordination.support import IntakeFeed, carried_by, command_context, timestamp

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

NOW = datetime.now(UTC).replace(microsecond=0)
OPENED, CLOSED, REOPENED = (NOW - timedelta(days=days) for days in (30, 20, 10))


def _now_context() -> Any:
    return command_context("case_manager", at=NOW)


def _booking(starts_at: datetime) -> pb.ScheduleServiceRequest:
    request = schedule_request("case-1", "home_care", starts_at, provider=HOME_CARE_CO)
    request.context.CopyFrom(_now_context())
    return request


def _moved(service_id: str, starts_at: datetime) -> pb.RescheduleServiceRequest:
    return pb.RescheduleServiceRequest(
        context=_now_context(),
        case_id="case-1",
        service_id=service_id,
        starts_at=timestamp(starts_at),
        ends_at=timestamp(starts_at + AN_HOUR),
        reason="the carer came another day",
    )


def _delivered(service_id: str, starts_at: datetime) -> pb.RecordServiceDeliveredRequest:
    return pb.RecordServiceDeliveredRequest(
        context=_now_context(),
        case_id="case-1",
        service_id=service_id,
        starts_at=timestamp(starts_at),
        ends_at=timestamp(starts_at + AN_HOUR),
    )


def _claim(service_id: str) -> pb.FileInsuranceClaimRequest:
    return pb.FileInsuranceClaimRequest(
        context=command_context("coordinator", at=NOW),
        case_id="case-1",
        insurer=pb.Provider(provider_id="medicare", name="Medicare"),
        amount_claimed=usd(10_000),
        service_ids=[service_id],
    )


async def test_no_service_starts_in_a_time_the_case_was_closed(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE], at=OPENED)
    await carried_by(store, "case-1")
    before = await stub.ScheduleService(_booking(CLOSED - 2 * AN_HOUR))
    await intake.close_case("case-1", at=CLOSED)
    await intake.deliver(
        CaseReopened(case_id="case-1", reason="fell again"), "case-case-1", occurred_at=REOPENED
    )

    while_closed = NOW - timedelta(days=15)
    refusals = [
        await refused(stub.ScheduleService(_booking(while_closed))),
        await refused(stub.ScheduleService(_booking(CLOSED))),
        await refused(stub.RescheduleService(_moved(before.service_id, while_closed))),
        await refused(stub.RecordServiceDelivered(_delivered(before.service_id, while_closed))),
    ]
    for refusal in refusals:
        assert (refusal.code, refusal.rule) == (grpc.StatusCode.FAILED_PRECONDITION, "CASE_CLOSED")
        assert refusal.metadata == {
            "subject": "case/case-1",
            "closed_at": CLOSED.isoformat(),
            "reopened_at": REOPENED.isoformat(),
        }

    # Before the closure and from the reopening on, care is booked and given as before.
    await stub.ScheduleService(_booking(REOPENED))
    await stub.RecordServiceDelivered(_delivered(before.service_id, CLOSED - AN_HOUR))


async def test_the_times_closed_are_the_same_whatever_order_closures_and_reopenings_arrive(
    intake: IntakeFeed, read_models: SqliteReadModelStore
) -> None:
    # Planning records closures and intake reopenings: on two topics, in either order.
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE], at=OPENED)
    moments = [NOW - timedelta(days=days) for days in (25, 20, 15, 10, 5)]
    closures = [
        intake.record(
            CaseClosed(case_id="case-1", reason=DischargeReason.GOALS_ACHIEVED),
            "case-case-1",
            source="casetrail/planning",
            occurred_at=at,
        )
        for at in moments[0::2]
    ]
    reopenings = [
        intake.record(
            CaseReopened(case_id="case-1", reason="fell again"), "case-case-1", occurred_at=at
        )
        for at in moments[1::2]
    ]
    for recorded in [*reopenings, *closures]:  # each reopening before its closure
        await intake.handler(recorded)
        await intake.handler(recorded)  # delivered again: counted once

    facts = await views.case_facts(read_models, "case-1")
    assert facts is not None
    assert facts.closed_periods == (
        ClosedPeriod(moments[0], moments[1]),
        ClosedPeriod(moments[2], moments[3]),
    )
    assert (facts.closed, facts.closed_at, facts.last_closed_at) == (True, moments[4], moments[4])


async def test_a_closure_reaching_coordination_after_its_reopening_calls_off_its_services(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, deps: Dependencies
) -> None:
    # Booked before the closure, for the time the case then stayed closed: it can never be
    # delivered (CASE_CLOSED), so the closure's follow-up calls it off and its money comes back
    # even when the reopening was in the case facts first.
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE], at=OPENED)
    await carried_by(store, "case-1")
    inside = await stub.ScheduleService(_booking(NOW - timedelta(days=15)))
    after = await stub.ScheduleService(_booking(NOW + timedelta(days=1)))
    await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            context=command_context("coordinator", at=NOW),
            case_id="case-1",
            budget_line="home-care-fy2026",
            amount=usd(40_000),
            service_id=inside.service_id,
        )
    )
    closure = await intake.close_case("case-1", at=CLOSED)
    await intake.deliver(
        CaseReopened(case_id="case-1", reason="fell again"), "case-case-1", occurred_at=REOPENED
    )

    follow_ups = FollowUps(deps)
    for _ in range(3):  # delivered again, and the follow-ups' own events have follow-ups
        await follow_ups(closure)
        for recorded in await store.read_all(0):
            if recorded.event_type in FollowUps.event_types:
                await follow_ups(recorded)

    schedule = await store.read_stream(schedule_stream("client-1"))
    assert [
        (r.event.service_id, r.event.reason, r.metadata.causation_id)
        for r in schedule
        if isinstance(r.event, ServiceCancelled)
    ] == [(inside.service_id, CLOSURE_REASON, closure.event_id)]
    released = [
        r.event
        for r in await store.read_stream(budget_stream("home-care-fy2026"))
        if isinstance(r.event, BudgetReleased)
    ]
    assert [(r.service_id, r.amount.amount_minor_units) for r in released] == [
        (inside.service_id, 40_000)
    ]
    # The reopened case's own service, after the reopening, stays.
    assert after.service_id not in {
        r.event.service_id for r in schedule if isinstance(r.event, ServiceCancelled)
    }


async def test_no_claim_covers_care_delivered_in_a_time_the_case_was_closed(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Recorded delivered before the (backdated) closure reached coordination.
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE], at=OPENED)
    await carried_by(store, "case-1")
    while_closed = NOW - timedelta(days=15)
    service = await stub.ScheduleService(_booking(while_closed))
    await stub.RecordServiceDelivered(_delivered(service.service_id, while_closed))
    await intake.close_case("case-1", at=CLOSED)
    await intake.deliver(
        CaseReopened(case_id="case-1", reason="fell again"), "case-case-1", occurred_at=REOPENED
    )

    refusal = await refused(stub.FileInsuranceClaim(_claim(service.service_id)))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.FAILED_PRECONDITION, "CASE_CLOSED")
    assert refusal.metadata == {
        "subject": "case/case-1",
        "closed_at": CLOSED.isoformat(),
        "reopened_at": REOPENED.isoformat(),
    }
    assert not [r for r in await store.read_all(0) if isinstance(r.event, InsuranceClaimFiled)]


async def test_no_claim_covers_care_delivered_after_the_closure_the_case_is_in(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Recorded delivered before the (backdated) closure reached coordination, and the case
    # still closed: as a delivery starting after the closure is refused, so is its claim.
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE], at=OPENED)
    await carried_by(store, "case-1")
    after_closure = CLOSED + timedelta(days=5)
    before_closure = CLOSED - 2 * AN_HOUR
    later = await stub.ScheduleService(_booking(after_closure))
    earlier = await stub.ScheduleService(_booking(before_closure))
    await stub.RecordServiceDelivered(_delivered(later.service_id, after_closure))
    await stub.RecordServiceDelivered(_delivered(earlier.service_id, before_closure))
    await intake.close_case("case-1", at=CLOSED)

    refusal = await refused(stub.FileInsuranceClaim(_claim(later.service_id)))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.FAILED_PRECONDITION, "CASE_CLOSED")
    assert refusal.metadata == {"subject": "case/case-1", "closed_at": CLOSED.isoformat()}
    assert not [r for r in await store.read_all(0) if isinstance(r.event, InsuranceClaimFiled)]
    # Care given before the closure is wrap-up: claimed as before.
    assert (await stub.FileInsuranceClaim(_claim(earlier.service_id))).claim_id
