"""A referral that ends, declined, completed or withdrawn, calls off the services booked from it
still to come, and each cancellation releases the service's reservations, once however often
the events are delivered. A completion did not: next week's service stayed scheduled with its
money held, could not be moved (REFERRAL_NOT_USABLE), and kept planning from closing the case
(SERVICES_STILL_SCHEDULED) until someone cancelled it by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.bus.errors import RetriableHandlerError
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import CaseEvent
from events.catalog.funding import BudgetReleased
from events.catalog.referrals import ReferralCompleted, ReferralDeclined, ReferralWithdrawn
from events.catalog.scheduling import ServiceCancelled
from events.catalog.values import NeedCategory
from services.coordination.adapters.projections import CaseFactsProjection
from services.coordination.app.follow_ups import FollowUps
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain.facts import budget_stream, schedule_stream
from services.coordination.domain.scheduling import REFERRAL_ENDED_REASON
from tests.unit.coordination.rpc import (
    AN_HOUR,
    COUNSELING_CENTRE,
    NEXT_WEEK,
    accept,
    refer,
    schedule_request,
    usd,
)
from tests.unit.coordination.support import (
    OPENED,
    IntakeFeed,
    carried_by,
    command_context,
    query_context,
    timestamp,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

PARTNER = COUNSELING_CENTRE.provider_id
ENDED_BY: dict[str, type[CaseEvent]] = {
    "decline": ReferralDeclined,
    "complete": ReferralCompleted,
    "withdraw": ReferralWithdrawn,
}


def _ending(how: str, case_id: str, referral_id: str) -> Any:
    partner = command_context("partner_agency", agency=PARTNER)
    if how == "decline":
        return pb.DeclineReferralRequest(
            context=partner,
            case_id=case_id,
            referral_id=referral_id,
            provider_id=PARTNER,
            reason="no places left",
        )
    if how == "complete":
        return pb.CompleteReferralRequest(
            context=partner,
            case_id=case_id,
            referral_id=referral_id,
            provider_id=PARTNER,
            outcome="sessions finished early; client doing well",
        )
    return pb.WithdrawReferralRequest(
        context=command_context("coordinator"),
        case_id=case_id,
        referral_id=referral_id,
        reason="no longer wanted",
    )


@pytest.mark.parametrize("how", list(ENDED_BY))
async def test_a_referral_that_ends_calls_off_its_services_still_to_come_once(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, deps: Dependencies, how: str
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await intake.consent("case-1", "client-1")
    await carried_by(store, "case-1")
    referral_id = (await refer(stub, "case-1", "home_care")).referral_id
    if how != "decline":
        await accept(stub, "case-1", referral_id)
    started, coming = [
        await stub.ScheduleService(
            schedule_request(
                "case-1",
                "home_care",
                at,
                provider=COUNSELING_CENTRE,
                referral_id=referral_id,
            )
        )
        for at in (OPENED + 2 * AN_HOUR, NEXT_WEEK)
    ]
    await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="flex",
            amount=usd(20_000),
            service_id=coming.service_id,
        )
    )
    ending = _ending(how, "case-1", referral_id)
    if how == "decline":
        await stub.DeclineReferral(ending)
    elif how == "complete":
        await stub.CompleteReferral(ending)
    else:
        await stub.WithdrawReferral(ending)

    follow_ups = FollowUps(deps)
    for _ in range(3):  # delivered again, and the follow-ups' own events have follow-ups
        for recorded in await store.read_all(0):
            if recorded.event_type in FollowUps.event_types:
                await follow_ups(recorded)

    [ended] = [r for r in await store.read_all(0) if isinstance(r.event, ENDED_BY[how])]
    schedule = await store.read_stream(schedule_stream("client-1"))
    assert [
        (r.event.service_id, r.event.reason, r.metadata.causation_id)
        for r in schedule
        if isinstance(r.event, ServiceCancelled)
    ] == [(coming.service_id, REFERRAL_ENDED_REASON, ended.event_id)]
    released = [
        r.event
        for r in await store.read_stream(budget_stream("flex"))
        if isinstance(r.event, BudgetReleased)
    ]
    assert [(r.service_id, r.amount.amount_minor_units) for r in released] == [
        (coming.service_id, 20_000)
    ]
    line = await stub.GetBudgetLine(
        pb.GetBudgetLineRequest(context=query_context(), budget_line="flex")
    )
    assert line.available.amount_minor_units == 50_000
    # The service that started before the end stays, to be recorded as delivered.
    assert started.service_id not in {
        r.event.service_id for r in schedule if isinstance(r.event, ServiceCancelled)
    }


async def test_a_referrals_end_does_not_date_a_cancellation_before_the_service_was_booked(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, deps: Dependencies
) -> None:
    """A service booked from the referral stating a moment a little ahead of this clock (the
    skew allowed for commands), the referral declined stating none: the cancellation its end
    calls for is dated when the service was booked, never before, as CancelService refuses a
    command dated before it."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await intake.consent("case-1", "client-1")
    await carried_by(store, "case-1")
    referral_id = (await refer(stub, "case-1", "home_care")).referral_id
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=4)
    booking = schedule_request(
        "case-1", "home_care", NEXT_WEEK, provider=COUNSELING_CENTRE, referral_id=referral_id
    )
    booking.context.occurred_at.CopyFrom(timestamp(ahead))
    booked = await stub.ScheduleService(booking)
    declined = _ending("decline", "case-1", referral_id)
    declined.context.ClearField("occurred_at")
    await stub.DeclineReferral(declined)

    follow_ups = FollowUps(deps)
    for recorded in await store.read_all(0):
        if recorded.event_type in FollowUps.event_types:
            await follow_ups(recorded)

    schedule = await store.read_stream(schedule_stream("client-1"))
    assert [
        (r.event.service_id, r.metadata.occurred_at)
        for r in schedule
        if isinstance(r.event, ServiceCancelled)
    ] == [(booked.service_id, ahead)]


async def test_a_referrals_end_waits_for_case_facts_that_miss_the_case(
    stub: Stub,
    intake: IntakeFeed,
    store: SqliteEventStore,
    deps: Dependencies,
    read_models: SqliteReadModelStore,
) -> None:
    # As while the case facts are built again from the bus (an upgrade's new layout): the
    # completion's follow-up was acknowledged with nothing done, next week's service left
    # scheduled and its money held for good.
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await intake.consent("case-1", "client-1")
    await carried_by(store, "case-1")
    referral_id = (await refer(stub, "case-1", "home_care")).referral_id
    await accept(stub, "case-1", referral_id)
    coming = await stub.ScheduleService(
        schedule_request(
            "case-1", "home_care", NEXT_WEEK, provider=COUNSELING_CENTRE, referral_id=referral_id
        )
    )
    await stub.CompleteReferral(_ending("complete", "case-1", referral_id))
    [completed] = [r for r in await store.read_all(0) if isinstance(r.event, ReferralCompleted)]
    projection = CaseFactsProjection()
    await read_models.reset(projection.name, projection.collections)

    asked: list[str] = []

    async def behind(case_id: str) -> bool:
        asked.append(case_id)
        return False

    with pytest.raises(RetriableHandlerError, match="case case-1"):
        await FollowUps(replace(deps, case_facts_caught_up=behind))(completed)
    assert asked == ["case-1"]
    assert not [
        r
        for r in await store.read_stream(schedule_stream("client-1"))
        if isinstance(r.event, ServiceCancelled)
    ]

    # Facts that hold all the bus has of the case and still miss it: nothing to call off, and
    # the bus is not asked to hand it over again for ever.
    async def caught_up(case_id: str) -> bool:
        return True

    await FollowUps(replace(deps, case_facts_caught_up=caught_up))(completed)

    # Once the facts hold the case again, the end calls its service off.
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await FollowUps(replace(deps, case_facts_caught_up=behind))(completed)
    assert [
        r.event.service_id
        for r in await store.read_stream(schedule_stream("client-1"))
        if isinstance(r.event, ServiceCancelled)
    ] == [coming.service_id]
