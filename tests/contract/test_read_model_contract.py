"""The read-model contract (documents + tracking) and the projection runners on top of it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.projections import sqlite as sqlite_read_models
from casetrail_platform.projections.port import (
    Document,
    DocumentReader,
    DocumentTransaction,
    KeyRange,
    Projection,
    ReadModelStore,
)
from casetrail_platform.projections.runner import BusProjectionHandler, catch_up, rebuild
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.port import NO_STREAM, EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.erasure import ClientErased
from events.envelope import NewEvent, RecordedEvent
from events.registry import EventRegistry
from tests.support.backends import BACKENDS
from tests.support.sample_events import NoteWritten, note, sample_registry


class NotesPerCase(Projection):
    name = "notes-per-case"
    collections = ("case-notes",)

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        if not isinstance(recorded.event, NoteWritten):
            return
        case = await transaction.get("case-notes", recorded.event.case_id) or {
            "case_id": recorded.event.case_id,
            "notes": 0,
            "words": 0,
            "texts": [],
        }
        case["notes"] += 1
        case["words"] += recorded.event.words
        case["texts"].append(recorded.event.text)
        await transaction.put("case-notes", recorded.event.case_id, case)


class FailsOn(NotesPerCase):
    def __init__(self, text: str) -> None:
        self.text = text

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        await super().apply(transaction, recorded)
        if isinstance(recorded.event, NoteWritten) and recorded.event.text == self.text:
            raise RuntimeError("handler failed half-way")


@pytest.fixture
async def event_store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    yield store
    await store.close()


async def dump(read_models: ReadModelStore, collection: str) -> list[tuple[str, Document]]:
    return [item async for item in read_models.scan(collection)]


async def test_documents_put_get_find_delete(read_models: ReadModelStore) -> None:
    async with read_models.transaction() as transaction:
        await transaction.put("cases", "c1", {"status": "open", "needs": ["housing"], "n": 1})
        await transaction.put("cases", "c2", {"status": "closed", "needs": ["food"], "n": 2})
        assert await transaction.get("cases", "c1") == {
            "status": "open",
            "needs": ["housing"],
            "n": 1,
        }
        assert [d["n"] for d in await transaction.find("cases", {"status": "closed"})] == [2]

    assert [d["n"] for d in await read_models.find("cases", {"status": "open"})] == [1]
    assert [d["n"] for d in await read_models.find("cases", contains={"needs": "food"})] == [2]
    assert await read_models.find("cases", {"status": "open"}, {"needs": "food"}) == []
    async with read_models.transaction() as transaction:
        await transaction.delete("cases", "c1")
    assert await read_models.get("cases", "c1") is None
    assert [key for key, _ in await dump(read_models, "cases")] == ["c2"]


async def test_many_documents_are_got_by_their_keys(read_models: ReadModelStore) -> None:
    async with read_models.transaction() as transaction:
        for n in range(1, 4):
            await transaction.put("cases", f"c{n}", {"n": n})
        await transaction.put("other", "c4", {"n": 4})

    found = await read_models.get_many("cases", ["c3", "c1", "c4", "c3", "missing"])

    assert found == {"c1": {"n": 1}, "c3": {"n": 3}}
    assert await read_models.get_many("cases", []) == {}
    many = [f"k{n}" for n in range(1_000)]
    assert set(await read_models.get_many("cases", [*many, "c2"])) == {"c2"}


class ScanningReadModels(ReadModelStore):
    """The port's own key-range reads (a scan), over a real store's documents."""

    def __init__(self, inner: ReadModelStore) -> None:
        self.inner = inner

    def transaction(self) -> AbstractAsyncContextManager[DocumentTransaction]:
        return self.inner.transaction()

    def snapshot(self) -> AbstractAsyncContextManager[DocumentReader]:
        return self.inner.snapshot()

    async def get(self, collection: str, key: str) -> Document | None:
        return await self.inner.get(collection, key)

    async def find(
        self,
        collection: str,
        equals: Mapping[str, str | int | bool] | None = None,
        contains: Mapping[str, str] | None = None,
        limit: int = 1000,
    ) -> list[Document]:
        return await self.inner.find(collection, equals, contains, limit)

    def scan(self, collection: str) -> AsyncIterator[tuple[str, Document]]:
        return self.inner.scan(collection)

    async def reset(
        self, projection: str, collections: tuple[str, ...], *, forget: bool = False
    ) -> bool:
        return await self.inner.reset(projection, collections, forget=forget)

    async def close(self) -> None:
        await self.inner.close()


async def test_key_ranges_read_in_byte_order_with_bounds_filters_and_limits(
    read_models: ReadModelStore,
) -> None:
    keys = ["c1|a", "c1|b|1", "c1|b|2", "c1|B", "c1|b~", "c10|a", "c1-x", "c1|z"]
    async with read_models.transaction() as transaction:
        for number, key in enumerate(keys):
            kind = "even" if number % 2 == 0 else "odd"
            await transaction.put("index", key, {"n": number, "kind": kind})

    for store in (read_models, ScanningReadModels(read_models)):
        every = KeyRange("c1|", "c1|~")
        found = await store.key_range("index", every)
        assert [key for key, _ in found] == ["c1|B", "c1|a", "c1|b|1", "c1|b|2", "c1|b~", "c1|z"]
        assert await store.count_range("index", every) == 6
        backward = KeyRange("c1|a", "c1|b~", descending=True, limit=2)
        assert [key for key, _ in await store.key_range("index", backward)] == [
            "c1|b|2",
            "c1|b|1",
        ]
        odd = KeyRange("c1|", "c1|~", where={"kind": ["odd"]})
        assert [d["n"] for _, d in await store.key_range("index", odd)] == [3, 1, 7]
        assert await store.count_range("index", odd) == 3
        none = KeyRange("c1|", "c1|~", where={"kind": []})
        assert await store.key_range("index", none) == []


async def test_a_snapshot_reads_one_commit_whatever_commits_meanwhile(
    read_models: ReadModelStore,
) -> None:
    """A pass reading an index a page at a time sees the commit it began on: a key committed
    meanwhile behind its cursor and one ahead of it are both left out, never the one read."""
    index = KeyRange("k", "k~")
    async with read_models.transaction() as transaction:
        await transaction.put("index", "k1", {"n": 1})
        await transaction.set_position("p", 1)
    async with read_models.snapshot() as view:
        first = await view.key_range("index", KeyRange("k", "k~", limit=1))
        async with read_models.transaction() as transaction:
            await transaction.put("index", "k0", {"n": 0})
            await transaction.put("index", "k2", {"n": 2})
            await transaction.put("index", "k1", {"n": 10})
            await transaction.set_position("p", 2)
        after_first = KeyRange(first[-1][0], "k~")
        assert first == [("k1", {"n": 1})]
        assert await view.key_range("index", after_first) == []
        assert await view.key_range("index", index) == [("k1", {"n": 1})]
        assert await view.get("index", "k2") is None
        assert await view.get_many("index", ["k0", "k1", "k2"]) == {"k1": {"n": 1}}
        assert await view.count_range("index", index) == 1
        assert await view.applied_position("p") == 1
    assert [key for key, _ in await read_models.key_range("index", index)] == ["k0", "k1", "k2"]
    assert await read_models.applied_position("p") == 2


async def test_a_failed_transaction_leaves_nothing_behind(read_models: ReadModelStore) -> None:
    async def write_then_fail() -> None:
        async with read_models.transaction() as transaction:
            await transaction.put("cases", "c1", {"status": "open"})
            await transaction.set_position("p", 9)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await write_then_fail()

    assert await read_models.get("cases", "c1") is None
    async with read_models.transaction() as transaction:
        assert await transaction.position("p") == 0


async def test_the_applied_position_is_the_last_committed_one(
    read_models: ReadModelStore,
) -> None:
    assert await read_models.applied_position("p") == 0
    async with read_models.transaction() as transaction:
        await transaction.set_position("p", 9)

    async def move_then_fail() -> None:
        async with read_models.transaction() as transaction:
            await transaction.set_position("p", 12)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await move_then_fail()
    assert await read_models.applied_position("p") == 9
    assert await read_models.applied_position("other") == 0


async def test_append_to_list_adds_one_item_to_a_stored_document(
    read_models: ReadModelStore,
) -> None:
    async with read_models.transaction() as transaction:
        await transaction.put("chunks", "k", {"case_id": "c1", "events": [{"n": 1}]})
        assert await transaction.append_to_list("chunks", "k", "events", {"n": 2, "l": [3]})
        assert not await transaction.append_to_list("chunks", "missing", "events", {"n": 9})

    assert await read_models.get("chunks", "k") == {
        "case_id": "c1",
        "events": [{"n": 1}, {"n": 2, "l": [3]}],
    }
    assert await read_models.get("chunks", "missing") is None


async def test_append_to_a_field_holding_no_list_is_refused_alike_and_writes_nothing(
    read_models: ReadModelStore,
) -> None:
    """SQLite answered True and appended nothing (the item lost, its caller told it was kept);
    PostgreSQL failed the transaction on a NULL document, or put a scalar and the item in a
    new list."""
    async with read_models.transaction() as transaction:
        await transaction.put("chunks", "no-list", {"case_id": "c1"})
        await transaction.put("chunks", "scalar", {"case_id": "c1", "events": 7})

    for key in ("no-list", "scalar"):
        with pytest.raises(ValueError, match="events"):
            async with read_models.transaction() as transaction:
                await transaction.append_to_list("chunks", key, "events", {"n": 2})

    assert await read_models.get("chunks", "no-list") == {"case_id": "c1"}
    assert await read_models.get("chunks", "scalar") == {"case_id": "c1", "events": 7}


async def test_put_new_stores_only_where_nothing_is_stored(read_models: ReadModelStore) -> None:
    async with read_models.transaction() as transaction:
        await transaction.put("marks", "old", {"n": 1})
        assert await transaction.put_new("marks", "new", {"n": 2})
        assert not await transaction.put_new("marks", "new", {"n": 3})
        assert not await transaction.put_new("marks", "old", {"n": 4})
        assert await transaction.get("marks", "new") == {"n": 2}

    assert await read_models.get("marks", "old") == {"n": 1}
    assert await read_models.get("marks", "new") == {"n": 2}

    async def mark_then_fail() -> None:
        async with read_models.transaction() as transaction:
            assert await transaction.put_new("marks", "lost", {"n": 5})
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await mark_then_fail()
    assert await read_models.get("marks", "lost") is None


async def test_put_once_stores_the_rest_only_with_a_new_marker(
    read_models: ReadModelStore,
) -> None:
    async with read_models.transaction() as transaction:
        await transaction.put("docs", "old", {"n": 0})
        await transaction.put("heads", "there", {"n": 0})
        assert await transaction.put_once(
            ("seen", "e1", {"n": 1}),
            [("docs", "old", {"n": 2}), ("docs", "new", {"n": 3, "l": ["é"]})],
            [("heads", "there", {"n": 4}), ("heads", "missing", {"n": 5})],
        )
        # Seen before: nothing of it is stored.
        assert not await transaction.put_once(
            ("seen", "e1", {"n": 6}), [("docs", "old", {"n": 7})], [("heads", "other", {"n": 8})]
        )
        assert await transaction.put_once(("seen", "e2", {"n": 9}), [])

    assert await read_models.get("seen", "e1") == {"n": 1}
    assert await read_models.get("seen", "e2") == {"n": 9}
    assert await read_models.get("docs", "old") == {"n": 2}
    assert await read_models.get("docs", "new") == {"n": 3, "l": ["é"]}
    assert await read_models.get("heads", "there") == {"n": 0}
    assert await read_models.get("heads", "missing") == {"n": 5}
    assert await read_models.get("heads", "other") is None

    async def keep_then_fail() -> None:
        async with read_models.transaction() as transaction:
            assert await transaction.put_once(("seen", "e3", {}), [("docs", "lost", {"n": 1})])
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await keep_then_fail()
    assert await read_models.get("seen", "e3") is None
    assert await read_models.get("docs", "lost") is None


async def test_put_if_unchanged_stores_only_over_the_expected_document(
    read_models: ReadModelStore,
) -> None:
    async with read_models.transaction() as transaction:
        assert await transaction.put_if_unchanged("heads", "h", None, {"n": 1, "l": [1]})
        assert not await transaction.put_if_unchanged("heads", "h", None, {"n": 2})
        assert not await transaction.put_if_unchanged("heads", "h", {"n": 0, "l": [1]}, {"n": 3})
        assert await transaction.put_if_unchanged("heads", "h", {"n": 1, "l": [1]}, {"n": 4})
        assert not await transaction.put_if_unchanged("heads", "missing", {"n": 4}, {"n": 5})
        # The same document set again: stored (and its row taken, on PostgreSQL).
        assert await transaction.put_if_unchanged("heads", "h", {"n": 4}, {"n": 4})
    assert await read_models.get("heads", "h") == {"n": 4}
    assert await read_models.get("heads", "missing") is None

    async def set_then_fail() -> None:
        async with read_models.transaction() as transaction:
            assert await transaction.put_if_unchanged("heads", "h", {"n": 4}, {"n": 6})
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await set_then_fail()
    assert await read_models.get("heads", "h") == {"n": 4}


async def test_put_if_later_replaces_only_an_earlier_document(
    read_models: ReadModelStore,
) -> None:
    async with read_models.transaction() as transaction:
        assert await transaction.put_if_later("staff", "w", {"at": "b", "n": 1}, "at")
        assert not await transaction.put_if_later("staff", "w", {"at": "a", "n": 2}, "at")
        assert not await transaction.put_if_later("staff", "w", {"at": "b", "n": 3}, "at")
        assert await transaction.get("staff", "w") == {"at": "b", "n": 1}
        # Byte order, not a collation's: "Z" before "a", "a" before "é".
        assert await transaction.put_if_later("staff", "x", {"at": "Z"}, "at")
        assert await transaction.put_if_later("staff", "x", {"at": "a"}, "at")
        assert await transaction.put_if_later("staff", "x", {"at": "é"}, "at")
        assert not await transaction.put_if_later("staff", "x", {"at": "z"}, "at")
        # A document stored without the field comes before any.
        await transaction.put("staff", "y", {"n": 0})
        assert await transaction.put_if_later("staff", "y", {"at": "0", "n": 4}, "at")

    assert await read_models.get("staff", "w") == {"at": "b", "n": 1}
    assert await read_models.get("staff", "x") == {"at": "é"}
    assert await read_models.get("staff", "y") == {"at": "0", "n": 4}
    async with read_models.transaction() as transaction:
        assert await transaction.put_if_later("staff", "w", {"at": "c", "n": 5}, "at")
        for bad in ({"n": 6}, {"at": "", "n": 6}, {"at": 7}):
            with pytest.raises(ValueError, match="'at'"):
                await transaction.put_if_later("staff", "w", bad, "at")
    assert await read_models.get("staff", "w") == {"at": "c", "n": 5}

    async def put_then_fail() -> None:
        async with read_models.transaction() as transaction:
            assert await transaction.put_if_later("staff", "w", {"at": "d"}, "at")
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await put_then_fail()
    assert await read_models.get("staff", "w") == {"at": "c", "n": 5}


async def test_put_many_puts_each_in_order_and_rolls_back_with_its_transaction(
    read_models: ReadModelStore,
) -> None:
    async with read_models.transaction() as transaction:
        await transaction.put("a", "old", {"n": 0})
        await transaction.put_many(
            [("a", "old", {"n": 1}), ("b", "x", {"n": 2}), ("a", "new", {"n": 3, "l": [1]})]
        )
        assert await transaction.get("a", "old") == {"n": 1}

    assert await read_models.get("a", "old") == {"n": 1}
    assert await read_models.get("b", "x") == {"n": 2}
    assert await read_models.get("a", "new") == {"n": 3, "l": [1]}

    async def put_then_fail() -> None:
        async with read_models.transaction() as transaction:
            await transaction.put_many([("a", "lost", {"n": 4}), ("a", "old", {"n": 5})])
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await put_then_fail()
    assert await read_models.get("a", "lost") is None
    assert await read_models.get("a", "old") == {"n": 1}


async def test_a_watcher_is_told_each_committed_change(read_models: ReadModelStore) -> None:
    told: list[str | None] = []
    assert read_models.watch("watched", told.append)
    await _eventually(read_models.watching)  # PostgreSQL: once it listens
    told.clear()

    async def change_then_fail() -> None:
        async with read_models.transaction() as transaction:
            await transaction.put("watched", "lost", {"n": 1})
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await change_then_fail()
    async with read_models.transaction() as transaction:
        await transaction.put("watched", "a", {"items": []})
        await transaction.append_to_list("watched", "a", "items", 1)
        await transaction.put("other", "b", {"n": 1})
        await transaction.delete("watched", "c")
        await transaction.put_many([("other", "o", {"n": 1}), ("watched", "m", {"n": 1})])
        await transaction.put_if_later("watched", "p", {"at": "b"}, "at")
        await transaction.put_if_unchanged("watched", "u", None, {"n": 1})
        await transaction.put_once(
            ("other", "s", {}), [("watched", "v", {})], [("watched", "w", {}), ("watched", "u", {})]
        )
        assert told == []  # nothing is told before the commit
    await read_models.reset("p", ("watched",))
    await _eventually(lambda: None in told)

    # (PostgreSQL folds a transaction's identical notifications into one.)
    assert list(dict.fromkeys(told)) == ["a", "c", "m", "p", "u", "v", "w", None]


async def _eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not told in time"
        await asyncio.sleep(0.01)


async def test_catch_up_applies_each_event_once(
    event_store: EventStore, read_models: ReadModelStore
) -> None:
    await event_store.append("case-1", [note("1", "one two"), note("1", "three")], NO_STREAM)
    projection = NotesPerCase()

    reached = await catch_up(event_store, read_models, projection, batch_size=1)
    again = await catch_up(event_store, read_models, projection)

    assert reached == again == await event_store.last_position()
    assert await read_models.get("case-notes", "1") == {
        "case_id": "1",
        "notes": 2,
        "words": 3,
        "texts": ["one two", "three"],
    }


async def test_a_crash_mid_batch_applies_nothing_of_that_batch(
    event_store: EventStore, read_models: ReadModelStore
) -> None:
    await event_store.append("case-1", [note("1", "fine"), note("1", "poison")], NO_STREAM)

    with pytest.raises(RuntimeError):
        await catch_up(event_store, read_models, FailsOn("poison"))

    assert await read_models.get("case-notes", "1") is None
    await catch_up(event_store, read_models, NotesPerCase())
    document = await read_models.get("case-notes", "1")
    assert document is not None
    assert document["texts"] == ["fine", "poison"]


async def test_rebuilding_from_zero_gives_exactly_the_same_state(
    event_store: EventStore, read_models: ReadModelStore
) -> None:
    for case in range(5):
        await event_store.append(
            f"case-{case}", [note(str(case), f"note {i} of {case}") for i in range(7)], NO_STREAM
        )
    projection = NotesPerCase()
    await catch_up(event_store, read_models, projection, batch_size=3)
    before = await dump(read_models, "case-notes")
    progress: list[tuple[int, int]] = []

    await rebuild(event_store, read_models, projection, progress=lambda *p: progress.append(p))

    assert await dump(read_models, "case-notes") == before
    assert progress[-1] == (35, 35)


async def test_a_rebuild_beside_a_running_follower_loses_no_event(
    event_store: EventStore, read_models: ReadModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``casetrail rebuild`` resets the projection while the service's follower is between
    reading its position and applying the batch after it: the follower must not carry the
    projection past the events the reset took away (the rebuild would then skip them)."""
    await event_store.append("case-1", [note("1", f"early {i}") for i in range(7)], NO_STREAM)
    projection = NotesPerCase()
    await catch_up(event_store, read_models, projection)
    await event_store.append("case-2", [note("2", f"late {i}") for i in range(3)], NO_STREAM)
    read_all = event_store.read_all

    async def reset_meanwhile(after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        monkeypatch.setattr(event_store, "read_all", read_all)
        batch = await read_all(after_position, limit)
        await read_models.reset(projection.name, projection.collections)  # the rebuild's
        return batch

    monkeypatch.setattr(event_store, "read_all", reset_meanwhile)
    await catch_up(event_store, read_models, projection)  # the running service's follower
    await catch_up(event_store, read_models, projection)  # the rebuild's

    assert [(key, d["notes"]) for key, d in await dump(read_models, "case-notes")] == [
        ("1", 7),
        ("2", 3),
    ]


async def test_bus_handler_applies_a_redelivered_event_once(
    event_store: EventStore, read_models: ReadModelStore
) -> None:
    recorded = await event_store.append("case-1", [note("1", "a"), note("1", "b")], NO_STREAM)
    handler = BusProjectionHandler(read_models, NotesPerCase(), service="test")

    for delivery in [*recorded, recorded[0], *recorded]:
        await handler(delivery)

    document = await read_models.get("case-notes", "1")
    assert document is not None
    assert document["texts"] == ["a", "b"]


class NotesByEvent(Projection):
    """Idempotent by itself: one document per event, keyed by it."""

    name = "notes-by-event"
    collections = ("notes",)
    idempotent = True
    applied = 0

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        type(self).applied += 1
        assert isinstance(recorded.event, NoteWritten)
        await transaction.put("notes", str(recorded.event_id), {"text": recorded.event.text})


async def test_bus_handler_keeps_no_tracking_rows_for_an_idempotent_projection(
    event_store: EventStore, read_models: ReadModelStore
) -> None:
    recorded = await event_store.append("case-1", [note("1", "a"), note("1", "b")], NO_STREAM)
    handler = BusProjectionHandler(read_models, NotesByEvent(), service="test")
    NotesByEvent.applied = 0

    await handler.handle_batch([*recorded, recorded[0]])  # a duplicate within a batch: once
    await handler(recorded[1])  # redelivered later: applied again, changing nothing

    assert NotesByEvent.applied == 3
    assert [document async for _, document in read_models.scan("notes")] in (
        [{"text": "a"}, {"text": "b"}],
        [{"text": "b"}, {"text": "a"}],
    )
    async with read_models.transaction() as transaction:
        ids = [r.event_id for r in recorded]
        assert await transaction.already_applied(NotesByEvent.name, ids) == set()


async def test_bus_handler_applies_a_stream_delivered_out_of_sequence_order(
    event_store: EventStore, read_models: ReadModelStore
) -> None:
    # A stream spanning several cases (a client's schedule) is spread over several partitions,
    # so its events can arrive in any order: a late event must still be applied.
    first, second = await event_store.append("case-1", [note("1", "a"), note("1", "b")], NO_STREAM)
    handler = BusProjectionHandler(read_models, NotesPerCase(), service="test")

    await handler.handle_batch([second])
    await handler.handle_batch([first, second])

    document = await read_models.get("case-notes", "1")
    assert document is not None
    assert document["texts"] == ["b", "a"]


async def test_finds_compare_json_numbers_booleans_and_strings_by_type(
    read_models: ReadModelStore,
) -> None:
    """The same query gives the same documents on both backends: a boolean matches only a
    JSON boolean, a number only a JSON number (1 equals 1.0), a string only a JSON string.
    SQLite's json_extract turns true into 1 and compares across types unless told not to;
    intake's review queue asks for ``reviewed: False``, planning's case views for
    ``opened: True``."""
    values: dict[str, object] = {
        "true": True,
        "false": False,
        "one": 1,
        "one-real": 1.0,
        "zero": 0,
        "text-one": "1",
        "text-true": "true",
        "null": None,
        "list": [1],
    }
    async with read_models.transaction() as transaction:
        for key, value in values.items():
            await transaction.put("typed", key, {"k": key, "v": value})

    async def found(value: str | int | bool) -> list[str]:
        keys = sorted(key for key, v in values.items() if _same_json(v, value))
        documents = await read_models.find("typed", {"v": value})
        async with read_models.transaction() as transaction:
            in_transaction = await transaction.find("typed", {"v": value})
        matched = [d["k"] for d in documents]
        assert matched == [d["k"] for d in in_transaction] == keys, f"{value!r}"
        return matched

    assert await found(True) == ["true"]
    assert await found(False) == ["false"]
    assert await found(1) == ["one", "one-real"]
    assert await found(0) == ["zero"]
    assert await found("1") == ["text-one"]
    assert await found("true") == ["text-true"]
    lists = [d["k"] for d in await read_models.find("typed", contains={"v": "1"})]
    assert lists == []  # neither the string "1" nor the list [1] is a list holding "1"
    for store in (read_models, ScanningReadModels(read_models)):
        texts = KeyRange("a", "z", where={"v": ["1", "true"]})
        assert [key for key, _ in await store.key_range("typed", texts)] == [
            "text-one",
            "text-true",
        ]
        assert await store.count_range("typed", texts) == 2


def _same_json(stored: object, wanted: str | int | bool) -> bool:
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return stored is wanted
    if isinstance(wanted, int):
        return isinstance(stored, int | float) and stored == wanted
    return stored == wanted


@pytest.mark.parametrize(
    "older_work",
    [
        ("BEGIN ISOLATION LEVEL REPEATABLE READ", "SELECT 1"),  # a snapshot held
        ("BEGIN", "SELECT pg_current_xact_id()"),  # no snapshot between statements: its id
    ],
)
async def test_a_snapshot_older_than_the_erasure_fails_forgetting_until_it_ends(
    monkeypatch: pytest.MonkeyPatch, older_work: tuple[str, str]
) -> None:
    """VACUUM keeps a dead row version that an older snapshot may see, and says nothing:
    ``forget_overwritten`` returned with the scrubbed value still in the table's pages. It
    now vacuums again while such a snapshot is open, then fails (UNAVAILABLE: the batch is
    tried again), and succeeds once the snapshot is gone."""
    import psycopg

    from casetrail_platform.projections.postgres import PostgresReadModelStore
    from tests.support.servers import postgres_dsn, schema_of_its_own

    canary = "CANARY-" + "s" * 40
    async with schema_of_its_own("forget_snapshot") as schema:
        store = await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)
        try:
            async with store.transaction() as transaction:
                await transaction.put("case_views", "c1", {"description": canary})
            dsn = postgres_dsn()
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as older:
                for statement in older_work:  # begun before the erasure
                    await older.execute(statement)
                async with store.transaction() as transaction:
                    await transaction.put("case_views", "c1", {"description": "[erased]"})
                with pytest.raises(StorageUnavailableError, match="transaction older"):
                    await store.forget_overwritten(patience=0.3)
                assert canary.encode() in await _heap_bytes(f'"{schema}".documents')
                await older.execute("ROLLBACK")
            await store.forget_overwritten()
        finally:
            await store.close()
        assert canary.encode() not in await _heap_bytes(f'"{schema}".documents')


async def test_a_snapshot_ending_during_the_vacuum_never_lets_the_mark_go_with_the_rows_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The vacuum ran first and the older snapshots were looked for after it: one open during
    the vacuum (which then kept the scrubbed rows) and ended before the look found none, and
    the erasure's mark went with the rows still in the pages; nothing forgot them again."""
    import psycopg

    from casetrail_platform.projections.postgres import PostgresReadModelStore
    from tests.support.servers import postgres_dsn, schema_of_its_own

    canary = "CANARY-" + "v" * 40
    async with schema_of_its_own("forget_race") as schema:
        store = await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)
        older = await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True)
        try:
            async with store.transaction() as transaction:
                await transaction.put("case_views", "c1", {"description": canary})
            await older.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            await older.execute("SELECT 1")
            async with store.transaction() as transaction:
                await transaction.put("case_views", "c1", {"description": "[erased]"})
                await transaction.mark_overwritten()
            executing = psycopg.AsyncConnection.execute

            async def ending_older_after_a_vacuum(
                connection: psycopg.AsyncConnection[Any], query: Any, *args: Any, **kwargs: Any
            ) -> Any:
                done = await executing(connection, query, *args, **kwargs)
                if query == "VACUUM documents" and not older.closed:
                    await older.execute("ROLLBACK")
                return done

            monkeypatch.setattr(psycopg.AsyncConnection, "execute", ending_older_after_a_vacuum)
            with contextlib.suppress(StorageUnavailableError):
                await store.forget_overwritten(patience=0.3)
            monkeypatch.undo()

            kept = canary.encode() in await _heap_bytes(f'"{schema}".documents')
            assert not kept or await store.forgetting_pending()
            await older.execute("ROLLBACK")
            await store.forget_if_pending()
            assert canary.encode() not in await _heap_bytes(f'"{schema}".documents')
            assert not await store.forgetting_pending()
        finally:
            await older.close()
            await store.close()


async def _heap_bytes(table: str) -> bytes:
    """Every row version's bytes in ``table``'s pages, dead ones too (``pageinspect``)."""
    import psycopg

    from tests.support.servers import postgres_dsn

    held = b""
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as c:
        await c.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        [(pages,)] = await (
            await c.execute("SELECT pg_relation_size(%s::regclass) / 8192", (table,))
        ).fetchall()
        for page in range(int(pages)):
            items = await (
                await c.execute(
                    "SELECT t_data FROM heap_page_items(get_raw_page(%s, %s))", (table, page)
                )
            ).fetchall()
            held += b"".join(bytes(data) for (data,) in items if data is not None)
    return held


async def test_a_value_overwritten_is_no_row_version_once_forgotten_on_postgres() -> None:
    """After an erasure scrubbed a document, ``forget_overwritten`` leaves no row version
    holding the value: the dead one stayed readable in the table's pages (``pageinspect``
    shows it) until autovacuum came by, which waits for enough dead rows. (SQLite cuts its
    write-ahead log: ``tests/unit/test_read_model_forgetting.py``.)"""

    from casetrail_platform.projections.postgres import PostgresReadModelStore
    from tests.support.servers import postgres_dsn, schema_of_its_own

    canary = "CANARY-" + "q" * 40
    async with schema_of_its_own("forget") as schema:
        store = await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)
        try:
            async with store.transaction() as transaction:
                await transaction.put("case_views", "c1", {"description": canary})
            async with store.transaction() as transaction:
                await transaction.put("case_views", "c1", {"description": "[erased]"})
            await store.forget_overwritten()
            assert await store.get("case_views", "c1") == {"description": "[erased]"}
        finally:
            await store.close()
        held = await _heap_bytes(f'"{schema}".documents')
    assert b"[erased]" in held
    assert canary.encode() not in held


class LastNotes(Projection):
    """Each case's last note, which forgets it when the case's client is erased."""

    name = "last-notes"
    collections = ("last-notes",)

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        if isinstance(recorded.event, NoteWritten):
            await transaction.put(
                "last-notes", recorded.event.case_id, {"text": recorded.event.text}
            )

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        for case_id in erased.case_ids:
            if await transaction.get("last-notes", case_id) is not None:
                await transaction.put("last-notes", case_id, {"text": "[erased]"})


def _erasure(case_id: str) -> NewEvent:
    erased = ClientErased(client_id="client-1", case_ids=(case_id,), request_reference="dsr-1")
    return NewEvent(erased, note(case_id).metadata)


@dataclass
class _ReadModelFiles:
    """One backend's read models, what their files hold, and how other connections use them."""

    open: Callable[[], Awaitable[ReadModelStore]]
    held: Callable[[], Awaitable[bytes]]
    """Every byte of the read models' files (SQLite) or of the documents table's row
    versions, dead ones too (PostgreSQL)."""
    older_snapshot: Callable[[], AbstractAsyncContextManager[None]]
    """Another connection reading a snapshot taken on entry, until exit."""
    ended: Callable[[ReadModelStore], Awaitable[None]]
    """The store's process killed: its files as they are (a clean close cuts SQLite's log)."""


def _sqlite_files(directory: Path) -> dict[Path, bytes]:
    return {
        file: file.read_bytes() for file in directory.iterdir() if file.name.startswith("rm.db")
    }


def _restored(files: dict[Path, bytes]) -> None:
    for file, data in files.items():
        file.write_bytes(data)


@asynccontextmanager
async def _read_model_files(backend: str, directory: Path) -> AsyncIterator[_ReadModelFiles]:
    if backend == "sqlite":
        path = directory / "rm.db"

        async def opened_sqlite() -> ReadModelStore:
            return SqliteReadModelStore(path)

        async def files() -> bytes:
            return b"".join(_sqlite_files(directory).values())

        @asynccontextmanager
        async def reading() -> AsyncIterator[None]:
            reader = sqlite3.connect(path, isolation_level=None)
            try:
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM documents").fetchone()
                yield
                reader.execute("COMMIT")
            finally:
                reader.close()

        async def killed(store: ReadModelStore) -> None:
            kept = _sqlite_files(directory)
            await store.close()
            _restored(kept)

        yield _ReadModelFiles(opened_sqlite, files, reading, killed)
        return
    import psycopg

    from casetrail_platform.projections.postgres import PostgresReadModelStore
    from tests.support.servers import postgres_dsn, schema_of_its_own

    async with schema_of_its_own("forget_pending") as schema:

        async def opened_postgres() -> ReadModelStore:
            return await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)

        async def pages() -> bytes:
            return await _heap_bytes(f'"{schema}".documents')

        @asynccontextmanager
        async def snapshot() -> AsyncIterator[None]:
            async with await psycopg.AsyncConnection.connect(
                postgres_dsn(), autocommit=True
            ) as older:
                await older.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                await older.execute("SELECT 1")
                yield
                await older.execute("ROLLBACK")

        async def closed(store: ReadModelStore) -> None:
            await store.close()  # closing vacuums nothing

        yield _ReadModelFiles(opened_postgres, pages, snapshot, closed)


@pytest.fixture
async def erasure_store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = await SqliteEventStore.open(
        tmp_path / "events.db", EventRegistry([NoteWritten, ClientErased])
    )
    yield store
    await store.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_erasure_not_forgotten_after_its_commit_is_by_the_next_catch_up(
    backend: str, tmp_path: Path, erasure_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure's batch commits (its position past it), then forgetting what it overwrote
    fails while an older snapshot stays open: ``follow`` catches up again, from past the
    erasure, and on PostgreSQL nothing vacuumed again (the value stayed in a dead row version
    until autovacuum came by). The erasure's mark, committed with its batch, makes the next
    catch-up forget first."""
    from casetrail_platform.projections import postgres as pg_read_models

    monkeypatch.setattr(sqlite_read_models, "FORGET_PATIENCE_SECONDS", 0.3)
    monkeypatch.setattr(pg_read_models, "FORGET_PATIENCE_SECONDS", 0.3)
    canary = "CANARY-" + "p" * 40
    projection = LastNotes()
    async with _read_model_files(backend, tmp_path) as files:
        read_models = await files.open()
        try:
            await erasure_store.append("case-1", [note("case-1", canary)], NO_STREAM)
            await catch_up(erasure_store, read_models, projection)
            async with files.older_snapshot():
                await erasure_store.append("client-1", [_erasure("case-1")], NO_STREAM)
                # The forgetting fails; the catch-up goes on all the same (it used to fail).
                await catch_up(erasure_store, read_models, projection)
                assert await read_models.forgetting_pending()
            assert await read_models.applied_position(projection.name) == 2
            read_models._forget_retry_at = 0.0  # PENDING_FORGET_RETRY_SECONDS later
            await catch_up(erasure_store, read_models, projection)  # follow's next round
            assert await read_models.get("last-notes", "case-1") == {"text": "[erased]"}
            assert canary.encode() not in await files.held()
        finally:
            await read_models.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_erasure_whose_process_ended_before_forgetting_is_forgotten_on_opening(
    backend: str, tmp_path: Path, erasure_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process ends between the erasure's commit and its forgetting: the read models,
    opened again, forget before anything reads them (no catch-up need come: a bus-fed store)."""
    canary = "CANARY-" + "e" * 40
    projection = LastNotes()

    class Ended(BaseException):
        """The process killed there."""

    async def killed(patience: float | None = None) -> None:
        raise Ended

    async with _read_model_files(backend, tmp_path) as files:
        read_models = await files.open()
        await erasure_store.append("case-1", [note("case-1", canary)], NO_STREAM)
        await catch_up(erasure_store, read_models, projection)
        await erasure_store.append("client-1", [_erasure("case-1")], NO_STREAM)
        with monkeypatch.context() as patched:
            patched.setattr(read_models, "forget_overwritten", killed)
            with pytest.raises(Ended):
                await catch_up(erasure_store, read_models, projection)
        assert canary.encode() in await files.held()
        await files.ended(read_models)
        reopened = await files.open()
        try:
            assert canary.encode() not in await files.held()
            assert await reopened.get("last-notes", "case-1") == {"text": "[erased]"}
        finally:
            await reopened.close()
