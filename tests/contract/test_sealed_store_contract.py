"""Sealed sensitive fields on both event stores: ciphertext at rest, plaintext to the service,
safe retries despite random nonces, and the erasure marker once the client's key is gone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.errors import ConcurrencyError, DuplicateEventIdError
from casetrail_platform.keys.fields import FieldProtection
from casetrail_platform.keys.file_kek import KEK_FILE_NAME
from casetrail_platform.keys.hosting import file_kek
from casetrail_platform.keys.keyring import CASE_OWNER_PREFIX, ClientErasedError, ClientKeyring
from casetrail_platform.keys.port import DataKeyTable
from casetrail_platform.keys.rotation import rotate_kek
from casetrail_platform.ledger.export import canonical_of_record
from casetrail_platform.store.port import NO_STREAM, EventStore, drain
from casetrail_platform.store.sqlite import SqliteEventStore
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from events.sealed_values import ERASED_TEXT
from tests.contract.conftest import StoreOpener
from tests.support.sample_events import note, sample_registry

CANARY = "CANARY-7d41-sealed-note"


def _files_under(directory: Path, pattern: str) -> bytes:
    return b"".join(path.read_bytes() for path in directory.glob(pattern))


async def _raw_data(store: EventStore, tmp_path: Path) -> bytes:
    if isinstance(store, SqliteEventStore):
        return _files_under(tmp_path, "events.db*")
    rows: list[RecordedEvent] = [recorded async for recorded in drain(store)]
    return b"".join(recorded.data for recorded in rows)


async def test_sensitive_values_are_stored_sealed_and_read_back_opened(
    sealed: tuple[EventStore, EventRegistry, DataKeyTable], open_store: StoreOpener, tmp_path: Path
) -> None:
    store, registry, _ = sealed
    appended = await store.append("case-1", [note("1", CANARY)], NO_STREAM)

    assert CANARY.encode() not in await _raw_data(store, tmp_path)
    assert b"ct1~" + CASE_OWNER_PREFIX.encode() + b"1~1~" in appended[0].data
    other = await open_store(registry)
    [read] = await other.read_stream("case-1")
    assert read.event.text == CANARY  # type: ignore[attr-defined]
    assert read.data == appended[0].data
    assert canonical_of_record(read) == canonical_of_record(appended[0])


async def test_a_retried_append_is_recognised_although_each_seal_differs(
    sealed: tuple[EventStore, EventRegistry, DataKeyTable],
) -> None:
    store, _, _ = sealed
    batch = [note("1", CANARY), note("1", "second")]
    first = await store.append("case-1", batch, NO_STREAM)

    again = await store.append("case-1", batch, NO_STREAM)

    assert [r.event_id for r in again] == [r.event_id for r in first]
    assert [r.event for r in again] == [r.event for r in first]
    impostor = note("2", "something else", event_id=batch[0].event_id)
    with pytest.raises((DuplicateEventIdError, ConcurrencyError)):
        await store.append("case-2", [impostor], NO_STREAM)
    assert len([e async for e in drain(store)]) == 2


async def test_after_the_key_is_destroyed_the_value_reads_as_erased_and_the_bytes_stay(
    sealed: tuple[EventStore, EventRegistry, DataKeyTable], open_store: StoreOpener
) -> None:
    store, registry, table = sealed
    [appended] = await store.append("case-1", [note("1", CANARY)], NO_STREAM)
    assert registry.protection is not None

    assert registry.protection.keyring.destroy(CASE_OWNER_PREFIX + "1") == 1
    assert registry.protection.keyring.destroy(CASE_OWNER_PREFIX + "1") == 0

    [read] = await (await open_store(registry)).read_stream("case-1")
    assert read.event.text == ERASED_TEXT  # type: ignore[attr-defined]
    assert read.event.words == appended.event.words  # type: ignore[attr-defined]
    assert read.data == appended.data
    stored = table.version(CASE_OWNER_PREFIX + "1", 1)
    assert stored is not None
    assert stored.wrapped is None
    assert stored.destroyed_at is not None


async def test_an_owner_erased_before_it_had_a_key_never_gets_one(
    sealed: tuple[EventStore, EventRegistry, DataKeyTable],
) -> None:
    """A client erased while it had no key yet (nothing sealed for it so far): what a process
    seals for it afterwards, even one that looked before the erasure, is refused, never
    sealed under a fresh live key."""
    store, registry, table = sealed
    assert registry.protection is not None
    keyring = registry.protection.keyring
    owner = CASE_OWNER_PREFIX + "3"

    assert keyring.destroy(owner) == 0
    assert keyring.destroy(owner) == 0  # idempotent
    with pytest.raises(ClientErasedError):
        keyring.encryption_key(owner)
    # A process that found no key before the erasure and creates one now gets the tombstone.
    stored = table.create(owner, 1, b"late wrapped key", "kek-late")
    assert stored.wrapped is None
    with pytest.raises(ClientErasedError):
        await store.append("case-3", [note("3", CANARY)], NO_STREAM)
    assert [e async for e in drain(store)] == []
    assert table.live_keys_by_kek() == {}


async def test_values_sealed_before_a_kek_rotation_open_during_and_after_it(
    sealed: tuple[EventStore, EventRegistry, DataKeyTable], open_store: StoreOpener, tmp_path: Path
) -> None:
    store, _, table = sealed
    appended = await store.append("case-1", [note("1", CANARY), note("1", "second")], NO_STREAM)
    await store.append("case-2", [note("2", "erased one")], NO_STREAM)
    old = tmp_path / "keys" / KEK_FILE_NAME
    new = tmp_path / "kek-2.bin"
    ClientKeyring(file_kek(old), table).destroy(CASE_OWNER_PREFIX + "2")

    assert rotate_kek(table, file_kek(new, [old]), batch_size=1).done

    for kek in (file_kek(new, [old]), file_kek(new)):  # the old KEK kept, then retired
        keyring = ClientKeyring(kek, table, cache_seconds=0)
        reader = await open_store(sample_registry().protected(FieldProtection(keyring)))
        read = await reader.read_stream("case-1")
        assert [r.event.text for r in read] == [CANARY, "second"]  # type: ignore[attr-defined]
        assert [r.data for r in read] == [r.data for r in appended]
        [erased] = await reader.read_stream("case-2")
        assert erased.event.text == ERASED_TEXT  # type: ignore[attr-defined]


async def test_the_key_table_and_the_kek_are_asked_from_worker_threads_never_the_event_loop(
    sealed: tuple[EventStore, EventRegistry, DataKeyTable],
    open_store: StoreOpener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new client's key is created and wrapped, a reader with an empty cache looks the key
    up and unwraps it: with PostgreSQL and a KMS each is a network round trip, which on the
    event loop would stall every call the process serves."""
    store, registry, table = sealed
    assert registry.protection is not None
    kek = registry.protection.keyring.kek
    asked: list[tuple[str, int]] = []
    for target, names in ((table, TABLE_CALLS), (kek, ("wrap", "unwrap"))):
        for name in names:
            monkeypatch.setattr(target, name, _noting_thread(name, getattr(target, name), asked))

    appended = await store.append("case-1", [note("1", CANARY), note("1", "second")], NO_STREAM)
    fresh = ClientKeyring(kek, table)  # another process's keyring: nothing cached
    reader = await open_store(sample_registry().protected(FieldProtection(fresh)))
    read = await reader.read_stream("case-1")
    assert [r.event.text for r in read] == [CANARY, "second"]  # type: ignore[attr-defined]
    following = await open_store(
        sample_registry().protected(FieldProtection(ClientKeyring(kek, table)))
    )
    assert [r.data for r in await following.read_all()] == [r.data for r in appended]
    assert (await following.read_all())[0].event.text == CANARY  # type: ignore[attr-defined]

    assert {"client_of_case", "current", "create", "wrap", "version", "unwrap"} <= {
        name for name, _ in asked
    }
    loop_thread = threading.get_ident()
    assert [name for name, thread in asked if thread == loop_thread] == []


TABLE_CALLS = ("current", "version", "create", "bind_case", "client_of_case")


def _noting_thread(
    name: str, method: Callable[..., Any], asked: list[tuple[str, int]]
) -> Callable[..., Any]:
    def noted(*args: Any) -> Any:
        asked.append((name, threading.get_ident()))
        return method(*args)

    return noted
