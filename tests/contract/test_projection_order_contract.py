"""Bus-fed projections under out-of-order delivery, on both read-model backends: every stream
delivered backwards builds the documents an in-order delivery (a rebuild) builds, and audit's
timeline stores the same documents whatever the order. The unit
tests (tests/unit/planning/test_case_view_order.py and others) cover each late event; this
checks that the documents that makes, sequences and waiting changes included, are kept alike
by PostgreSQL."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from casetrail_platform.policy.projection import CaseFactsProjection
from casetrail_platform.projections.port import Projection, ReadModelStore
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import dump_document
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry
from services.audit.adapters.timeline import FACTS, TimelineProjection
from services.planning.adapters.case_views import CaseViewProjection, CaseViews
from services.planning.app.handlers import Dependencies
from tests.unit.planning.support import Bus, build_realistic_history, dump


@pytest.fixture
async def bus(tmp_path: Path, read_models: ReadModelStore) -> AsyncIterator[Bus]:
    planning = await SqliteEventStore.open(tmp_path / "planning.db", default_registry())
    feed = Bus(tmp_path, read_models, planning)
    yield feed
    await feed.close()
    await planning.close()


@pytest.mark.parametrize(
    "projection", [CaseViewProjection(), CaseFactsProjection()], ids=lambda p: p.name
)
async def test_every_stream_delivered_backwards_builds_the_in_order_documents(
    bus: Bus, read_models: ReadModelStore, projection: Projection
) -> None:
    await build_realistic_history(Dependencies(bus.planning_store, CaseViews(read_models)), bus)
    in_order = await dump(read_models, projection.collections)
    assert in_order, "the history built something"
    events = [
        recorded
        for store in [bus.planning_store, *bus.stores.values()]
        for recorded in await store.read_all(0)
    ]

    await read_models.reset(projection.name, projection.collections)
    handler = BusProjectionHandler(read_models, projection, service="planning")
    for recorded in reversed(events):
        await handler(recorded)

    assert await dump(read_models, projection.collections) == in_order


async def test_audit_timeline_stores_the_same_documents_whatever_the_delivery_order(
    bus: Bus, read_models: ReadModelStore
) -> None:
    # The timeline's facts document was kept in arrival order: its answers sorted, but a
    # rebuild (another order across partitions and services) stored other bytes.
    await build_realistic_history(Dependencies(bus.planning_store, CaseViews(read_models)), bus)
    events = [
        recorded
        for store in [bus.planning_store, *bus.stores.values()]
        for recorded in await store.read_all(0)
    ]
    shuffled = list(events)
    random.Random(7).shuffle(shuffled)
    projection = TimelineProjection()
    stored = []
    for delivery in (events, events[::-1], shuffled):
        await read_models.reset(projection.name, projection.collections)
        handler = BusProjectionHandler(read_models, projection, service="audit")
        for recorded in delivery:
            await handler(recorded)
        documents = await dump(read_models, projection.collections)
        stored.append({key: dump_document(document) for key, document in documents.items()})

    facts = [key for key in stored[0] if key.startswith(f"{FACTS}/")]
    assert facts, "the history has facts"
    assert any(len(json.loads(stored[0][key])["entries"]) > 1 for key in facts)
    assert stored[1] == stored[0]
    assert stored[2] == stored[0]
