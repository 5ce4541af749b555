"""The case view under out-of-order delivery: an event set aside (dead-lettered, parked) and
delivered after later events of its case, as ``casetrail dlq replay`` does, leaves the view as
an in-order delivery (a rebuild) builds it."""

from __future__ import annotations

from casetrail_platform.projections.port import ReadModelStore
from events.catalog.cases import DischargeReason
from events.envelope import RecordedEvent
from services.planning.adapters.case_views import CaseViewProjection, CaseViews
from services.planning.app.handlers import Dependencies
from services.planning.domain import commands as c
from tests.unit.planning.support import (
    COORDINATION,
    INTAKE,
    OTHER_WORKER,
    WORKER,
    Bus,
    assigned,
    dump,
    reassigned,
    reopened,
)
from tests.unit.planning.test_case_view import Planner, build_realistic_history

PROJECTION = CaseViewProjection()


async def _every_event(bus: Bus) -> list[RecordedEvent]:
    events: list[RecordedEvent] = []
    for store in [bus.planning_store, *bus.stores.values()]:
        events.extend(await store.read_all(0))
    return events


async def test_each_event_delivered_after_the_later_ones_of_its_case_changes_nothing(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore
) -> None:
    await build_realistic_history(deps, bus)
    in_order = await dump(read_models, PROJECTION.collections)
    events = await _every_event(bus)

    wrong = []
    for late in events:
        await read_models.reset(PROJECTION.name, PROJECTION.collections)
        handler = bus.handler()
        for recorded in events:
            if recorded is not late:
                await handler(recorded)
        await handler(late)
        if await dump(read_models, PROJECTION.collections) != in_order:
            wrong.append(f"{late.event_type}#{late.sequence} of {late.stream}")

    assert wrong == []


async def test_every_stream_delivered_backwards_builds_the_view_a_rebuild_builds(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore
) -> None:
    await build_realistic_history(deps, bus)
    in_order = await dump(read_models, PROJECTION.collections)

    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    handler = bus.handler()
    for recorded in reversed(await _every_event(bus)):
        await handler(recorded)

    assert await dump(read_models, PROJECTION.collections) == in_order


async def test_a_replayed_assignment_does_not_bring_back_the_worker_the_case_was_taken_from(
    bus: Bus, read_models: ReadModelStore
) -> None:
    await bus.open_case("case-r", assess=False)
    first, later = await bus.record(
        COORDINATION,
        "case-r",
        assigned("case-r", OTHER_WORKER),
        reassigned("case-r", OTHER_WORKER, WORKER),
    )
    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    handler = bus.handler()
    for recorded in await _every_event(bus):
        if recorded not in (first, later):
            await handler(recorded)
    await handler(later)
    await handler(first)  # dead-lettered, replayed after the reassignment

    facts = await CaseViews(read_models).facts("case-r")
    assert facts.worker_id == WORKER.user_id


async def test_a_replayed_closure_does_not_close_the_reopened_case_again(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore
) -> None:
    await bus.open_case("case-o", assess=False)
    await Planner(deps, bus)(c.CloseCase("case-o", DischargeReason.CLIENT_MOVED, None))
    await bus.record(INTAKE, "case-o", reopened("case-o"))
    events = await _every_event(bus)
    closure = next(r for r in events if r.event_type == "casetrail.case.closed")

    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    handler = bus.handler()
    for recorded in events:
        if recorded is not closure:
            await handler(recorded)
    await handler(closure)

    view = await CaseViews(read_models).get("case-o")
    assert view is not None
    assert (view["status"], view["closure_reason"], view["reopens"]) == ("open", None, 1)
