"""Planning's, audit's and coordination's start (and the policy facts' at every service's)
retires the read models' old layout (``retire_old_layout``) without waiting for older
snapshots (review of platform, h-platform): it asked every start to forget what the reset
overwrote, deleted or not, waited ``FORGET_PATIENCE_SECONDS`` for every snapshot older than
that (a backup's pg_dump, an operator's reader of the SQLite file) and raised, so neither
service started while one stayed open. Now only a reset that deleted something forgets, and
once: the mark stays for ``forget_if_pending`` while it cannot.

In a rolling upgrade the old replica goes on writing its layout after the new one's start
retired it (review of platform, f-platform): what it wrote stayed until the next start, and an
erasure handled by the new projection left the erased client's values in it. The new
projection retires its old layouts again with every erasure and every
``RETIRE_AGAIN_SECONDS``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from casetrail_platform.policy import projection as policy_facts
from casetrail_platform.projections import port
from casetrail_platform.projections.port import Projection, ReadModelStore
from casetrail_platform.projections.runner import BusProjectionHandler
from events.catalog.erasure import ClientErased
from events.catalog.examples import CASE, example_events
from services.audit.adapters import timeline
from services.coordination.adapters import projections as coordination_facts
from services.planning.adapters import case_views
from tests.support.backends import BACKENDS, older_snapshot, read_models_on
from tests.unit.audit.support import T0, Producer

Retire = Callable[[ReadModelStore], Awaitable[None]]

LAYOUTS = [
    pytest.param(
        case_views.retire_old_layout,
        case_views.RETIRED,
        case_views.RETIRED_COLLECTIONS,
        id="planning",
    ),
    pytest.param(
        timeline.retire_old_layout, timeline.RETIRED, timeline.RETIRED_COLLECTIONS, id="audit"
    ),
    pytest.param(
        coordination_facts.retire_old_layout,
        coordination_facts.RETIRED,
        coordination_facts.RETIRED_COLLECTIONS,
        id="coordination",
    ),
    pytest.param(
        policy_facts.retire_old_facts_layout,
        policy_facts.RETIRED,
        policy_facts.RETIRED_COLLECTIONS,
        id="policy-facts",
    ),
]

PROMPTLY_SECONDS = 5.0
"""Far below the 10 s the old code waited for the older snapshot before failing the start."""


async def _old_layout(
    read_models: ReadModelStore, projection: str, collections: tuple[str, ...]
) -> None:
    async with read_models.transaction() as transaction:
        for collection in collections:
            await transaction.put(collection, "case-o", {"statement": "CANARY in the clear"})
        await transaction.set_position(projection, 1)


async def _forgotten(read_models: ReadModelStore) -> bool:
    """``forget_if_pending`` as the store's later tries run it, until the mark goes: one try
    fails while any transaction of the database is older (another test's, a moment)."""
    deadline = time.monotonic() + 30
    while await read_models.forgetting_pending():
        if time.monotonic() > deadline:
            return False
        read_models._forget_retry_at = 0.0  # PENDING_FORGET_RETRY_SECONDS later
        await read_models.forget_if_pending()
        await asyncio.sleep(0.1)
    return True


async def _timed(retire: Retire, read_models: ReadModelStore) -> float:
    began = time.monotonic()
    await retire(read_models)
    return time.monotonic() - began


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("retire", "projection", "collections"), LAYOUTS)
async def test_an_already_retired_layout_starts_promptly_beside_anolder_snapshot(
    backend: str,
    retire: Retire,
    projection: str,
    collections: tuple[str, ...],
    tmp_path: Path,
) -> None:
    async with read_models_on(backend, tmp_path, "retired_done") as read_models:
        await _old_layout(read_models, projection, collections)
        await retire(read_models)  # the first start after the upgrade
        assert await _forgotten(read_models)
        async with older_snapshot(backend, tmp_path):
            async with read_models.transaction() as transaction:  # the database goes on
                await transaction.put("anything", "k", {"v": 1})
            assert await _timed(retire, read_models) < PROMPTLY_SECONDS
        assert not await read_models.forgetting_pending()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("retire", "projection", "collections"), LAYOUTS)
async def test_a_retirement_beside_an_older_snapshot_leaves_its_forgetting_pending(
    backend: str,
    retire: Retire,
    projection: str,
    collections: tuple[str, ...],
    tmp_path: Path,
) -> None:
    async with read_models_on(backend, tmp_path, "retired_pending") as read_models:
        await _old_layout(read_models, projection, collections)
        async with older_snapshot(backend, tmp_path):
            assert await _timed(retire, read_models) < PROMPTLY_SECONDS
            assert await read_models.forgetting_pending()
        for collection in collections:
            assert [item async for item in read_models.scan(collection)] == [], collection
        assert await read_models.applied_position(projection) == 0
        assert await _forgotten(read_models)  # the next catch-up's, or the next opening's


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_retirement_left_pending_is_forgotten_by_the_next_bus_batch(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning's projections are all fed from the bus, whose handler forgot only after an
    erasure: on PostgreSQL a retirement that failed beside a backup's snapshot stayed pending,
    the retired goals, tasks and needs in the table's files, until planning started again."""
    monkeypatch.setattr(port, "PENDING_FORGET_RETRY_SECONDS", 0.0)
    opened = next(event for event in example_events() if event.subject == CASE)
    async with read_models_on(backend, tmp_path, "retired_bus") as read_models:
        await _old_layout(read_models, case_views.RETIRED, case_views.RETIRED_COLLECTIONS)
        async with older_snapshot(backend, tmp_path):
            await case_views.retire_old_layout(read_models)
            assert await read_models.forgetting_pending()
        handler = BusProjectionHandler(
            read_models, case_views.CaseViewProjection(), service="planning"
        )
        producer = Producer("casetrail/intake", f"case-{CASE}")
        deadline = time.monotonic() + 30
        while await read_models.forgetting_pending():  # one try fails while any older is open
            assert time.monotonic() < deadline
            await handler(producer.record(opened, occurred_at=T0))
            await asyncio.sleep(0.1)


PROJECTIONS = [
    pytest.param(case_views.CaseViewProjection, id="planning"),
    pytest.param(timeline.TimelineProjection, id="audit"),
    pytest.param(coordination_facts.CaseFactsProjection, id="coordination"),
    pytest.param(policy_facts.CaseFactsProjection, id="policy-facts"),
]
"""Each projection that replaced a layout, whose start retires it (``LAYOUTS``)."""


async def _written_by_the_old_replica(read_models: ReadModelStore, projection: Projection) -> None:
    """A rolling upgrade (the chart's maxSurge 1, maxUnavailable 0): the new replica's start
    has retired the old layouts, and the old replica, serving until the new one is ready,
    writes its next events to them."""
    assert projection.retired
    await read_models.retire(projection.retired)
    for layout in projection.retired:
        await _old_layout(read_models, layout.projection, layout.collections)


async def _left_in(read_models: ReadModelStore, projection: Projection) -> list[str]:
    """The collections of ``projection``'s retired layouts that still hold documents."""
    return [
        collection
        for layout in projection.retired
        for collection in layout.collections
        if [item async for item in read_models.scan(collection)]
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", PROJECTIONS)
async def test_an_erasure_deletes_what_the_old_replica_wrote_to_a_retired_layout(
    backend: str, kind: type[Projection], tmp_path: Path
) -> None:
    """What the old replica wrote after the start's retirement (a client's need and consent
    categories) stayed until the next start, and the erasure, handled by the new projection,
    scrubbed only its own layout: the erased client's values stayed in the clear."""
    projection = kind()
    erasure = next(event for event in example_events() if isinstance(event, ClientErased))
    async with read_models_on(backend, tmp_path, "retired_erasure") as read_models:
        handler = BusProjectionHandler(read_models, projection, service="test")
        await _written_by_the_old_replica(read_models, projection)
        producer = Producer("casetrail/intake", f"client-{erasure.client_id}")
        await handler(producer.record(erasure, occurred_at=T0))
        assert await _left_in(read_models, projection) == []
        for layout in projection.retired:
            assert await read_models.applied_position(layout.projection) == 0
        assert await _forgotten(read_models)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", PROJECTIONS)
async def test_what_the_old_replica_wrote_after_the_start_is_deleted_minutes_later(
    backend: str, kind: type[Projection], tmp_path: Path
) -> None:
    """Without an erasure it stayed until the next start, weeks on: a bus-fed projection
    retires its old layouts again every ``RETIRE_AGAIN_SECONDS``, not with every batch."""
    projection = kind()
    opened = next(event for event in example_events() if event.subject == CASE)
    producer = Producer("casetrail/intake", f"case-{CASE}")
    async with read_models_on(backend, tmp_path, "retired_again") as read_models:
        handler = BusProjectionHandler(read_models, projection, service="test")
        await _written_by_the_old_replica(read_models, projection)
        await handler(producer.record(opened, occurred_at=T0))
        assert await _left_in(read_models, projection) != []  # the start has just retired
        handler._retire_again_at = 0.0  # RETIRE_AGAIN_SECONDS later
        await handler(producer.record(opened, occurred_at=T0))
        assert await _left_in(read_models, projection) == []
        assert await _forgotten(read_models)
