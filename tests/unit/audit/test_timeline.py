"""The timeline read model on a real SQLite read-model store."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from events.catalog.access import AccessPurpose, RecordAccessed, RecordSection
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import PresentingNeed
from events.catalog.clients import ClientRegistered, PersonName
from events.catalog.erasure import ClientErased
from events.catalog.values import NeedCategory
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from services.audit.adapters.timeline import (
    CASES,
    EVENTS,
    FACTS,
    INDEX,
    RETIRED,
    RETIRED_COLLECTIONS,
    SEEN,
    ReadModelTimelines,
    TimelineProjection,
    retire_old_layout,
    sort_suffix,
)
from services.audit.domain import history
from services.audit.domain.history import TimeBasis
from tests.support.stored import as_stored
from tests.unit.audit.support import CASE, T0, Producer, late_recorded_case, opened


async def snapshot(read_models: SqliteReadModelStore) -> dict[str, list[object]]:
    return {
        collection: [item async for item in read_models.scan(collection)]
        for collection in (CASES, INDEX, EVENTS, SEEN, FACTS)
    }


def in_order(events: list[RecordedEvent]) -> list[RecordedEvent]:
    return history.view(events, TimeBasis.OCCURRED)


async def deliver(read_models: SqliteReadModelStore, events: list[RecordedEvent]) -> None:
    handler = BusProjectionHandler(read_models, TimelineProjection())
    for recorded in events:
        await handler(recorded)


async def test_received_events_read_back_exactly(
    read_models: SqliteReadModelStore, registry: EventRegistry
) -> None:
    events = late_recorded_case()
    await deliver(read_models, events)

    assert await ReadModelTimelines(read_models, registry).events_of(CASE) == in_order(events)


async def test_redelivery_changes_nothing(
    read_models: SqliteReadModelStore, registry: EventRegistry
) -> None:
    events = late_recorded_case()
    await deliver(read_models, events)
    before = await snapshot(read_models)

    await deliver(read_models, events)  # the bus delivers again
    projection = TimelineProjection()
    async with read_models.transaction() as transaction:  # another feed carries the same event
        await projection.apply(transaction, events[2])

    assert await snapshot(read_models) == before
    assert len(await ReadModelTimelines(read_models, registry).events_of(CASE)) == len(events)
    # The seen-markers are the only tracking: no row per event beside them.
    async with read_models.transaction() as transaction:
        ids = [e.event_id for e in events]
        assert await transaction.already_applied(projection.name, ids) == set()


async def test_each_event_is_indexed_once_per_clock_in_that_clocks_order(
    read_models: SqliteReadModelStore, registry: EventRegistry
) -> None:
    producer = Producer("casetrail/intake", f"case-{CASE}")
    events = [
        producer.record(opened(), occurred_at=T0 - index * timedelta(hours=1)) for index in range(5)
    ]
    await deliver(read_models, events)

    keys = [key async for key, _ in read_models.scan(INDEX)]
    assert len(keys) == 10  # once per event and clock
    timelines = ReadModelTimelines(read_models, registry)
    assert await timelines.events_of(CASE) == list(reversed(events))
    assert (await timelines.facts_of(CASE) or [])[0]["type"] == "casetrail.case.opened"
    assert await timelines.event(events[3].event_id) == events[3]


async def test_an_access_record_is_copied_without_decoding_it(
    read_models: SqliteReadModelStore, registry: EventRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every answered read appends one: audit copies it as stored, its type tells the rest."""
    accessed = RecordAccessed(
        case_id=CASE,
        accessor_id="coord-carla",
        accessor_role=Role.COORDINATOR,
        purpose=AccessPurpose.COORDINATION,
        sections=(RecordSection.ASSESSMENT,),
        rule="agency-coordinator",
        policy_version="2026.12-4",
    )
    recorded = Producer("casetrail/planning", f"access-{CASE}").record(accessed, occurred_at=T0)
    stored = as_stored(recorded, registry)

    def refuse(*args: object) -> CaseEvent:
        raise AssertionError("the access record was decoded")

    monkeypatch.setattr(registry, "decode", refuse)
    await deliver(read_models, [stored])
    monkeypatch.undo()

    timelines = ReadModelTimelines(read_models, registry)
    assert await timelines.events_of(CASE) == [recorded]
    assert await timelines.history_of(CASE) == []
    assert await timelines.facts_of(CASE) == []


async def test_client_events_belong_to_no_case_timeline(
    read_models: SqliteReadModelStore, registry: EventRegistry
) -> None:
    producer = Producer("casetrail/intake", "client-c1")
    registered = ClientRegistered(
        client_id="c1", name=PersonName(given_names="Marco"), date_of_birth=date(1941, 6, 2)
    )
    await deliver(read_models, [producer.record(registered, occurred_at=T0)])

    timelines = ReadModelTimelines(read_models, registry)
    assert await timelines.events_of("c1") == []
    assert [key async for key, _ in read_models.scan(CASES)] == []


async def test_an_unknown_case_has_no_events(
    read_models: SqliteReadModelStore, registry: EventRegistry
) -> None:
    assert await ReadModelTimelines(read_models, registry).events_of("nobody") == []


def test_index_keys_sort_as_the_clocks_do() -> None:
    events = late_recorded_case()
    for basis in TimeBasis:
        suffixes = [sort_suffix(e, basis) for e in history.view(events, basis)]
        assert suffixes == sorted(suffixes, key=str.encode)


async def test_an_erased_clients_categories_of_need_leave_the_facts(
    read_models: SqliteReadModelStore, registry: EventRegistry
) -> None:
    needs = (PresentingNeed(category=NeedCategory.MENTAL_HEALTH, description="Low mood"),)
    first = opened().model_copy(update={"presenting_needs": needs})
    events = [Producer("casetrail/intake", f"case-{CASE}").record(first, occurred_at=T0)]
    await deliver(read_models, events)
    timelines = ReadModelTimelines(read_models, registry)
    before = await timelines.facts_of(CASE) or []
    assert any(entry.get("categories") for entry in before)

    erased = ClientErased(client_id="client-7f3a", case_ids=(CASE,), request_reference="dms://r/1")
    await deliver(
        read_models,
        [Producer("casetrail/intake", "client-client-7f3a").record(erased, occurred_at=T0)],
    )

    after = await timelines.facts_of(CASE) or []
    assert len(after) == len(before)
    assert not any(entry.get("categories") for entry in after)
    assert await timelines.events_of(CASE) == in_order(events)  # the sealed events stay


async def test_a_timeline_left_by_the_old_layout_is_built_again_and_its_copy_deleted(
    read_models: SqliteReadModelStore, registry: EventRegistry
) -> None:
    """What ``timeline-index`` wrote before its layout changed (seen-markers, index entries
    holding whole events, facts entries with categories in the clear) neither stops the
    current projection from applying the events again nor stays behind (audit's start)."""
    needs = (PresentingNeed(category=NeedCategory.MENTAL_HEALTH, description="Low mood"),)
    first = opened().model_copy(update={"presenting_needs": needs})
    events = [Producer("casetrail/intake", f"case-{CASE}").record(first, occurred_at=T0)]
    event_id = str(events[0].event_id)
    async with read_models.transaction() as transaction:
        await transaction.put("audit_timeline_seen", event_id, {"case_id": CASE, "key": "k"})
        await transaction.put("audit_case_timelines", CASE, {"case_id": CASE, "events": 1})
        await transaction.put(
            "audit_timeline_index",
            f"{CASE}|f|{sort_suffix(events[0], TimeBasis.RECORDED)}",
            {"categories": ["mental_health"], "event_id": event_id, "type": first.event_type},
        )
        await transaction.set_position(RETIRED, 1)

    await retire_old_layout(read_models)
    await deliver(read_models, events)  # the new consumer group reads the topic from its start

    facts = await ReadModelTimelines(read_models, registry).facts_of(CASE) or []
    assert [entry["categories"] for entry in facts] == [["mental_health"]]
    assert await ReadModelTimelines(read_models, registry).events_of(CASE) == events
    for collection in RETIRED_COLLECTIONS:
        assert [item async for item in read_models.scan(collection)] == [], collection
    assert await read_models.applied_position(RETIRED) == 0
