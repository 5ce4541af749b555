"""Decision states kept folded between commands (``casetrail_platform.decide.execute_folded``),
on both stores: a command reads only what came after the state it finds, and its answers stay
``execute``'s under races between store objects (replicas), appends made behind the cache's
back, retries, stated versions and erasure."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from casetrail_platform import decide, folded
from casetrail_platform.commands import (
    CommandContext,
    IdempotencyKeyReused,
    RuleBroken,
    VersionConflict,
)
from casetrail_platform.decide import execute_folded, snapshots_written
from casetrail_platform.folded import Fold, FoldCache, Snapshots
from casetrail_platform.keys.fields import FieldProtection
from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.keyring import CASE_OWNER_PREFIX, ClientKeyring
from casetrail_platform.keys.port import DataKeyTable
from casetrail_platform.keys.postgres import PostgresDataKeyTable
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from casetrail_platform.store.port import NO_STREAM, EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import CaseEvent
from events.envelope import RecordedEvent
from events.sealed_values import ERASED_TEXT
from tests.contract.conftest import StoreOpener
from tests.contract.folded_notes import Notes, evolve_notes, folded_events
from tests.support.sample_events import WORKER, NoteWritten, note, sample_registry
from tests.support.servers import postgres_dsn

STREAM = "case-1"
LIMIT = 10
CANARY = "CANARY-41c2-folded-note"


NOTES = Fold("test.notes.v1", Notes, evolve_notes)


@pytest.fixture(autouse=True)
def _fresh_count() -> None:
    folded_events.clear()


def _one_note(text: str) -> list[CaseEvent]:
    return [NoteWritten(case_id="1", text=text, words=len(text.split()))]


def _up_to_limit(text: str) -> Callable[[Notes], list[CaseEvent]]:
    def decide_on(state: Notes) -> list[CaseEvent]:
        if len(state.texts) >= LIMIT:
            raise RuleBroken("LIMIT", f"{LIMIT} notes at most")
        return _one_note(text)

    return decide_on


async def _command(
    store: EventStore, key: str, text: str, *, expected: int | None = None
) -> list[RecordedEvent]:
    context = CommandContext(WORKER, key, expected_version=expected, request_fingerprint=text)
    return await execute_folded(store, "svc", context, STREAM, NOTES, lambda _: _one_note(text))


async def _state(store: EventStore) -> Notes:
    async with decide.folded(store, STREAM, NOTES) as state:
        return Notes(state.version, list(state.state.texts))


async def test_a_command_folds_only_what_was_appended_since_the_state_it_finds(
    event_store: EventStore,
) -> None:
    for number in range(5):
        await _command(event_store, f"k-{number}", f"note {number}")

    assert await _state(event_store) == Notes(5, [f"note {n}" for n in range(5)])
    # Each event folded once (re-reading the stream would fold 1, 1, 2, 1, 2, 3, ...).
    assert folded_events == [1, 2, 3, 4, 5]


async def test_a_store_appending_behind_the_cache_is_read_before_deciding(
    open_store: StoreOpener,
) -> None:
    """Another replica's appends (here another store object on the same data) are not in the
    kept state; the next command reads them before it decides."""
    mine, replica = await open_store(), await open_store()
    await _command(mine, "k-1", "mine 1")
    await replica.append(STREAM, [note("1", "replica 2"), note("1", "replica 3")], 1)

    seen: list[Notes] = []

    def decide_on(state: Notes) -> list[CaseEvent]:
        seen.append(Notes(state.version, list(state.texts)))
        return _one_note("mine 4")

    context = CommandContext(WORKER, "k-2")
    [recorded] = await execute_folded(mine, "svc", context, STREAM, NOTES, decide_on)

    assert seen == [Notes(3, ["mine 1", "replica 2", "replica 3"])]
    assert recorded.sequence == 4
    assert folded_events == [1, 2, 3]  # the first command's own event came back as a read


async def test_two_store_objects_racing_on_one_stream_never_pass_its_rule(
    open_store: StoreOpener,
) -> None:
    """Two replicas, each with its own kept state, race for the last places under a rule the
    state decides (at most ``LIMIT`` notes): the store's version check settles every race."""
    first, second = await open_store(), await open_store()

    async def one(store: EventStore, key: str) -> str:
        context = CommandContext(WORKER, key)
        try:
            await execute_folded(store, "svc", context, STREAM, NOTES, _up_to_limit(key))
        except RuleBroken:
            return "refused"
        return "recorded"

    outcomes = await asyncio.gather(
        *(
            one(store, f"{name}-{n}")
            for n in range(8)
            for name, store in [("a", first), ("b", second)]
        )
    )

    assert outcomes.count("recorded") == LIMIT
    assert outcomes.count("refused") == 16 - LIMIT
    assert [r.sequence for r in await first.read_stream(STREAM)] == list(range(1, LIMIT + 1))
    for store in (first, second):
        state = await _state(store)
        assert state.version == LIMIT
        assert len(set(state.texts)) == LIMIT


async def test_retries_reused_keys_and_stated_versions_answer_as_before(
    event_store: EventStore,
) -> None:
    [first] = await _command(event_store, "k-1", "first")

    assert await _command(event_store, "k-1", "first") == [first]
    with pytest.raises(IdempotencyKeyReused):
        await _command(event_store, "k-1", "another request")
    with pytest.raises(VersionConflict):
        await _command(event_store, "k-2", "second", expected=0)
    [second] = await _command(event_store, "k-3", "second", expected=1)
    assert second.sequence == 2
    assert await event_store.stream_version(STREAM) == 2


@pytest.fixture
async def keyring(
    open_store: StoreOpener, tmp_path: Path
) -> AsyncIterator[tuple[EventStore, ClientKeyring, DataKeyTable]]:
    probe = await open_store()
    table: DataKeyTable
    schema = f"keys_{uuid.uuid4().hex[:12]}"
    if isinstance(probe, SqliteEventStore):
        table = SqliteDataKeyTable(tmp_path / "keys" / "keys.db")
    else:
        table = PostgresDataKeyTable(postgres_dsn(), schema=schema)
    keys = ClientKeyring(FileKeyEncryptionKey(tmp_path / "keys" / KEK_FILE_NAME), table, 0.5)
    registry = sample_registry().protected(FieldProtection(keys))
    yield await open_store(registry), keys, table
    table.close()
    if not isinstance(probe, SqliteEventStore):
        with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_a_state_holding_opened_values_goes_with_the_key_destroyed_here(
    keyring: tuple[EventStore, ClientKeyring, DataKeyTable],
) -> None:
    store, keys, _ = keyring
    await _command(store, "k-1", CANARY)
    assert (await _state(store)).texts == [CANARY]
    assert len(decide._folds[store]) == 1

    keys.destroy(CASE_OWNER_PREFIX + "1")

    # Dropped at once, not at its next use: no plaintext of the client is left in the cache.
    assert len(decide._folds[store]) == 0
    assert (await _state(store)).texts == [ERASED_TEXT]


async def test_a_state_out_of_the_cache_when_its_key_is_destroyed_is_not_kept_back(
    keyring: tuple[EventStore, ClientKeyring, DataKeyTable],
) -> None:
    """A command holding the state (folding, deciding) while the erasure destroys the key
    puts nothing back: the forgetting found nothing to drop, so keeping must check too."""
    store, keys, _ = keyring
    await _command(store, "k-1", CANARY)
    assert (await _state(store)).texts == [CANARY]
    cache = decide._folds[store]
    state, version, opened_with = cache.take(NOTES, STREAM)
    assert state.texts == [CANARY]

    keys.destroy(CASE_OWNER_PREFIX + "1")
    cache.keep(NOTES, STREAM, state, version, opened_with)

    assert len(cache) == 0


async def test_a_key_destroyed_by_another_process_is_found_before_the_state_is_used(
    keyring: tuple[EventStore, ClientKeyring, DataKeyTable], tmp_path: Path
) -> None:
    """Another process (its own keyring on the same key table) erases the client: this one
    has not consumed the erasure yet, and stops using the kept state once its cached key
    expires (0.5 s here), folding the stream anew, erased."""
    store, _, table = keyring
    await _command(store, "k-1", CANARY)
    assert (await _state(store)).texts == [CANARY]
    other = ClientKeyring(FileKeyEncryptionKey(tmp_path / "keys" / KEK_FILE_NAME), table)
    other.destroy(CASE_OWNER_PREFIX + "1")
    await asyncio.sleep(0.6)

    seen: list[list[str]] = []

    def decide_on(state: Notes) -> list[CaseEvent]:
        seen.append(list(state.texts))
        return []

    await execute_folded(store, "svc", CommandContext(WORKER, "k-2"), STREAM, NOTES, decide_on)
    assert seen == [[ERASED_TEXT]]


async def test_the_least_recently_used_states_go_first_when_the_bound_is_reached(
    event_store: EventStore,
) -> None:
    cache = FoldCache(sample_registry(), max_events=5)
    cache.keep(NOTES, "a", Notes(2), 2, frozenset())
    cache.keep(NOTES, "b", Notes(2), 2, frozenset())
    assert cache.take(NOTES, "a")[1] == 2  # used: now the most recent
    cache.keep(NOTES, "a", Notes(2), 2, frozenset())
    cache.keep(NOTES, "c", Notes(3), 3, frozenset())

    assert len(cache) == 2
    assert cache.take(NOTES, "b")[1] == 0
    assert cache.take(NOTES, "a")[1] == 2
    assert cache.take(NOTES, "c")[1] == 3

    # A stream whose state was evicted is folded from its start.
    await event_store.append(STREAM, [note("1", f"n {n}") for n in range(3)], NO_STREAM)
    assert (await _state(event_store)).version == 3
    decide._folds[event_store].take(NOTES, STREAM)
    assert await _state(event_store) == Notes(3, ["n 0", "n 1", "n 2"])


async def test_a_state_holding_opened_values_is_never_written_to_a_snapshot(
    keyring: tuple[EventStore, ClientKeyring, DataKeyTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when its fold asks for snapshots: the plaintext would outlive the erasure."""
    monkeypatch.setattr(folded, "SNAPSHOT_EVERY", 1)
    snapshotted = Fold(
        "test.notes-with-snapshots",
        Notes,
        evolve_notes,
        Snapshots(1, repr_bytes, lambda _: Notes()),
    )
    store, _, _ = keyring
    for number in range(3):
        context = CommandContext(WORKER, f"k-{number}")
        await execute_folded(
            store, "svc", context, STREAM, snapshotted, lambda _: _one_note(CANARY)
        )
    await snapshots_written(store)

    assert await store.load_snapshot(snapshotted.name, STREAM) is None


def repr_bytes(state: Notes) -> bytes:
    return repr(state).encode()
