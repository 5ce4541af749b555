"""The keyring's cache checks that decide whether the key table and the KEK must be asked (then
from a worker thread), and a consumer fetching the keys of what it polled before decoding."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.bus.deadletter import DeadLetter
from casetrail_platform.bus.delivery import Deliverer
from casetrail_platform.bus.message import BusMessage, as_headers
from casetrail_platform.bus.retry import Backoff, RetryPolicy
from casetrail_platform.keys.fields import FieldProtection, named_keys
from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.keyring import ClientKeyring, KeysNotCachedError
from casetrail_platform.keys.off_loop import decoding
from casetrail_platform.keys.port import DataKeyTable
from casetrail_platform.store.rows import recorded_from_new
from events.catalog.cases import CaseOpened
from events.cloudevents import to_kafka_binary
from events.envelope import EventMetadata, NewEvent
from events.registry import encode
from tests.contract.bus_conftest import Recorder
from tests.support.sample_events import WORKER
from tests.unit.keys.support import (
    SENSITIVE_EXAMPLES,
    FakeKms,
    MemoryDataKeyTable,
    ThreadNotingTable,
    protected,
)


def _keyring(table: DataKeyTable, kms: FakeKms, cache_seconds: float = 60.0) -> ClientKeyring:
    return ClientKeyring(kms, table, cache_seconds=cache_seconds)


def test_an_expired_entry_is_checked_with_the_table_without_unwrapping_again() -> None:
    kms, table = FakeKms(), MemoryDataKeyTable()
    keyring = _keyring(table, kms, cache_seconds=0)  # every look-up is past its expiry
    version, key = keyring.encryption_key("client-1")

    for _ in range(3):
        assert keyring.decryption_key("client-1", version) is key
    assert kms.unwraps == 1

    stored = table.keys[("client-1", version)]
    table.keys[("client-1", version)] = replace(stored, wrapped=kms.wrap(b"k" * 32, b"other"))
    with pytest.raises(Exception):  # noqa: B017,PT011 - re-wrapped bytes: unwrapped again
        keyring.decryption_key("client-1", version)
    assert kms.unwraps == 2

    table.keys[("client-1", version)] = stored
    table.destroy("client-1")
    assert keyring.decryption_key("client-1", version) is None


def test_an_erasure_is_asked_of_the_table_and_remembered_a_live_key_never() -> None:
    """What a decoder asks before taking data published erased (``FieldProtection.
    client_erased``): a key this keyring caches live may have been destroyed elsewhere."""
    keyring = _keyring(table := MemoryDataKeyTable(), FakeKms())
    assert not keyring.is_erased("client-1")
    assert table.current("client-1") is None  # asking creates no key
    keyring.encryption_key("client-1")
    with pytest.raises(KeysNotCachedError):
        keyring.is_erased("client-1", cached_only=True)
    table.destroy("client-1")  # by another process: this cache still holds the key live
    assert keyring.is_erased("client-1")
    assert keyring.is_erased("client-1", cached_only=True)  # destroyed is for good


def test_sealing_from_the_cache_alone_refuses_until_key_and_binding_are_cached() -> None:
    table = MemoryDataKeyTable()
    registry = protected(FakeKms(), table)
    opened = next(e for e in SENSITIVE_EXAMPLES if isinstance(e, CaseOpened))
    data = encode(opened)
    with pytest.raises(KeysNotCachedError):  # no key yet, case not bound
        registry.seal(opened, uuid4(), data, cached_only=True)
    assert table.keys == {}
    assert table.cases == {}

    registry.seal(opened, uuid4(), data)

    assert registry.seal(opened, uuid4(), data, cached_only=True) != data
    other_case = opened.model_copy(update={"case_id": "case-never-seen"})
    with pytest.raises(KeysNotCachedError):  # binding it writes the table
        registry.seal(other_case, uuid4(), encode(other_case), cached_only=True)
    assert "case-never-seen" not in table.cases


def test_the_keys_to_fetch_are_those_the_sealed_values_name_and_the_cache_lacks() -> None:
    kms, table = FakeKms(), MemoryDataKeyTable()
    writer = protected(kms, table)
    sealed = [writer.seal(event, uuid4(), encode(event)) for event in SENSITIVE_EXAMPLES]
    owners = {key for key in table.keys if table.keys[key].wrapped is not None}
    reader = FieldProtection(_keyring(table, kms))

    assert reader.keys_to_fetch([*sealed, None, b'{"text":"plain"}']) == owners

    reader.fetch_keys(sorted(owners))
    assert reader.keys_to_fetch(sealed) == set()


def test_free_text_quoting_sealed_values_names_no_key_to_fetch() -> None:
    """A reason holding ``"ct1~x0~1~`` (JSON escapes the quote: ``\\"ct1~x0~1~``) was taken
    for a sealed value's key: each read asked the table for every one, 45 in 500 characters,
    and a folded state of the stream was never kept (no such key is ever live)."""
    kms, table = FakeKms(), MemoryDataKeyTable()
    writer = protected(kms, table)
    assigned = next(e for e in SENSITIVE_EXAMPLES if e.event_type == "casetrail.case.assigned")
    quoting = "".join(f'"ct1~x{n}~1~' for n in range(45))[:500]
    keyed = json.dumps({f"ct1~x{n}~1~abc": n for n in range(3)}).encode()  # keys, not values
    quoted = assigned.updated(reason=quoting)
    sealed = writer.seal(quoted, uuid4(), encode(quoted))
    owners = {key for key in table.keys if table.keys[key].wrapped is not None}
    reader = FieldProtection(_keyring(table, kms))

    assert named_keys([sealed, keyed]) == owners
    assert reader.keys_to_fetch([sealed, keyed]) == owners
    reader.fetch_keys(sorted(owners))
    assert reader.keys_live(named_keys([sealed, keyed]))


@pytest.mark.parametrize("away_for", [0, 3], ids=["keys at hand", "key table away a while"])
async def test_a_consumer_fetches_the_keys_of_what_it_polled_off_the_event_loop(
    away_for: int,
) -> None:
    kms, table = FakeKms(), ThreadNotingTable()
    writer = protected(kms, table)
    opened = next(e for e in SENSITIVE_EXAMPLES if isinstance(e, CaseOpened))
    new = NewEvent(opened, EventMetadata("casetrail/test", WORKER, datetime.now(UTC), uuid4()))
    sealed = writer.seal(opened, new.event_id, encode(opened))
    record = recorded_from_new(new, f"case-{opened.case_id}", 1, 1, datetime.now(UTC), sealed)
    key, headers, value = to_kafka_binary(record)
    reader = protected(kms, table)  # another service's keyring: nothing cached
    recorder = Recorder()
    letters: list[DeadLetter] = []

    async def keep(letter: DeadLetter) -> bool:
        letters.append(letter)
        return True

    fast = Backoff(initial=0.001, maximum=0.001)
    policy = RetryPolicy(backoff=fast, max_attempts=2, outage_backoff=fast)
    deliverer = Deliverer("g", recorder, reader, policy, keep)
    table.threads.clear()
    table.away_for = away_for

    message = BusMessage("t", 0, 0, key, value, as_headers(headers))
    assert await deliverer.deliver([message], asyncio.Event()) == 1

    assert letters == []
    assert [r.event for r in recorder.deliveries] == [opened]
    assert len(table.threads) > away_for
    assert threading.get_ident() not in table.threads


def test_a_new_kek_file_is_created_once_by_threads_racing_to_use_it(tmp_path: Path) -> None:
    """Keyrings create keys in worker threads now: the first two new clients of a fresh data
    dir once raced to create the KEK file under one temporary name (FileNotFoundError)."""
    path = tmp_path / "keys" / KEK_FILE_NAME
    keks = [FileKeyEncryptionKey(path) for _ in range(4)]
    start = threading.Barrier(16)

    def wrap(number: int) -> bytes:
        start.wait()
        return keks[number % len(keks)].wrap(b"k" * 32, b"context")

    with ThreadPoolExecutor(16) as pool:
        wrapped = list(pool.map(wrap, range(16)))

    assert {kek.key_id for kek in keks} == {keks[0].key_id}
    assert all(keks[0].unwrap(each, b"context") == b"k" * 32 for each in wrapped)
    assert [p.name for p in path.parent.iterdir()] == [KEK_FILE_NAME]


async def test_decoding_opens_from_the_cache_here_and_asks_the_table_from_a_worker() -> None:
    kms, table = FakeKms(), ThreadNotingTable()
    writer = protected(kms, table)
    opened = next(e for e in SENSITIVE_EXAMPLES if isinstance(e, CaseOpened))
    event_id = uuid4()
    sealed = writer.seal(opened, event_id, encode(opened))
    reader = protected(kms, table)  # nothing cached
    table.threads.clear()

    def decode() -> object:
        return reader.decode(opened.event_type, opened.schema_version, sealed, event_id)

    assert await decoding(decode) == opened
    assert table.threads
    assert threading.get_ident() not in table.threads

    table.threads.clear()
    assert await decoding(decode) == opened  # cached now: decoded here, nothing asked
    assert table.threads == []
