"""A relay refilling the in-process bus at a start tells it first what its store holds of each
case, so that a barrier (``caught_up``) waits for the case it asks about, not for the whole
store: after an embedded start over 250,000 access records of other cases, a supervisor's
ReopenCase was answered FACTS_NOT_CAUGHT_UP for as long as the relays took to republish them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.bus.inprocess import InProcessBus, InProcessPublisher
from casetrail_platform.checkpoints import InMemoryCheckpointStore
from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.outbox import STORE_SCAN_BATCH, OutboxRelay
from casetrail_platform.store.sqlite import SqliteEventStore
from events.envelope import EventMetadata, NewEvent, RecordedEvent
from events.topics import DEFAULT_CASE_EVENTS_TOPIC
from tests.contract.bus_conftest import Recorder, running
from tests.support.sample_events import WORKER, CaseTouched, NoteWritten, note, sample_registry

GROUP = "planning"
NOTES = frozenset({NoteWritten.event_type})
TOUCHES = frozenset({CaseTouched.event_type})
PATIENCE = 5.0
"""A barrier's patience where it is to be answered (FACTS_WAIT_SECONDS)."""
BRIEF = 0.3
"""A barrier's patience where it is to wait still."""


class HeldPublisher(InProcessPublisher):
    """The in-process bus's publisher, holding every batch with a record of ``held`` until
    ``released``: a relay busy with the access records of every other case."""

    def __init__(self, bus: InProcessBus, held: str) -> None:
        super().__init__(bus, DEFAULT_CASE_EVENTS_TOPIC)
        self.held = held
        self.released = asyncio.Event()

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        if any(record.subject == self.held for record in records):
            await self.released.wait()
        await super().publish(records)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    yield opened
    await opened.close()


async def _recorded(store: SqliteEventStore, *events: NewEvent) -> None:
    for new in events:
        stream = f"case-{new.event.subject}"
        await store.append(stream, [new], await store.stream_version(stream))


def _touched(case_id: str) -> NewEvent:
    metadata = EventMetadata(
        source="casetrail/test", actor=WORKER, occurred_at=datetime.now(UTC), correlation_id=uuid4()
    )
    return NewEvent(CaseTouched(case_id=case_id), metadata, uuid4())


@asynccontextmanager
async def refilling(relay: OutboxRelay, bus: InProcessBus) -> AsyncIterator[InProcessBus]:
    """``relay`` running as its service runs it, a group applying what it publishes."""
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    try:
        async with running(bus.subscriber(sample_registry()), GROUP, Recorder()):
            yield bus
    finally:
        stop.set()
        await relaying


async def _caught_up(
    bus: InProcessBus, case_id: str, patience: float, types: frozenset[str] | None = None
) -> bool:
    subscriber = bus.subscriber(sample_registry())
    return await subscriber.caught_up(GROUP, case_id, patience=patience, types=types)


async def test_a_barrier_waits_for_the_case_it_asks_about_not_the_whole_refill(
    store: SqliteEventStore,
) -> None:
    await _recorded(store, note("c-1"), *(note("c-2") for _ in range(5)))
    bus = InProcessBus()
    publisher = HeldPublisher(bus, "c-2")
    relay = OutboxRelay(store, publisher, InMemoryCheckpointStore(), "planning", batch_size=1)
    async with refilling(relay, bus):
        assert await _caught_up(bus, "c-1", PATIENCE)
        assert not await _caught_up(bus, "c-2", BRIEF)
        publisher.released.set()
        assert await _caught_up(bus, "c-2", PATIENCE)


async def test_a_barrier_on_types_waits_for_the_cases_records_of_those_types_only(
    store: SqliteEventStore,
) -> None:
    await _recorded(store, note("c-1"), note("c-2"), _touched("c-1"))
    bus = InProcessBus()
    publisher = HeldPublisher(bus, "c-2")
    relay = OutboxRelay(store, publisher, InMemoryCheckpointStore(), "planning", batch_size=1)
    async with refilling(relay, bus):
        assert await _caught_up(bus, "c-1", PATIENCE, types=NOTES)
        # The case's later touch is not on the bus yet, behind the other case's note.
        assert not await _caught_up(bus, "c-1", BRIEF, types=TOUCHES)
        assert not await _caught_up(bus, "c-1", BRIEF)
        publisher.released.set()
        assert await _caught_up(bus, "c-1", PATIENCE, types=TOUCHES)


async def test_a_relay_that_could_not_read_its_store_through_is_waited_for_whole(
    store: SqliteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It tells nothing of what its store holds: the bus cannot know which cases are done."""
    await _recorded(store, note("c-1"), note("c-2"))
    read_all = store.read_all

    async def away_for_the_look(after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        if limit == STORE_SCAN_BATCH:
            raise StorageUnavailableError("the planning event store is unavailable")
        return await read_all(after_position, limit)

    monkeypatch.setattr(store, "read_all", away_for_the_look)
    bus = InProcessBus()
    publisher = HeldPublisher(bus, "c-2")
    relay = OutboxRelay(store, publisher, InMemoryCheckpointStore(), "planning", batch_size=1)
    async with refilling(relay, bus):
        assert not await _caught_up(bus, "c-1", BRIEF)
        publisher.released.set()
        assert await _caught_up(bus, "c-1", PATIENCE)
