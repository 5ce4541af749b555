"""A closure's follow-up is decided once, on the case facts as the bus has them. Decided on the
facts as they stood whenever it was delivered, the same closure called a reopened case's live
work off or not depending on the backend: the embedded bus hands every closure over again at
each start (Kafka keeps the group's progress), beside case facts built again from the bus that
may hold the closure and not yet the reopening after it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.bus.errors import RetriableHandlerError
from casetrail_platform.bus.inprocess import InProcessBus, InProcessPublisher
from casetrail_platform.bus.retry import Backoff, RetryPolicy
from casetrail_platform.checkpoints import InMemoryCheckpointStore
from casetrail_platform.hosting import FACTS_WAIT_SECONDS
from casetrail_platform.outbox import OutboxRelay
from casetrail_platform.projections.runner import BusProjectionHandler
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
from events.catalog_registry import default_registry
from events.envelope import NewEvent, RecordedEvent
from events.topics import DEFAULT_CASE_EVENTS_TOPIC
from services.coordination.adapters.projections import CaseFactsProjection
from services.coordination.app.follow_ups import FOLLOWED, FollowUps
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain.facts import budget_stream, case_stream, schedule_stream
from tests.contract.bus_conftest import eventually
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
) -> tuple[RecordedEvent, RecordedEvent, RecordedEvent]:
    """Case 1 closed (its closure handed to ``follow_ups``, if any, before the reopening),
    reopened, then given a referral taken on, next week's session from it and money held;
    the opening, the closure and the reopening."""
    opened = await intake.deliver(_opening(), "case-case-1", occurred_at=OPENED)
    await intake.consent("case-1", "client-1")
    await carried_by(deps.store, "case-1")
    closure = await intake.close_case("case-1", at=CLOSED)
    if follow_ups is not None:
        await follow_ups(closure)  # nothing running: nothing to record
    reopening = await intake.deliver(
        CaseReopened(case_id="case-1", reason="fell again"), "case-case-1", occurred_at=REOPENED
    )
    await _live_work(stub)
    # The case facts built again from the bus (an upgrade's new layout): so far they hold the
    # opening and the closure, not yet the reopening.
    projection = CaseFactsProjection()
    await deps.read_models.reset(projection.name, projection.collections)
    await intake.handler(opened)
    await intake.handler(closure)
    return opened, closure, reopening


async def _live_work(stub: Stub) -> None:
    """Case 1 given a referral taken on, next week's session from it and money held."""
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
    _, closure, reopening = await _reopened_with_live_work(stub, intake, deps, follow_ups)

    await follow_ups(closure)  # as the embedded bus hands it over at the next start
    await intake.handler(reopening)

    assert await _called_off(store) == []


async def test_a_closures_follow_up_counts_a_reopening_already_on_the_bus(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, deps: Dependencies
) -> None:
    # First handed to the follow-ups now: the reopening is on the bus, the facts' group behind.
    _, closure, reopening = await _reopened_with_live_work(stub, intake, deps, None)
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


async def _stored(path: Path, records: list[RecordedEvent]) -> SqliteEventStore:
    """A service's store holding ``records`` (one stream), as its relay finds it at a start."""
    store = await SqliteEventStore.open(path, default_registry())
    events = [NewEvent(r.event, r.metadata, r.event_id) for r in records]
    await store.append(records[0].stream, events, 0)
    return store


async def test_an_old_closure_first_followed_at_an_embedded_start_counts_every_relays_store(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, deps: Dependencies, tmp_path: Path
) -> None:
    """The embedded bus is rebuilt at each start by every service's relay republishing its
    store from position 0, each at its own pace. A closure no follow-up had marked (the first
    start after the upgrade, or a process stopped while it was pending), republished by
    planning's relay while intake's, busy with a larger store, had not reached the reopening
    after it, found the case facts caught up with the bus and called off the reopened case's
    work; on Kafka the follow-ups' group is past that closure, nothing is called off."""
    opened, closure, reopening = await _reopened_with_live_work(stub, intake, deps, None)
    intake_store = await _stored(tmp_path / "intake.db", [opened, reopening])
    planning_store = await _stored(tmp_path / "planning.db", [closure])
    bus, checkpoints = InProcessBus(), InMemoryCheckpointStore()
    # The start: each service's relay, made as its service starts, refills the bus.
    intake_relay = OutboxRelay(intake_store, bus.publisher(), checkpoints, "intake")
    planning_relay = OutboxRelay(planning_store, bus.publisher(), checkpoints, "planning")
    subscriber = bus.subscriber(default_registry())
    projection = CaseFactsProjection()
    group = "casetrail.coordination.case-facts-v3"
    stop = asyncio.Event()
    facts = asyncio.create_task(
        subscriber.run(
            group,
            BusProjectionHandler(deps.read_models, projection, service="coordination"),
            stop,
            event_types=projection.wanted_types,
        )
    )

    async def caught_up(case_id: str) -> bool:  # as ServiceHost.caught_up asks
        return await subscriber.caught_up(
            group, case_id, patience=FACTS_WAIT_SECONDS, types=frozenset(projection.event_types)
        )

    try:
        await planning_relay.publish_pending()
        following = asyncio.create_task(
            FollowUps(replace(deps, case_facts_caught_up=caught_up))(closure)
        )
        await asyncio.sleep(0.2)  # the facts' group applies the closure meanwhile
        await intake_relay.publish_pending()
        await following
    finally:
        stop.set()
        await facts
        await intake_store.close()
        await planning_store.close()
    assert await _called_off(store) == []


class HeldPublisher(InProcessPublisher):
    """The in-process bus's publisher, holding every batch with a record of ``held`` until
    ``released``: a relay busy with a large store before it reaches them."""

    def __init__(self, bus: InProcessBus, held: RecordedEvent) -> None:
        super().__init__(bus, DEFAULT_CASE_EVENTS_TOPIC)
        self.held = held.event_id
        self.released = asyncio.Event()

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        if any(record.event_id == self.held for record in records):
            await self.released.wait()
        await super().publish(records)


async def test_an_old_closure_waits_for_the_reopening_a_running_relay_told_its_store_holds(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, deps: Dependencies, tmp_path: Path
) -> None:
    """As above, the relays running as a service runs them: each first tells the bus what its
    store holds of each case, and a barrier then waits for the case it asks about only, not
    for the whole refill. The reopening intake's store holds is of the case facts' types:
    the closure's follow-up waits for it all the same."""
    opened, closure, reopening = await _reopened_with_live_work(stub, intake, deps, None)
    intake_store = await _stored(tmp_path / "intake.db", [opened, reopening])
    planning_store = await _stored(tmp_path / "planning.db", [closure])
    bus, checkpoints = InProcessBus(), InMemoryCheckpointStore()
    intake_publisher = HeldPublisher(bus, reopening)
    relays = [
        OutboxRelay(intake_store, intake_publisher, checkpoints, "intake"),
        OutboxRelay(planning_store, bus.publisher(), checkpoints, "planning"),
    ]
    subscriber = bus.subscriber(default_registry())
    projection = CaseFactsProjection()
    group = "casetrail.coordination.case-facts-v3"
    stop = asyncio.Event()
    running = [
        asyncio.create_task(
            subscriber.run(
                group,
                BusProjectionHandler(deps.read_models, projection, service="coordination"),
                stop,
                event_types=projection.wanted_types,
            )
        ),
        *(asyncio.create_task(relay.run(stop)) for relay in relays),
    ]

    async def caught_up(case_id: str) -> bool:  # as ServiceHost.caught_up asks
        return await subscriber.caught_up(
            group, case_id, patience=FACTS_WAIT_SECONDS, types=frozenset(projection.event_types)
        )

    try:
        following = asyncio.create_task(
            FollowUps(replace(deps, case_facts_caught_up=caught_up))(closure)
        )
        await asyncio.sleep(0.3)  # the facts' group applies the closure meanwhile
        assert not following.done()
        intake_publisher.released.set()
        await following
    finally:
        intake_publisher.released.set()
        stop.set()
        await asyncio.gather(*running)
        await intake_store.close()
        await planning_store.close()
    assert await _called_off(store) == []


async def _follow_up_done(deps: Dependencies, closure: RecordedEvent) -> bool:
    async with deps.read_models.transaction() as transaction:
        return bool(await transaction.already_applied(FOLLOWED, [closure.event_id]))


async def test_a_closures_follow_up_waits_for_the_case_facts_as_long_as_it_takes(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, deps: Dependencies
) -> None:
    """After an embedded start the case facts' group reaches the case only once the relays
    have refilled the bus with it (minutes for a large store). Each attempt of the follow-up
    counted against the retry policy, it was dead-lettered meanwhile, and the in-process bus
    keeps dead letters in memory only: the closed case kept its referral, its session and the
    money held for it. Kafka's group, past the closure, had followed it up at once."""
    await intake.deliver(_opening(), "case-case-1", occurred_at=OPENED)
    await intake.consent("case-1", "client-1")
    await carried_by(deps.store, "case-1")
    await _live_work(stub)
    closure = await intake.close_case("case-1", at=CLOSED)
    asked = 0

    async def catching_up(case_id: str) -> bool:
        nonlocal asked
        asked += 1
        return asked > 6

    bus = InProcessBus()
    await bus.publisher().publish([closure])
    retry = RetryPolicy(Backoff(initial=0.01, maximum=0.02), max_attempts=3)
    follow_ups = FollowUps(replace(deps, case_facts_caught_up=catching_up))
    followed = asyncio.Event()

    async def follow_up(recorded: RecordedEvent) -> None:
        await follow_ups(recorded)
        followed.set()

    stop = asyncio.Event()
    following = asyncio.create_task(
        bus.subscriber(default_registry(), retry=retry).run(
            FOLLOWED, follow_up, stop, event_types=FollowUps.event_types
        )
    )
    try:
        await eventually(
            lambda: followed.is_set() or bool(bus.dead_letters(FOLLOWED)), "the follow-up"
        )
    finally:
        stop.set()
        await following
    assert bus.dead_letters(FOLLOWED) == []
    assert asked == 7
    assert await _follow_up_done(deps, closure)
    assert {type(event) for event in await _called_off(store)} == set(CALLED_OFF)
