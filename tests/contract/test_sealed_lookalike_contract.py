"""Text that begins like a sealed value (``ct1~``) on both backends: in a field never sealed it is
the caller's own, stored, read back, published and exported as written (it was read as a
sealed value: unreadable, or silently ``[erased]``, and a budget line holding one could no longer
be folded); a sensitive field seals it like any text, and a store that seals nothing refuses it
there, naming the field, as every reader would take it for a sealed value."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.folded import sealed_keys
from casetrail_platform.keys.port import DataKeyTable
from casetrail_platform.ledger.export import canonical_of_record
from casetrail_platform.store.port import NO_STREAM, EventStore, drain
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import CaseEvent
from events.cloudevents import from_json_lines, from_kafka_binary, to_json_lines, to_kafka_binary
from events.envelope import EventMetadata, NewEvent, RecordedEvent
from events.errors import InvalidEventError
from events.registry import EventRegistry
from tests.contract.bus_conftest import Recorder, eventually, open_harness, running
from tests.contract.conftest import StoreOpener
from tests.support.sample_events import WORKER, note, sample_registry

LOOKALIKES = [
    "ct1~ see finance ticket 42",  # not shaped like a sealed value: read as unreadable
    "ct1~agency~1~abc",  # shaped like one: read as "[erased]"
    'line renamed "ct1~2024"',  # quoted inside: its data was re-encoded with sorted keys
    '"ct1~x0~1~a" "ct1~x1~1~b"',  # each quoted one was taken for a key to fetch
]


class BudgetNoted(CaseEvent):
    """A test event with free text in a field that is never sealed, as a budget release's
    reason; ``case_id`` after it, so its own JSON is not in sorted order."""

    event_type = "casetrail.test.budget-noted"
    reason: str
    case_id: str


def _registry() -> EventRegistry:
    registry = sample_registry()
    registry.register(BudgetNoted)
    return registry


def _noted(case_id: str, reason: str) -> NewEvent:
    return NewEvent(
        BudgetNoted(reason=reason, case_id=case_id),
        EventMetadata("casetrail/test", WORKER, datetime.now(UTC), uuid4()),
    )


async def _check_read_back_as_written(
    store: EventStore, registry: EventRegistry, new: list[NewEvent]
) -> None:
    appended = await store.append("case-1", new, NO_STREAM)
    read = await store.read_stream("case-1")
    everything = [recorded async for recorded in drain(store)]
    for recorded in (read, everything):
        assert [r.event for r in recorded] == [n.event for n in new]
        assert [r.data for r in recorded] == [r.data for r in appended]
        assert [canonical_of_record(r) for r in recorded] == [
            canonical_of_record(r) for r in appended
        ]
    _check_published_and_exported_as_written(read, registry)


def _check_published_and_exported_as_written(
    read: list[RecordedEvent], registry: EventRegistry
) -> None:
    """What a subscriber decodes from Kafka and a verifier from an export line: the same
    event and the ledger leaf the store hashed."""
    exported = from_json_lines(to_json_lines(read), registry)
    for recorded, line in zip(read, exported, strict=True):
        record = to_kafka_binary(recorded)
        received = from_kafka_binary(record.key, record.headers, record.value, registry)
        for decoded in (received, line):
            assert decoded.event == recorded.event
            assert canonical_of_record(decoded) == canonical_of_record(recorded)


async def test_unsealed_text_that_begins_like_a_sealed_value_reads_back_as_written(
    open_store: StoreOpener,
) -> None:
    registry = _registry()
    store = await open_store(registry)
    await _check_read_back_as_written(
        store, registry, [_noted("1", reason) for reason in LOOKALIKES]
    )


async def test_on_a_sealing_store_such_text_reads_back_as_written_in_any_field(
    sealed: tuple[EventStore, EventRegistry, DataKeyTable],
) -> None:
    store, registry, _ = sealed
    registry.register(BudgetNoted)
    new = [_noted("1", reason) for reason in LOOKALIKES]
    new += [note("1", text) for text in LOOKALIKES]  # a sensitive field: sealed, then opened
    await _check_read_back_as_written(store, registry, new)


async def test_a_store_that_seals_nothing_refuses_it_in_a_sensitive_field_naming_it(
    event_store: EventStore,
) -> None:
    with pytest.raises(InvalidEventError) as refused:
        await event_store.append("case-1", [note("1", "ct1~agency~1~abc")], NO_STREAM)

    assert [problem.field for problem in refused.value.problems] == ["text"]
    assert "ct1~agency" not in str(refused.value)
    assert [recorded async for recorded in drain(event_store)] == []
    quoted = await event_store.append("case-1", [note("1", 'said "ct1~2024"')], NO_STREAM)
    assert [r.event for r in await event_store.read_stream("case-1")] == [quoted[0].event]


@pytest.mark.parametrize("kind", ["inprocess", pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_published_events_holding_such_text_are_delivered_as_written(
    kind: str, tmp_path: Path
) -> None:
    registry = _registry()
    # One store: the bus is the same whichever store the events came from.
    store = await SqliteEventStore.open(tmp_path / "events.db", registry)
    try:
        await store.append("case-1", [_noted("1", reason) for reason in LOOKALIKES], NO_STREAM)
        read = await store.read_stream("case-1")
    finally:
        await store.close()
    bus = await open_harness(kind, registry)
    try:
        await bus.publisher.publish(read)
        recorder = Recorder()
        async with running(bus.subscriber(), bus.group(), recorder):
            await eventually(lambda: recorder.has_all(read), "every event")
    finally:
        await bus.close()
    for recorded in read:
        delivered = recorder.projection[recorded.event_id]
        assert delivered.event == recorded.event
        assert canonical_of_record(delivered) == canonical_of_record(recorded)
        assert json.loads(delivered.data) == json.loads(recorded.data)


async def test_such_text_in_a_field_never_sealed_names_no_key_a_fold_would_wait_for(
    sealed: tuple[EventStore, EventRegistry, DataKeyTable],
) -> None:
    """Shaped as a whole sealed value, it named a key no keyring holds: a state folded from
    the stream holding it (a shared budget line) was never kept nor snapshotted again."""
    store, registry, _ = sealed
    registry.register(BudgetNoted)
    await store.append("budget-1", [_noted("1", reason) for reason in LOOKALIKES], NO_STREAM)
    await store.append("case-1", [note("1", "sealed for real")], NO_STREAM)

    noted = await store.read_stream("budget-1")
    sensitive = await store.read_stream("case-1")

    assert sealed_keys(frozenset(), noted) == frozenset()
    assert len(sealed_keys(frozenset(), sensitive)) == 1
