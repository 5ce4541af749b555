"""A closure's follow-up is decided once, on the case facts as the bus has them. Decided on the
facts as they stood whenever it was delivered, the same closure called a reopened case's live
work off or not depending on the backend: the embedded bus hands every closure over again at
each start (Kafka keeps the group's progress), beside case facts built again from the bus that
may hold the closure and not yet the reopening after it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.bus.errors import RetriableHandlerError
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import CaseEvent
from events.catalog.cases import (
    CaseOpened,
    CaseReopened,
    PresentingNeed,
    ReferralSource,
    ReferralSourceKind,
)
from events.catalog.funding import BudgetReleased
from events.catalog.referrals import ReferralWithdrawn
from events.catalog.scheduling import ServiceCancelled
from events.catalog.values import NeedCategory
from events.envelope import RecordedEvent
from services.coordination.adapters.projections import CaseFactsProjection
from services.coordination.app.follow_ups import FollowUps
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain.facts import budget_stream, case_stream, schedule_stream
from tests.unit.coordination.rpc import (
    COUNSELING_CENTRE,
    NEXT_WEEK,
    accept,
    refer,
    schedule_request,
    usd,
)
from tests.unit.coordination.support import OPENED, IntakeFeed, carried_by, command_context

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

CLOSED, REOPENED = OPENED + timedelta(hours=2), OPENED + timedelta(hours=4)

CALLED_OFF = (ServiceCancelled, ReferralWithdrawn, BudgetReleased)


async def _called_off(store: SqliteEventStore) -> list[CaseEvent]:
    """What the follow-ups cancelled, withdrew or released of the case."""
    streams = (schedule_stream("client-1"), case_stream("case-1"), budget_stream("flex"))
    return [
        recorded.event
        for stream in streams
        for recorded in await store.read_stream(stream)
        if isinstance(recorded.event, CALLED_OFF)
    ]


async def _reopened_with_live_work(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, follow_ups: FollowUps | None
) -> tuple[RecordedEvent, RecordedEvent]:
    """Case 1 closed (its closure handed to ``follow_ups``, if any, before the reopening),
    reopened, then given a referral taken on, next week's session from it and money held;
    the closure and the reopening."""
    opened = await intake.deliver(_opening(), "case-case-1", occurred_at=OPENED)
    await intake.consent("case-1", "client-1")
    await carried_by(deps.store, "case-1")
    closure = await intake.close_case("case-1", at=CLOSED)
    if follow_ups is not None:
        await follow_ups(closure)  # nothing running: nothing to record
    reopening = await intake.deliver(
        CaseReopened(case_id="case-1", reason="fell again"), "case-case-1", occurred_at=REOPENED
    )
    referral_id = (await refer(stub, "case-1", "home_care")).referral_id
    await accept(stub, "case-1", referral_id)
    await stub.ScheduleService(
        schedule_request(
            "case-1", "home_care", NEXT_WEEK, provider=COUNSELING_CENTRE, referral_id=referral_id
        )
    )
    await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="flex",
            amount=usd(30_000),
        )
    )
    # The case facts built again from the bus (an upgrade's new layout): so far they hold the
    # opening and the closure, not yet the reopening.
    projection = CaseFactsProjection()
    await deps.read_models.reset(projection.name, projection.collections)
    await intake.handler(opened)
    await intake.handler(closure)
    return closure, reopening


def _opening() -> CaseOpened:
    return CaseOpened(
        case_id="case-1",
        client_id="client-1",
        referral_source=ReferralSource(kind=ReferralSourceKind.HOSPITAL),
        presenting_needs=(PresentingNeed(category=NeedCategory.HOME_CARE),),
    )


async def test_a_closure_delivered_again_does_nothing_whatever_the_facts_hold_by_then(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, deps: Dependencies
) -> None:
    follow_ups = FollowUps(deps)
    closure, reopening = await _reopened_with_live_work(stub, intake, deps, follow_ups)

    await follow_ups(closure)  # as the embedded bus hands it over at the next start
    await intake.handler(reopening)

    assert await _called_off(store) == []


async def test_a_closures_follow_up_counts_a_reopening_already_on_the_bus(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, deps: Dependencies
) -> None:
    # First handed to the follow-ups now: the reopening is on the bus, the facts' group behind.
    closure, reopening = await _reopened_with_live_work(stub, intake, deps, None)
    asked: list[str] = []

    async def behind(case_id: str) -> bool:
        asked.append(case_id)
        return False

    with pytest.raises(RetriableHandlerError, match="case case-1"):
        await FollowUps(replace(deps, case_facts_caught_up=behind))(closure)
    assert await _called_off(store) == []

    async def catching_up(case_id: str) -> bool:
        asked.append(case_id)
        await intake.handler(reopening)
        return True

    await FollowUps(replace(deps, case_facts_caught_up=catching_up))(closure)
    assert asked == ["case-1", "case-1"]
    assert await _called_off(store) == []
