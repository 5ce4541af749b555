"""``verify_store`` in worker processes, on SQLite and PostgreSQL: the ranges they hash are
taken in order, so a tampered store names the same first bad position as when one process reads
it, at every store size around a range's edge; a worker that dies is an error, never a hang.

Ranges of 16 (or 8) events stand in for ``verify.RANGE``, with ``PARALLEL_FROM`` lowered so
that a few dozen events go to two workers."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from pathlib import Path

import pytest

from casetrail_platform.ledger import verify
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import LedgerLog
from casetrail_platform.ledger.note import LogKeys, origin_of
from casetrail_platform.ledger.port import LedgerStore
from casetrail_platform.ledger.sqlite import SqliteLedgerStore
from casetrail_platform.ledger.store_ranges import StoreRanges
from casetrail_platform.ledger.verify import VerificationWorkerDied, verify_store
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.contract.conftest import StoreOpener
from tests.support.ledger import (
    KINDS,
    DyingRanges,
    append_notes,
    open_ledger,
    postgres_sql,
    tamper,
    tamper_ledger,
)
from tests.support.sample_events import sample_registry

SIZE = 40


@pytest.fixture(autouse=True)
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "PARALLEL_FROM", 1)
    monkeypatch.setattr(verify, "RANGE", 16)


async def signed_store(
    open_store: StoreOpener, tmp_path: Path, size: int
) -> tuple[EventStore, LedgerStore, LogKeys]:
    store = await open_store()
    signer = FileSigner(origin_of("test-agency", "test"), tmp_path / "keys" / "test.key")
    ledger_store = await open_ledger(store, tmp_path)
    log = LedgerLog(ledger_store, signer)
    await append_notes(store, size // 2, per_commit=5)
    await log.sign()
    await append_notes(store, size - size // 2)
    await log.sign()
    return store, ledger_store, await signer.verifier()


@pytest.mark.parametrize("kind", list(KINDS))
async def test_tampering_in_the_second_range_is_named_by_its_position(
    kind: str, open_store: StoreOpener, tmp_path: Path
) -> None:
    # Ranges [0, 16), [16, 32), [32, 40): the bad position 17 (or 31) is the second one's.
    statements, first_bad = KINDS[kind]
    store, ledger_store, verifier = await signed_store(open_store, tmp_path, SIZE)
    if not isinstance(store, SqliteEventStore):
        statements = postgres_sql(statements)
    await tamper(store, tmp_path, statements)
    if kind == "truncate and append":
        await append_notes(await open_store(), 15)
    try:
        in_workers = await verify_store(ledger_store, verifier, workers=2)
        here = await verify_store(ledger_store, verifier, workers=1)
    finally:
        await ledger_store.close()
    assert not in_workers.ok
    assert in_workers.first_bad_position == first_bad, in_workers.problem
    assert (in_workers.first_bad_position, in_workers.problem, in_workers.leaves) == (
        here.first_bad_position,
        here.problem,
        here.leaves,
    )


async def test_a_hole_is_named_and_an_edit_before_it_first(
    open_store: StoreOpener, tmp_path: Path
) -> None:
    store, ledger_store, verifier = await signed_store(open_store, tmp_path, SIZE)
    hole = ["DELETE FROM {table} WHERE position = 20"]
    try:
        await tamper(store, tmp_path, hole)
        for workers in (2, 1):
            checked = await verify_store(ledger_store, verifier, workers=workers)
            assert checked.first_bad_position == 20, checked.problem
            assert checked.problem == "position 20 is missing from the store"
            assert checked.leaves == 19
        # An edit before the hole, in the same range, is the first bad position.
        flip = KINDS["flip a byte"][0]
        await tamper(
            store, tmp_path, flip if isinstance(store, SqliteEventStore) else postgres_sql(flip)
        )
        for workers in (2, 1):
            checked = await verify_store(ledger_store, verifier, workers=workers)
            assert checked.first_bad_position == 17, checked.problem
    finally:
        await ledger_store.close()


@pytest.mark.parametrize("size", [1, 7, 8, 9, 15, 16, 17, 24, 25, 33])
async def test_stores_around_a_range_edge_verify(
    size: int, open_store: StoreOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "RANGE", 8)
    _, ledger_store, verifier = await signed_store(open_store, tmp_path, size)
    try:
        checked = await verify_store(ledger_store, verifier, workers=2)
    finally:
        await ledger_store.close()
    assert checked.ok, checked.problem
    assert (checked.leaves, checked.ledger_size, checked.checkpoints_checked) == (size, size, 2)


async def test_a_worker_that_dies_is_an_error_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    signer = FileSigner(origin_of("test-agency", "test"), tmp_path / "keys" / "test.key")
    ledger_store = await SqliteLedgerStore.open(tmp_path / "ledger.db", tmp_path / "events.db")
    try:
        await append_notes(store, SIZE, per_commit=10)
        await LedgerLog(ledger_store, signer).sign()
        dying = StoreRanges(DyingRanges(tmp_path / "events.db"), SIZE)
        monkeypatch.setattr(ledger_store, "store_ranges", lambda: nullcontext(dying))
        verifier = await signer.verifier()
        with pytest.raises(VerificationWorkerDied, match="positions 1 to 16 ended before"):
            await asyncio.wait_for(verify_store(ledger_store, verifier, workers=2), 60)
    finally:
        await ledger_store.close()
        await store.close()


# PostgreSQL only: SQLite's readers cannot share a snapshot (appends only add later positions,
# which no range reaches).
@pytest.mark.parametrize("open_store", ["postgres"], indirect=True)
async def test_postgres_workers_see_the_store_as_it_was_when_the_check_began(
    open_store: StoreOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One exported snapshot: an edit committed after the check began, in a range no worker
    # has read yet, is not seen (each worker on its own snapshot would name position 37).
    store, ledger_store, verifier = await signed_store(open_store, tmp_path, SIZE)
    read = ledger_store.leaf_hash_bytes
    edited: list[int] = []

    async def edit_once_begun(first_index: int, limit: int) -> bytes:
        if not edited:
            edited.append(37)
            flip = KINDS["flip a byte"][0][0].replace("position = 17", "position = 37")
            await tamper(store, tmp_path, postgres_sql([flip]))
        return await read(first_index, limit)

    monkeypatch.setattr(ledger_store, "leaf_hash_bytes", edit_once_begun)
    monkeypatch.setattr(verify, "RANGE", 4)  # 10 ranges: two workers have asked for 4
    try:
        during = await verify_store(ledger_store, verifier, workers=2)
        monkeypatch.setattr(ledger_store, "leaf_hash_bytes", read)
        after = await verify_store(ledger_store, verifier, workers=2)
    finally:
        await ledger_store.close()
    assert edited == [37]
    assert during.ok, during.problem
    assert during.leaves == SIZE
    assert after.first_bad_position == 37, after.problem


@pytest.mark.parametrize(("tile", "first_missing"), [(0, 1), (1, 257)])
async def test_leaves_deleted_from_the_ledger_name_the_first_position_without_one(
    tile: int, first_missing: int, open_store: StoreOpener, tmp_path: Path
) -> None:
    # 600 leaves in tiles of 256: one tile deleted, the ledger's size (its last tile) stays.
    # The leaves read stopped at the gap and were compared as far as they went: verified.
    store = await open_store()
    ledger_store = await open_ledger(store, tmp_path)
    signer = FileSigner(origin_of("test-agency", "test"), tmp_path / "keys" / "test.key")
    try:
        await append_notes(store, 600, per_commit=100)
        await LedgerLog(ledger_store, signer).sign()
        await tamper_ledger(
            store, tmp_path, [f"DELETE FROM {{tiles}} WHERE level = 0 AND idx = {tile}"]
        )
        verifier = await signer.verifier()
        for workers in (2, 1):
            checked = await verify_store(ledger_store, verifier, workers=workers)
            assert not checked.ok, workers
            assert checked.ledger_size == 600
            assert checked.first_bad_position == first_missing, checked.problem
            assert checked.problem == (
                f"the ledger covers 600 events but holds no leaf hash for position"
                f" {first_missing} (deleted from its tiles)"
            )
            assert checked.leaves == first_missing - 1
    finally:
        await ledger_store.close()
