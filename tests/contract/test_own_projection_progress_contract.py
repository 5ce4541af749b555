"""How far a projection fed from its service's own store has got, as metrics: the gauges move
as events are appended and as the projection catches up (or is reset by a rebuild), on both
backends, and their labels name the service and the projection, nothing of any event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from casetrail_platform.projections.port import DocumentTransaction, Projection, ReadModelStore
from casetrail_platform.projections.progress import (
    observe_own_projections,
    watch_own_projections,
)
from casetrail_platform.projections.runner import catch_up, follow
from casetrail_platform.store.port import ANY_VERSION, EventStore
from casetrail_platform.telemetry.metrics import Metrics, process_metrics
from events.envelope import RecordedEvent
from tests.support.backends import BACKENDS, store_and_read_models
from tests.support.sample_events import NoteWritten, note, sample_registry

CASE = "case-7c1f0e"
TEXT = "private words about the family"


class NoteCount(Projection):
    name = "note-count"
    collections = ("note-counts",)

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        if isinstance(recorded.event, NoteWritten):
            counted = await transaction.get("note-counts", recorded.event.case_id) or {"n": 0}
            await transaction.put("note-counts", recorded.event.case_id, {"n": counted["n"] + 1})


@pytest.fixture(params=BACKENDS)
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EventStore, ReadModelStore]]:
    """A service's own store and its read models, on one backend."""
    async with store_and_read_models(
        request.param, tmp_path, sample_registry(), "progress"
    ) as opened:
        yield opened


def _gauges(service: str) -> tuple[float | None, float | None]:
    """(events behind, position) of ``NoteCount`` as ``service``'s, from this process."""
    registry = process_metrics().registry
    labels = {"service": service, "projection": NoteCount.name}
    return (
        registry.get_sample_value("casetrail_projection_lag_events", labels),
        registry.get_sample_value("casetrail_projection_position", labels),
    )


async def _append(store: EventStore, count: int) -> None:
    await store.append(CASE, [note(CASE, TEXT) for _ in range(count)], ANY_VERSION)


async def test_the_gauges_move_with_appends_catch_up_and_a_reset(
    storage: tuple[EventStore, ReadModelStore],
) -> None:
    store, read_models = storage
    service = f"svc-{uuid.uuid4().hex[:8]}"  # one registry per process: a name of its own
    projection = NoteCount()

    async def observed() -> tuple[float | None, float | None]:
        await observe_own_projections(service, store, read_models, [projection.name])
        return _gauges(service)

    assert await observed() == (0, 0)
    await _append(store, 3)
    assert await observed() == (3, 0)
    reached = await catch_up(store, read_models, projection)
    assert await observed() == (0, reached)
    await _append(store, 2)
    assert await observed() == (2, reached)
    # `casetrail rebuild` resets the projection: everything in the store is behind again.
    await read_models.reset(projection.name, projection.collections)
    head = await store.last_position()
    assert await observed() == (head, 0)
    await catch_up(store, read_models, projection)
    assert await observed() == (0, head)


async def test_the_watch_follows_a_running_projection_to_the_head(
    storage: tuple[EventStore, ReadModelStore],
) -> None:
    store, read_models = storage
    service = f"svc-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    watching = asyncio.create_task(
        watch_own_projections(service, store, read_models, [NoteCount.name], stop, every=0.02)
    )

    async def until(wanted: tuple[float, float]) -> None:
        async with asyncio.timeout(10):
            while True:
                if _gauges(service) == wanted:
                    return
                await asyncio.sleep(0.01)

    following: asyncio.Task[None] | None = None
    try:
        await until((0, 0))
        await _append(store, 4)
        head = await store.last_position()
        await until((4, 0))  # nothing follows the store yet: the events wait
        following = asyncio.create_task(follow(store, read_models, NoteCount(), stop))
        await until((0, head))
        await _append(store, 1)
        await until((0, await store.last_position()))
    finally:
        stop.set()
        await watching
        if following is not None:
            await following
    text = generate_latest(process_metrics().registry).decode()
    assert CASE not in text
    assert TEXT not in text
    lines = [line for line in text.splitlines() if service in line]
    # Three gauges, each labelled by the service and the projection only.
    assert len(lines) == 3
    for line in lines:
        labels = line[line.index("{") : line.index("}") + 1]
        assert labels == f'{{projection="{NoteCount.name}",service="{service}"}}'


async def test_the_position_ages_only_while_events_wait() -> None:
    metrics = Metrics()

    def age() -> float | None:
        labels = {"service": "intake", "projection": "p"}
        return metrics.registry.get_sample_value(
            "casetrail_projection_position_age_seconds", labels
        )

    metrics.observe_own_projection("intake", "p", 5, 5)
    assert age() == 0
    metrics.observe_own_projection("intake", "p", 5, 9)
    await asyncio.sleep(0.05)
    metrics.observe_own_projection("intake", "p", 5, 9)  # stuck: still at 5, 4 behind
    assert (age() or 0) >= 0.05
    metrics.observe_own_projection("intake", "p", 7, 9)  # moved: not stuck
    assert age() == 0
    metrics.observe_own_projection("intake", "p", 9, 9)
    await asyncio.sleep(0.02)
    metrics.observe_own_projection("intake", "p", 9, 9)  # idle, nothing waits
    assert age() == 0
