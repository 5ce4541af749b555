"""Snapshots of folded states (``casetrail_platform.folded.Snapshots``), on both stores: the
store keeps the newest of each fold and stream; a process that keeps no state starts from the
snapshot and reads only the events after it; a snapshot that does not fit (another schema
version, another history, unreadable) is not used, and none is ever needed."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from casetrail_platform import decide, folded
from casetrail_platform.commands import CommandContext
from casetrail_platform.decide import execute_folded, snapshots_written
from casetrail_platform.folded import Fold, Snapshots
from casetrail_platform.store.port import EventStore, Snapshot
from events.catalog.base import CaseEvent
from events.catalog.funding import BudgetReleased, BudgetReserved
from events.catalog.values import Money
from events.catalog_registry import default_registry
from events.envelope import EventMetadata, NewEvent, RecordedEvent
from services.coordination.domain.budget import BUDGET_LINE, budget_state
from services.coordination.domain.facts import budget_stream
from tests.contract.conftest import StoreOpener
from tests.contract.folded_notes import Notes, evolve_notes, folded_events
from tests.support.sample_events import WORKER, NoteWritten

STREAM = "case-1"


def _encode(state: Notes) -> bytes:
    return json.dumps([state.version, state.texts]).encode()


def _decode(data: bytes) -> Notes:
    version, texts = json.loads(data)
    return Notes(version, texts)


NOTES = Fold("test.snapshotted-notes", Notes, evolve_notes, Snapshots(1, _encode, _decode))


@pytest.fixture(autouse=True)
def _every_five(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folded, "SNAPSHOT_EVERY", 5)
    folded_events.clear()


async def _command(store: EventStore, key: str, seen: list[Notes] | None = None) -> None:
    def decide_on(state: Notes) -> list[CaseEvent]:
        if seen is not None:
            seen.append(Notes(state.version, list(state.texts)))
        return [NoteWritten(case_id="1", text=key, words=1)]

    await execute_folded(store, "svc", CommandContext(WORKER, key), STREAM, NOTES, decide_on)


async def _commands(store: EventStore, count: int) -> None:
    for number in range(1, count + 1):
        await _command(store, f"n{number}")
    await snapshots_written(store)


def _notes(count: int) -> Notes:
    return Notes(count, [f"n{number}" for number in range(1, count + 1)])


async def test_a_snapshot_is_kept_until_a_newer_one_or_another_schema_version(
    event_store: EventStore,
) -> None:
    event = uuid.uuid4()
    assert await event_store.load_snapshot("f", STREAM) is None

    ten = Snapshot("f", STREAM, 1, 10, event, b"\x00ten")
    await event_store.save_snapshot(ten)
    await event_store.save_snapshot(Snapshot("f", STREAM, 1, 9, uuid.uuid4(), b"nine"))
    await event_store.save_snapshot(Snapshot("g", STREAM, 1, 3, uuid.uuid4(), b"other fold"))
    assert await event_store.load_snapshot("f", STREAM) == ten

    eleven = Snapshot("f", STREAM, 1, 11, uuid.uuid4(), b"eleven")
    await event_store.save_snapshot(eleven)
    assert await event_store.load_snapshot("f", STREAM) == eleven
    # Another schema version replaces it whatever its version (new code rewrites it).
    layout = Snapshot("f", STREAM, 2, 4, uuid.uuid4(), b"new layout")
    await event_store.save_snapshot(layout)
    assert await event_store.load_snapshot("f", STREAM) == layout
    assert (await event_store.load_snapshot("g", STREAM) or layout).data == b"other fold"


async def test_the_first_command_after_a_restart_reads_only_the_events_after_the_snapshot(
    open_store: StoreOpener,
) -> None:
    before = await open_store()
    await _commands(before, 12)
    snapshot = await before.load_snapshot(NOTES.name, STREAM)
    assert snapshot is not None
    assert snapshot.version == 10

    restarted = await open_store()  # another store object: nothing kept in memory
    read: list[int] = []
    reading = restarted.read_for_command

    async def counted(
        causation_id: uuid.UUID, stream: str, from_version: int = 1
    ) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
        earlier, new = await reading(causation_id, stream, from_version)
        read.extend(recorded.sequence for recorded in new)
        return earlier, new

    restarted.read_for_command = counted  # type: ignore[method-assign]
    folded_events.clear()
    seen: list[Notes] = []
    await _command(restarted, "n13", seen)

    assert seen == [_notes(12)]
    assert read == [10, 11, 12]  # the snapshot's own event, to check it, then the rest
    assert folded_events == [11, 12]
    # Five more events folded since the snapshot read (by the next command): one is written.
    for number in range(14, 17):
        await _command(restarted, f"n{number}")
    await snapshots_written(restarted)
    assert (await restarted.load_snapshot(NOTES.name, STREAM) or snapshot).version == 15


async def test_a_retry_after_a_restart_answers_what_it_recorded(
    open_store: StoreOpener, caplog: pytest.LogCaptureFixture
) -> None:
    before = await open_store()
    await _commands(before, 7)

    restarted = await open_store()
    context = CommandContext(WORKER, "n3")
    [again] = await execute_folded(
        restarted, "svc", context, STREAM, NOTES, lambda _: pytest.fail("decided again")
    )
    seen: list[Notes] = []
    await _command(restarted, "n8", seen)

    assert again.sequence == 3
    assert seen == [_notes(7)]
    assert not [r for r in caplog.records if "snapshot" in r.getMessage()]


@pytest.mark.parametrize("spoilt", ["schema version", "history", "version", "data"])
async def test_a_snapshot_that_does_not_fit_is_not_used(
    open_store: StoreOpener, spoilt: str
) -> None:
    """Another schema version (new code), another event at its version (a store restored from
    a backup, a snapshot copied from elsewhere), a version past the stream's end, unreadable
    data: the stream is folded from its start and decides as without snapshots."""
    before = await open_store()
    await _commands(before, 7)
    good = await before.load_snapshot(NOTES.name, STREAM)
    assert good is not None
    assert good.version == 5
    spoilers: dict[str, dict[str, Any]] = {
        "schema version": {"schema_version": 2},
        "history": {"last_event_id": uuid.uuid4()},
        "version": {"version": 30, "data": _encode(Notes(30, ["n1"] * 30))},
        "data": {"data": b"{not json"},
    }
    wrong = replace(good, **spoilers[spoilt])
    if spoilt == "schema version":
        await before.save_snapshot(wrong)
    else:
        await _replace(before, wrong)

    restarted = await open_store()
    folded_events.clear()
    seen: list[Notes] = []
    await _command(restarted, "n8", seen)

    assert seen == [_notes(7)]
    assert folded_events == list(range(1, 8))


async def _replace(store: EventStore, snapshot: Snapshot) -> None:
    """Write ``snapshot`` over the one kept, as someone with the database could."""
    await store.save_snapshot(
        Snapshot(snapshot.fold, snapshot.stream, 99, 0, snapshot.last_event_id, b"")
    )
    await store.save_snapshot(snapshot)


async def test_without_any_snapshot_a_restart_folds_the_stream_from_its_start(
    open_store: StoreOpener,
) -> None:
    before = await open_store()
    await _commands(before, 6)
    await _replace(before, Snapshot(NOTES.name, STREAM, 99, 0, uuid.uuid4(), b""))

    restarted = await open_store()
    folded_events.clear()
    seen: list[Notes] = []
    await _command(restarted, "n7", seen)

    assert seen == [_notes(6)]
    assert folded_events == list(range(1, 7))
    assert decide._folds[restarted]


def _on_the_line(event: CaseEvent) -> NewEvent:
    metadata = EventMetadata(
        source="casetrail/coordination",
        actor=WORKER,
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
    )
    return NewEvent(event=event, metadata=metadata)


async def test_a_budget_line_restarts_from_its_snapshot_as_folded_from_its_start(
    open_store: StoreOpener,
) -> None:
    """Reservations with and without a service, released in part and in full, before and after
    the snapshot: the restarted state is the one folded from the line's first event."""
    stream = budget_stream("home-care")
    money = Money(amount_minor_units=1_000, currency="EUR")

    def reserved(n: int) -> CaseEvent:
        service = f"service-{n}" if n % 2 else None
        return BudgetReserved(
            case_id=f"case-{n % 3}",
            reservation_id=f"r-{n}",
            budget_line="home-care",
            amount=money,
            service_id=service,
        )

    def released(n: int, amount: int) -> CaseEvent:
        part = Money(amount_minor_units=amount, currency="EUR")
        return BudgetReleased(
            case_id=f"case-{n % 3}",
            reservation_id=f"r-{n}",
            budget_line="home-care",
            amount=part,
            reason="service cancelled",
        )

    before = await open_store(default_registry())
    first = [reserved(n) for n in range(6)] + [released(1, 400), released(2, 1_000)]
    await before.append(stream, [_on_the_line(event) for event in first], 0)
    async with decide.folded(before, stream, BUDGET_LINE):
        pass
    await snapshots_written(before)
    snapshot = await before.load_snapshot(BUDGET_LINE.name, stream)
    assert snapshot is not None
    assert snapshot.version == 8
    later = [released(1, 600), reserved(6), released(6, 100)]
    await before.append(stream, [_on_the_line(event) for event in later], 8)

    restarted = await open_store(default_registry())
    reads: list[int] = []
    read_stream = restarted.read_stream

    async def counted(stream: str, *, from_version: int = 1) -> list[RecordedEvent]:
        reads.append(from_version)
        return await read_stream(stream, from_version=from_version)

    restarted.read_stream = counted  # type: ignore[method-assign,assignment]
    async with decide.folded(restarted, stream, BUDGET_LINE) as line:
        from_snapshot = line.state.newest(100)
    whole = budget_state(await read_stream(stream)).newest(100)

    assert reads == [8]  # the snapshot's event, then the three after it

    assert from_snapshot == whole
    assert (whole.version, whole.committed, whole.reservations_total) == (11, 4_900, 7)
