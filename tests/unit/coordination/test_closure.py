"""A closed case: what stays refused, what wrap-up stays allowed, and what coordination
cancels and releases of itself when the closure reaches it."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import grpc
import pytest

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.errors import ConcurrencyError
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.funding import BudgetReleased
from events.catalog.referrals import ReferralWithdrawn
from events.catalog.scheduling import CancelledBy, ServiceCancelled
from events.catalog.values import NeedCategory
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from services.coordination.app import follow_ups
from services.coordination.app.follow_ups import FollowUps
from services.coordination.app.handlers import funding, running, scheduling
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain.case import CASE
from services.coordination.domain.facts import CaseFacts
from tests.unit.coordination.rpc import (
    COUNSELING_CENTRE,
    HOME_CARE_CO,
    NEXT_WEEK,
    refer,
    refused,
    schedule_request,
    usd,
)
from tests.unit.coordination.support import (
    IntakeFeed,
    carried_by,
    command_context,
    query_context,
    timestamp,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub


async def _settle(deps: Dependencies, follow_ups: FollowUps, after: int = 0) -> int:
    """Hand coordination's own events to the follow-ups, as the bus would; returns the
    position reached."""
    for recorded in await deps.store.read_all(after):
        if recorded.event_type in FollowUps.event_types:
            await follow_ups(recorded)
        after = recorded.position
    return after


async def _open_with_service(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> tuple[str, str]:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1")
    scheduled = await stub.ScheduleService(
        schedule_request("case-1", "home_care", NEXT_WEEK, provider=HOME_CARE_CO)
    )
    reserved = await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="home-care-fy2026",
            amount=usd(40_000),
            service_id=scheduled.service_id,
        )
    )
    return scheduled.service_id, reserved.reservation_id


async def test_a_service_booked_before_the_closure_was_known_is_cancelled_and_released(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    service_id, _ = await _open_with_service(stub, intake, store)
    closure = await intake.close_case("case-1")
    follow_ups = FollowUps(deps)
    await follow_ups(closure)
    await follow_ups(closure)  # delivered again: nothing more
    await _settle(deps, follow_ups)

    schedule = await store.read_stream("schedule-client-1")
    cancelled = [r for r in schedule if isinstance(r.event, ServiceCancelled)]
    assert len(cancelled) == 1
    event = cancelled[0].event
    assert isinstance(event, ServiceCancelled)
    assert (event.service_id, event.reason) == (service_id, "the case was closed")
    assert cancelled[0].metadata.causation_id == closure.event_id
    budget = await store.read_stream("budget-home-care-fy2026")
    released = [r.event for r in budget if isinstance(r.event, BudgetReleased)]
    assert [r.amount.amount_minor_units for r in released] == [40_000]
    line = await stub.GetBudgetLine(
        pb.GetBudgetLineRequest(context=query_context(), budget_line="home-care-fy2026")
    )
    assert line.available == usd(100_000)


async def test_after_the_closure_is_known_new_work_is_refused(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1")
    await intake.close_case("case-1")
    refusal = await refused(
        stub.ScheduleService(
            schedule_request("case-1", "home_care", NEXT_WEEK, provider=HOME_CARE_CO)
        )
    )
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.FAILED_PRECONDITION, "CASE_CLOSED")
    assert await store.read_stream("schedule-client-1") == []


async def test_a_referral_cannot_be_accepted_on_a_closed_case(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING])
    await intake.consent("case-1", "client-1")
    referral = await refer(stub, "case-1", "counseling")
    await intake.close_case("case-1")
    before = await store.read_stream("case-case-1")

    def answer(kind: type, **fields: str) -> object:
        return kind(
            context=command_context("partner_agency", agency="harbor-counseling"),
            case_id="case-1",
            referral_id=referral.referral_id,
            provider_id="harbor-counseling",
            **fields,
        )

    refusal = await refused(stub.AcceptReferral(answer(pb.AcceptReferralRequest)))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.FAILED_PRECONDITION, "CASE_CLOSED")
    assert await store.read_stream("case-case-1") == before
    # Declining takes nothing on: wrap-up stays allowed.
    await stub.DeclineReferral(answer(pb.DeclineReferralRequest, reason="case closed"))


async def test_a_delivery_cannot_be_recorded_before_it_takes_place(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    service_id, _ = await _open_with_service(stub, intake, store)
    written = await store.read_stream("schedule-client-1")
    now = datetime.now(UTC).replace(microsecond=0)
    # To come, or begun but still under way (ending in 20 hours): not yet care given.
    for starts_at, ends_at in (
        (NEXT_WEEK, NEXT_WEEK + timedelta(hours=1)),
        (now - timedelta(hours=1), now + timedelta(hours=20)),
    ):
        refusal = await refused(
            stub.RecordServiceDelivered(
                pb.RecordServiceDeliveredRequest(
                    context=command_context("partner_agency", agency=HOME_CARE_CO.provider_id),
                    case_id="case-1",
                    service_id=service_id,
                    starts_at=timestamp(starts_at),
                    ends_at=timestamp(ends_at),
                )
            )
        )
        assert (refusal.code, refusal.rule) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "SERVICE_NOT_YET_DELIVERABLE",
        )
        assert refusal.metadata["ends_at"] == ends_at.isoformat()
    assert await store.read_stream("schedule-client-1") == written


async def test_cancelling_a_service_releases_its_reservation(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    service_id, reservation_id = await _open_with_service(stub, intake, store)
    await stub.CancelService(
        pb.CancelServiceRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            service_id=service_id,
            cancelled_by="client",
            reason="moved to her daughter's",
        )
    )
    follow_ups = FollowUps(deps)
    await _settle(deps, follow_ups)
    await _settle(deps, follow_ups)  # the bus handing everything over again changes nothing
    budget = await store.read_stream("budget-home-care-fy2026")
    released = [r.event for r in budget if isinstance(r.event, BudgetReleased)]
    assert [(r.reservation_id, r.amount.amount_minor_units) for r in released] == [
        (reservation_id, 40_000)
    ]


async def test_a_reservation_racing_the_cancellation_of_its_service_is_refused_or_released(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    # A reservation reads the schedule on one stream and records on the budget line's: a
    # cancellation in between would leave money reserved for a service no longer there.
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(deps.store, "case-1")
    for day in range(6):
        scheduled = await stub.ScheduleService(
            schedule_request(
                "case-1", "home_care", NEXT_WEEK + timedelta(days=day), provider=HOME_CARE_CO
            )
        )
        cancel = stub.CancelService(
            pb.CancelServiceRequest(
                context=command_context("coordinator"),
                case_id="case-1",
                service_id=scheduled.service_id,
                cancelled_by="client",
                reason="unwell",
            )
        )
        reserve = stub.ReserveBudget(
            pb.ReserveBudgetRequest(
                context=command_context("coordinator"),
                case_id="case-1",
                budget_line="home-care-fy2026",
                amount=usd(1_000),
                service_id=scheduled.service_id,
            )
        )
        outcomes: list[object] = await asyncio.gather(cancel, reserve, return_exceptions=True)
        reserved = outcomes[1]
        if isinstance(reserved, grpc.aio.AioRpcError):
            assert reserved.code() is grpc.StatusCode.FAILED_PRECONDITION
    await _settle(deps, FollowUps(deps))

    line = await stub.GetBudgetLine(
        pb.GetBudgetLineRequest(context=query_context(), budget_line="home-care-fy2026")
    )
    assert line.available == usd(100_000)


async def test_a_service_moved_as_the_case_closes_does_not_outlive_it(
    stub: Stub,
    intake: IntakeFeed,
    deps: Dependencies,
    store: SqliteEventStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A service from before the closure is left alone by its follow-up; moved past the closure
    # by a reschedule that read the case still open, it must be cancelled all the same.
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1")
    earlier = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    scheduled = await stub.ScheduleService(
        schedule_request("case-1", "home_care", earlier, provider=HOME_CARE_CO)
    )
    read_facts = running.command_facts
    closing: list[asyncio.Task[None]] = []

    async def facts_then_closure(*args: Any) -> CaseFacts:
        facts = await read_facts(*args)
        closure = await intake.close_case("case-1", at=datetime.now(UTC))
        closing.append(asyncio.create_task(FollowUps(deps)(closure)))
        await asyncio.sleep(0.2)  # the closure's follow-up runs now, unless the case is locked
        return facts

    monkeypatch.setattr(scheduling, "command_facts", facts_then_closure)
    await stub.RescheduleService(
        pb.RescheduleServiceRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            service_id=scheduled.service_id,
            starts_at=timestamp(NEXT_WEEK),
            ends_at=timestamp(NEXT_WEEK + timedelta(hours=1)),
            reason="the carer is away",
        )
    )
    await asyncio.gather(*closing)
    last = (await store.read_stream("schedule-client-1"))[-1].event
    assert isinstance(last, ServiceCancelled)
    assert (last.service_id, last.reason) == (scheduled.service_id, "the case was closed")


def _reserve(case_id: str, cents: int, line: str = "flex", service_id: str = "") -> object:
    return pb.ReserveBudgetRequest(
        context=command_context("coordinator"),
        case_id=case_id,
        budget_line=line,
        amount=usd(cents),
        service_id=service_id,
    )


async def _available(stub: Stub, line: str) -> pb.Money:
    answer = await stub.GetBudgetLine(
        pb.GetBudgetLineRequest(context=query_context(), budget_line=line)
    )
    available: pb.Money = answer.available
    return available


async def test_a_closure_releases_what_is_reserved_for_the_case_naming_no_service_once(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await intake.open_case("case-2", "client-2", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1")
    # A service that took place before the closure: its reservation was spent, and stays.
    earlier = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    took_place = await stub.ScheduleService(
        schedule_request("case-1", "home_care", earlier, provider=HOME_CARE_CO)
    )
    await stub.ReserveBudget(_reserve("case-1", 30_000, "home-care-fy2026", took_place.service_id))
    whole = await stub.ReserveBudget(_reserve("case-1", 10_000))
    part = await stub.ReserveBudget(_reserve("case-1", 5_000))
    await stub.ReleaseBudget(
        pb.ReleaseBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="flex",
            reservation_id=part.reservation_id,
            amount=usd(2_000),
            reason="the rent deposit was smaller",
        )
    )
    await stub.ReserveBudget(_reserve("case-2", 7_000))  # another case's: untouched

    closure = await intake.close_case("case-1", at=datetime.now(UTC))
    follow_ups = FollowUps(deps)
    await follow_ups(closure)
    await follow_ups(closure)  # delivered again: nothing more
    await _settle(deps, follow_ups)

    released = [
        r for r in await store.read_stream("budget-flex") if isinstance(r.event, BudgetReleased)
    ]
    by_closure = [r for r in released if r.metadata.causation_id == closure.event_id]
    assert [
        (r.event.reservation_id, r.event.amount.amount_minor_units, r.event.service_id)
        for r in by_closure
        if isinstance(r.event, BudgetReleased)
    ] == [(whole.reservation_id, 10_000, None), (part.reservation_id, 3_000, None)]
    for recorded in by_closure:
        assert recorded.metadata.actor == Actor("coordination", Role.SYSTEM)
        assert isinstance(recorded.event, BudgetReleased)
        assert recorded.event.reason == "the case was closed"
    assert len(released) == 3  # the caller's partial release and the closure's two
    assert await _available(stub, "flex") == usd(43_000)  # case-2's 7,000 still reserved
    assert await _available(stub, "home-care-fy2026") == usd(70_000)


async def test_a_closure_of_a_case_reopened_since_releases_nothing(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await stub.ReserveBudget(_reserve("case-1", 10_000))
    closure = await intake.close_case("case-1")
    await intake.reopen_case("case-1")
    await FollowUps(deps)(closure)
    budget = await store.read_stream("budget-flex")
    assert not [r for r in budget if isinstance(r.event, BudgetReleased)]
    assert await _available(stub, "flex") == usd(40_000)


async def test_a_reservation_racing_the_closures_follow_up_is_released_by_it(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ReserveBudget read the case open; the closure arrives before it records. The follow-up
    # waits for the case's lock, then finds the reservation and releases it.
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    read_facts = running.command_facts
    closing: list[asyncio.Task[None]] = []

    async def facts_then_closure(*args: Any) -> CaseFacts:
        facts = await read_facts(*args)
        if not closing:
            closure = await intake.close_case("case-1", at=datetime.now(UTC))
            closing.append(asyncio.create_task(FollowUps(deps)(closure)))
            await asyncio.sleep(0.2)  # the follow-up runs now, unless the case is locked
        return facts

    monkeypatch.setattr(funding, "command_facts", facts_then_closure)
    await stub.ReserveBudget(_reserve("case-1", 10_000))
    await asyncio.gather(*closing)
    assert await _available(stub, "flex") == usd(50_000)


def _cancellation(case_id: str) -> ServiceCancelled:
    return ServiceCancelled(
        case_id=case_id, service_id="svc-1", cancelled_by=CancelledBy.CLIENT, reason="moved"
    )


async def test_a_follow_up_that_loses_a_race_pauses_before_deciding_again(
    deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Replicas given the same event, or commands on the stream, win the append twice: the
    # follow-up waits the commands' growing pause before each new attempt, not none at all.
    pauses: list[int] = []

    def pause(attempt: int) -> float:
        pauses.append(attempt)
        return 0.05

    monkeypatch.setattr(follow_ups, "pause_before", pause, raising=False)
    metadata = EventMetadata(
        source="casetrail/coordination",
        actor=follow_ups.FOLLOW_UP,
        occurred_at=datetime.now(UTC),
        correlation_id=uuid4(),
    )
    [cause] = await deps.store.append("case-other", [NewEvent(_cancellation("x"), metadata)], 0)
    append = deps.store.append
    attempts: list[float] = []

    async def losing_twice(*args: Any, **kwargs: Any) -> list[RecordedEvent]:
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise ConcurrencyError("case-case-1", 0, 1)
        return await append(*args, **kwargs)

    monkeypatch.setattr(deps.store, "append", losing_twice)
    recorded = await follow_ups.record_follow_up(
        deps, cause, "case-case-1", CASE, lambda state: [_cancellation("case-1")]
    )
    assert [event.metadata.causation_id for event in recorded] == [cause.event_id]
    assert len(attempts) == 3
    assert all(later - earlier >= 0.04 for earlier, later in itertools.pairwise(attempts))
    assert pauses == [1, 2]


async def test_a_closure_reads_only_what_each_budget_line_gained_since_it_was_last_read(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    """A budget line funds the whole agency for a year: the closure of one case must not read
    every reservation ever made on every line (it did, line by line, per closure)."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    for number in range(40):
        await intake.open_case(f"case-x{number}", f"client-x{number}", [NeedCategory.HOME_CARE])
        await stub.ReserveBudget(_reserve(f"case-x{number}", 100))
    mine = await stub.ReserveBudget(_reserve("case-1", 1_000))
    read: list[int] = []
    read_stream = store.read_stream

    async def counted(stream: str, **bounds: Any) -> list[Any]:
        found = await read_stream(stream, **bounds)
        read.append(len(found))
        return found

    store.read_stream = counted  # type: ignore[method-assign]
    closure = await intake.close_case("case-1", at=datetime.now(UTC))
    await FollowUps(deps)(closure)

    assert max(read) <= 2  # case and schedule of case-1; nothing new on the lines since
    store.read_stream = read_stream  # type: ignore[method-assign]
    [released] = [
        r.event
        for r in await store.read_stream("budget-flex")
        if r.metadata.causation_id == closure.event_id
    ]
    assert isinstance(released, BudgetReleased)
    assert released.reservation_id == mine.reservation_id


async def test_a_cancellation_is_not_dated_before_the_closure_that_caused_it(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    await _open_with_service(stub, intake, store)
    # Stated a little ahead of this clock, as the skew allowed for commands permits.
    ahead = datetime.now(UTC) + timedelta(minutes=4)
    closure = await intake.close_case("case-1", at=ahead)
    follow_ups = FollowUps(deps)
    await follow_ups(closure)
    await _settle(deps, follow_ups)

    schedule = await store.read_stream("schedule-client-1")
    cancelled = [r for r in schedule if isinstance(r.event, ServiceCancelled)]
    assert [r.metadata.occurred_at for r in cancelled] == [ahead]
    budget = await store.read_stream("budget-home-care-fy2026")
    released = [r for r in budget if isinstance(r.event, BudgetReleased)]
    assert [r.metadata.occurred_at for r in released] == [ahead]


async def test_the_closures_cancellations_and_withdrawals_are_not_dated_before_what_they_end(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    """The service and the referral, stated a little ahead of this clock (the skew allowed for
    commands), are called off by a closure stating none: each is dated when the latest service
    or referral it ends was booked or made, never before, as CancelService and
    WithdrawReferral refuse a command dated before it (audit, folding by the moments stated,
    would otherwise show the service scheduled and the referral made for good)."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await intake.consent("case-1", "client-1")
    await carried_by(store, "case-1")
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=4)
    booking = schedule_request("case-1", "home_care", NEXT_WEEK, provider=HOME_CARE_CO)
    booking.context.occurred_at.CopyFrom(timestamp(ahead))
    booked = await stub.ScheduleService(booking)
    made = await stub.MakeReferral(
        pb.MakeReferralRequest(
            context=command_context("coordinator", at=ahead),
            case_id="case-1",
            provider=COUNSELING_CENTRE,
            need_category="home_care",
            service="home care visits",
            urgency="soon",
            reason="adjusting to reduced mobility after hip surgery",
        )
    )
    follow_ups = FollowUps(deps)
    await follow_ups(await intake.close_case("case-1", at=datetime.now(UTC)))
    await _settle(deps, follow_ups)

    schedule = await store.read_stream("schedule-client-1")
    assert [
        (r.event.service_id, r.metadata.occurred_at)
        for r in schedule
        if isinstance(r.event, ServiceCancelled)
    ] == [(booked.service_id, ahead)]
    case = await store.read_stream("case-case-1")
    assert [
        (r.event.referral_id, r.metadata.occurred_at)
        for r in case
        if isinstance(r.event, ReferralWithdrawn)
    ] == [(made.referral_id, ahead)]


async def test_a_release_is_not_dated_before_the_reservation_it_releases(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    """The reservations, stated a little ahead of this clock (the skew allowed for commands),
    are released by a cancellation stating none, and by the closure of the case (the one
    naming no service): each release is dated when the latest reservation it gives back was
    made, never before it, as ReleaseBudget refuses a command dated before it."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1")
    scheduled = await stub.ScheduleService(
        schedule_request("case-1", "home_care", NEXT_WEEK, provider=HOME_CARE_CO)
    )
    soon, later = (datetime.now(UTC) + timedelta(minutes=m) for m in (3, 4))
    reserved = ((later, "home-care-fy2026", scheduled.service_id), (later, "flex", ""))
    for at, line, service_id in (*reserved, (soon, "flex", "")):
        await stub.ReserveBudget(
            pb.ReserveBudgetRequest(
                context=command_context("coordinator", at=at),
                case_id="case-1",
                budget_line=line,
                amount=usd(4_000),
                service_id=service_id,
            )
        )
    await stub.CancelService(
        pb.CancelServiceRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            service_id=scheduled.service_id,
            cancelled_by="client",
            reason="moved to her daughter's",
        )
    )
    follow_ups = FollowUps(deps)
    await _settle(deps, follow_ups)
    await follow_ups(await intake.close_case("case-1", at=datetime.now(UTC)))

    released = [
        (r.event.service_id, r.metadata.occurred_at)
        for line in ("home-care-fy2026", "flex")
        for r in await store.read_stream(f"budget-{line}")
        if isinstance(r.event, BudgetReleased)
    ]
    # The closure's two releases of the case's reservations are one append, one moment.
    assert released == [(scheduled.service_id, later), (None, later), (None, later)]
