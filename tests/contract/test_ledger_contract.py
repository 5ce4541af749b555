"""The ledger storage contract (casetrail_platform/ledger/port.py), run on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.canonical import canonical_row, parse_canonical
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import (
    LedgerLog,
    LedgerTampered,
    inclusion_subtrees_of,
    prove_inclusion,
)
from casetrail_platform.ledger.note import Checkpoint, open_checkpoint, origin_of
from casetrail_platform.ledger.port import LedgerConflict, StoredCheckpoint
from casetrail_platform.ledger.verify import verify_store
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.rows import COLUMNS
from tests.contract.conftest import StoreOpener
from tests.support.ledger import append_notes, open_ledger, tamper, tamper_ledger, wipe_ledger


@pytest.fixture
async def ledger(
    event_store: EventStore, tmp_path: Path
) -> AsyncIterator[tuple[EventStore, LedgerLog]]:
    store = await open_ledger(event_store, tmp_path)
    signer = FileSigner(origin_of("test-agency", "test"), tmp_path / "keys" / "test.key")
    yield event_store, LedgerLog(store, signer)
    await store.close()


async def stored_rows(store: EventStore) -> list[tuple[Any, ...]]:
    from casetrail_platform.store.sqlite import SqliteEventStore

    if isinstance(store, SqliteEventStore):
        return await store.read(
            lambda c: c.execute(f"SELECT {COLUMNS} FROM stored_events ORDER BY position").fetchall()
        )

    from tests.support.servers import postgres_dsn

    schema = store._schema  # type: ignore[attr-defined]
    async with await psycopg.AsyncConnection.connect(postgres_dsn()) as connection:
        cursor = await connection.execute(
            f'SELECT {COLUMNS} FROM "{schema}".stored_events ORDER BY position'
        )
        return await cursor.fetchall()


async def test_leaves_hash_the_canonical_stored_bytes_the_same_on_every_backend(
    ledger: tuple[EventStore, LedgerLog],
) -> None:
    store, log = ledger
    await append_notes(store, 5, per_commit=2)
    rows = await stored_rows(store)
    leaves = await log.store.store_leaves(0, 100)
    assert [position for position, _ in leaves] == [1, 2, 3, 4, 5]
    for row, (_, leaf) in zip(rows, leaves, strict=True):
        canonical = canonical_row(row)
        assert merkle.leaf_hash(canonical) == leaf
        fields = parse_canonical(canonical)
        assert fields[1] == str(row[0]).encode()
        assert fields[-1] == bytes(row[6])


_ODD_VALUES = {
    # (SQLite, PostgreSQL) values for the same stored bytes
    "stream": ("'case-ünïcode'", "'case-ünïcode'"),
    "actor_id": ("'worker-åsa ✓'", "'worker-åsa ✓'"),
    "subject": ("'client-ø'", "'client-ø'"),
    "causation_id": ("NULL", "NULL"),
    "data": ("x'7b00ff0a2c3a7d'", "'\\x7b00ff0a2c3a7d'::bytea"),
    "occurred_at": ("-1", "'epoch'::timestamptz - interval '1 microsecond'"),
    "recorded_at": ("4102444800000001", "'2100-01-01 00:00:00.000001+00'"),
}


async def test_leaves_of_odd_stored_values_are_the_canonical_bytes_in_and_outside_workers(
    ledger: tuple[EventStore, LedgerLog], tmp_path: Path
) -> None:
    """Non-ASCII text (lengths in bytes), no causation, NUL, 0xff, ',' and ':' in the data,
    times before 1970 and after 2038: the SQL that builds the leaf (the server hashes it on
    PostgreSQL) and a verify-store worker's reader hash exactly ``canonical_row``'s bytes."""
    from casetrail_platform.store.sqlite import SqliteEventStore

    store, log = ledger
    await append_notes(store, 3)
    backend = 0 if isinstance(store, SqliteEventStore) else 1
    assignments = ", ".join(f"{name} = {values[backend]}" for name, values in _ODD_VALUES.items())
    await tamper(store, tmp_path, [f"UPDATE {{table}} SET {assignments} WHERE position = 2"])
    rows = await stored_rows(store)
    assert bytes(rows[1][6]) == b"{\x00\xff\n,:}"
    assert rows[1][11] is None
    expected = [(row[0], merkle.leaf_hash(canonical_row(row))) for row in rows]
    assert await log.store.store_leaves(0, 100) == expected
    async with log.store.store_ranges() as ranges:
        assert ranges is not None
        hash_range, close = ranges.reader.open()
        try:
            assert hash_range(0, 3) == (b"".join(leaf for _, leaf in expected), None)
        finally:
            close()


async def test_catch_up_stores_leaves_and_subtrees_and_roots_match(
    ledger: tuple[EventStore, LedgerLog],
) -> None:
    store, log = ledger
    await append_notes(store, 13, per_commit=3)
    assert await log.catch_up() == 13
    await append_notes(store, 7)
    assert await log.catch_up() == 20
    leaves = [leaf for _, leaf in await log.store.store_leaves(0, 100)]
    assert await log.store.leaf_hashes(0, 100) == leaves
    for size in range(1, 21):
        assert await log.root(size) == merkle.root_of(leaves[:size])
    proof = await log.inclusion_proof(7, 20)
    merkle.verify_inclusion(6, 20, leaves[6], proof.hashes, merkle.root_of(leaves))
    consistency = await log.consistency_proof(5, 20)
    merkle.verify_consistency(
        5, 20, merkle.root_of(leaves[:5]), merkle.root_of(leaves), consistency
    )


async def test_append_refuses_a_ledger_not_at_the_given_size(
    ledger: tuple[EventStore, LedgerLog],
) -> None:
    _, log = ledger
    with pytest.raises(LedgerConflict):
        await log.store.append(3, [(0, 3, [b"\x00" * 32])])
    with pytest.raises(LedgerConflict):
        await log.store.append(256, [(0, 256, [b"\x00" * 32])])  # a gap at a tile's start
    assert await log.store.size() == 0
    await log.store.append(0, [(0, 0, [b"\x01" * 32])])
    with pytest.raises(LedgerConflict):
        await log.store.append(0, [(0, 0, [b"\x02" * 32])])  # a replica went first
    assert await log.store.leaf_hashes(0, 5) == [b"\x01" * 32]


async def test_tiles_across_tile_boundaries_give_every_root_and_proof(
    ledger: tuple[EventStore, LedgerLog],
) -> None:
    """Batches that end inside a tile and cross into the next, on level 0 and level 8."""
    store, log = ledger
    sizes = []
    for count in (1, 254, 3, 300, 1, 10, 520):  # 1,089 events: three and a bit leaf tiles
        await append_notes(store, count, per_commit=50)
        sizes.append(await log.catch_up())
    leaves = [leaf for _, leaf in await log.store.store_leaves(0, 2000)]
    assert len(leaves) == sizes[-1] == 1089
    assert await log.store.leaf_hashes(0, 2000) == leaves
    assert await log.store.leaf_hashes(250, 300) == leaves[250:550]
    for size in (1, 255, 256, 257, 511, 512, 513, 558, 1024, 1025, 1089):
        assert await log.root(size) == merkle.root_of(leaves[:size]), size
    root = merkle.root_of(leaves)
    for position in (1, 256, 257, 700, 1024, 1089):
        proof = await log.inclusion_proof(position, 1089)
        assert proof.leaf_hash == leaves[position - 1]
        merkle.verify_inclusion(position - 1, 1089, proof.leaf_hash, proof.hashes, root)
    # An export's proofs: the subtrees of many read at once give each the same proof.
    shared = await inclusion_subtrees_of(log.store, range(1, 1090), 1000)
    for position in (1, 256, 257, 700, 1000):
        alone = await log.inclusion_proof(position, 1000)
        assert await prove_inclusion(log.store, position, 1000, shared) == alone
    for old_size in (1, 255, 256, 600, 1088):
        consistency = await log.consistency_proof(old_size, 1089)
        merkle.verify_consistency(
            old_size, 1089, merkle.root_of(leaves[:old_size]), root, consistency
        )


async def test_a_ledger_of_one_row_per_subtree_moves_into_tiles_on_open(
    ledger: tuple[EventStore, LedgerLog], tmp_path: Path
) -> None:
    """Ledgers written before tiles (``ledger_nodes``) keep their hashes and proofs."""
    store, log = ledger
    await append_notes(store, 300, per_commit=100)
    leaves = [leaf for _, leaf in await log.store.store_leaves(0, 1000)]
    accumulator = merkle.RootAccumulator()
    nodes = [node for leaf in leaves for node in accumulator.append_completing(leaf)]
    await _write_old_ledger(store, tmp_path, nodes)
    reopened = await open_ledger(store, tmp_path)
    try:
        assert await reopened.size() == 300
        assert await reopened.leaf_hashes(0, 1000) == leaves
        again = LedgerLog(reopened, log.signer)
        assert await again.root(300) == merkle.root_of(leaves)
        await append_notes(store, 5)
        assert await again.catch_up() == 305
        assert await again.root(305) == merkle.root_of(
            leaves + [leaf for _, leaf in await reopened.store_leaves(300, 10)]
        )
    finally:
        await reopened.close()


async def _write_old_ledger(
    store: EventStore, tmp_path: Path, nodes: list[tuple[merkle.SubtreeKey, bytes]]
) -> None:
    from casetrail_platform.store.sqlite import SqliteEventStore

    create = (
        "CREATE TABLE ledger_nodes (level integer, idx bigint, hash {blob},"
        " PRIMARY KEY (level, idx))"
    )
    rows = [(level, index, digest) for (level, index), digest in nodes]
    if isinstance(store, SqliteEventStore):
        import sqlite3

        connection = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        connection.execute("DROP TABLE ledger_tiles")
        connection.execute(create.format(blob="BLOB"))
        connection.executemany("INSERT INTO ledger_nodes VALUES (?, ?, ?)", rows)
        connection.close()
        return

    from tests.support.servers import postgres_dsn

    schema = store._schema  # type: ignore[attr-defined]
    async with await psycopg.AsyncConnection.connect(
        postgres_dsn(), autocommit=True, options=f"-c search_path={schema}"
    ) as db:
        await db.execute("DROP TABLE ledger_tiles")
        await db.execute(create.format(blob="bytea"))
        async with db.cursor() as cursor:
            await cursor.executemany("INSERT INTO ledger_nodes VALUES (%s, %s, %s)", rows)


async def test_checkpoints_are_signed_stored_and_never_repeated(
    ledger: tuple[EventStore, LedgerLog],
) -> None:
    store, log = ledger
    await append_notes(store, 4)
    first = await log.sign()
    assert first.size == 4
    assert await log.sign() == first
    await append_notes(store, 2)
    second = await log.sign()
    checkpoint = open_checkpoint(second.note, await log.verifier())
    assert (checkpoint.size, checkpoint.origin) == (6, "casetrail/test-agency/test")
    assert checkpoint.root == await log.root(6)
    assert await log.store.checkpoints() == [first, second]
    assert await log.store.checkpoints(after_size=4) == [second]
    assert await log.latest() == second


async def test_bad_proof_requests_name_what_is_wrong(ledger: tuple[EventStore, LedgerLog]) -> None:
    store, log = ledger
    await append_notes(store, 3)
    await log.catch_up()
    with pytest.raises(merkle.ProofError, match="beyond the ledger's current size 3"):
        await log.inclusion_proof(1, 4)
    with pytest.raises(merkle.ProofError, match="position 4 is not in a tree of size 3"):
        await log.inclusion_proof(4, 3)
    with pytest.raises(merkle.ProofError, match="wrong order"):
        await log.consistency_proof(3, 2)
    with pytest.raises(merkle.ProofError, match="beyond"):
        await log.consistency_proof(1, 9)


async def test_the_log_refuses_to_sign_over_a_store_changed_behind_it(
    ledger: tuple[EventStore, LedgerLog], open_store: StoreOpener
) -> None:
    store, log = ledger
    await append_notes(store, 3)
    await log.sign()
    # A forged checkpoint row for a size the ledger does not hold: never signed over.
    await log.store.save_checkpoint(
        StoredCheckpoint(
            9, await log.signer.sign_checkpoint(Checkpoint(log.origin, 9, merkle.EMPTY_ROOT))
        )
    )
    with pytest.raises(LedgerTampered, match="holds 3 events but signed 9"):
        await log.sign()


async def test_the_log_refuses_to_sign_over_a_newest_checkpoint_its_key_did_not_sign(
    ledger: tuple[EventStore, LedgerLog], tmp_path: Path
) -> None:
    # Written into the table by someone holding the database, not the key (or a replaced
    # key's): told as tampering, where a bare NoteError said neither what nor why.
    store, log = ledger
    await append_notes(store, 3)
    await log.sign()
    await append_notes(store, 2)
    await log.catch_up()
    forger = FileSigner(log.origin, tmp_path / "forger.key")
    forged = await forger.sign_checkpoint(Checkpoint(log.origin, 5, await log.root(5)))
    await log.store.save_checkpoint(StoredCheckpoint(5, forged))
    with pytest.raises(LedgerTampered, match=r"newest checkpoint \(size 5\) is not signed by"):
        await log.sign()


async def test_a_running_log_refuses_to_sign_over_ledger_tables_rolled_back_behind_it(
    ledger: tuple[EventStore, LedgerLog], tmp_path: Path
) -> None:
    """Its tiles and checkpoints deleted (no key needed), a log would otherwise hash the store
    again from the start and sign a second checkpoint of the same size: a fork under its key."""
    store, log = ledger
    await append_notes(store, 5)
    await log.sign()
    await wipe_ledger(store, tmp_path)

    with pytest.raises(LedgerTampered, match=r"rolled back|no longer holds|shrank"):
        await log.sign()
    await append_notes(store, 1)
    with pytest.raises(LedgerTampered):
        await log.sign()
    assert await log.store.checkpoints() == []


async def test_a_replica_that_another_signed_past_is_not_told_tampered(
    ledger: tuple[EventStore, LedgerLog], tmp_path: Path
) -> None:
    """Two replicas on one ledger: one signs between the other's catch-up and its look at the
    checkpoints. The slower one hands back the newer checkpoint instead of raising."""
    store, first = ledger
    second = LedgerLog(await open_ledger(store, tmp_path), first.signer)
    try:
        await append_notes(store, 3)
        await first.sign()
        await append_notes(store, 2)
        caught_up = second.catch_up

        async def overtaken() -> int:
            size = await caught_up()
            await append_notes(store, 2)
            await first.sign()  # signs 7 while the second still holds 5
            return size

        second.catch_up = overtaken  # type: ignore[method-assign]
        signed = await second.sign()
        assert signed.size == 7
        assert signed == await first.latest()
    finally:
        await second.store.close()


# verify_store at the edges an outside auditor meets: an empty store, tree sizes 1 and powers of
# two, a ledger behind its store (events not hashed yet) or ahead of it (hashed events gone).
async def test_an_empty_store_verifies_as_the_empty_tree(
    ledger: tuple[EventStore, LedgerLog],
) -> None:
    _, log = ledger
    await log.catch_up()
    result = await verify_store(log.store, await log.verifier())
    assert result.ok, result.problem
    assert (result.leaves, result.ledger_size, result.checkpoints_checked) == (0, 0, 0)


@pytest.mark.parametrize("size", [1, 2, 4, 8, 16, 3, 17])
async def test_checkpoints_at_small_and_power_of_two_sizes_verify(
    ledger: tuple[EventStore, LedgerLog], size: int
) -> None:
    store, log = ledger
    for _ in range(size):
        await append_notes(store, 1)
        await log.catch_up()
        await log.sign()
    result = await verify_store(log.store, await log.verifier())
    assert result.ok, result.problem
    assert (result.leaves, result.checkpoints_checked) == (size, size)


async def test_a_ledger_behind_its_store_is_noted_not_failed(
    ledger: tuple[EventStore, LedgerLog],
) -> None:
    store, log = ledger
    await append_notes(store, 5)
    await log.catch_up()
    await log.sign()
    await append_notes(store, 3)
    result = await verify_store(log.store, await log.verifier())
    assert result.ok, result.problem
    assert result.leaves == 8
    assert result.ledger_size == 5
    assert "3 events are not hashed into the ledger yet" in result.notes


async def test_a_ledger_whose_leaves_were_deleted_below_its_checkpoint_fails_naming_it(
    ledger: tuple[EventStore, LedgerLog], tmp_path: Path
) -> None:
    """Its tiles deleted, its checkpoints kept: the store still hashes to the signed root, and
    the events the ledger no longer covers passed as "not hashed into the ledger yet"."""
    store, log = ledger
    await append_notes(store, 5)
    await log.sign()
    await tamper_ledger(store, tmp_path, ["DELETE FROM {tiles}"])
    result = await verify_store(log.store, await log.verifier())
    assert not result.ok
    assert result.problem == (
        "the ledger holds 0 events but the checkpoint stored in the ledger of size 5 was signed"
        " over more: the ledger no longer covers positions 1 to 5 (its leaves deleted or"
        " rolled back)"
    )
    assert result.notes == []


async def test_a_ledger_ahead_of_its_store_names_the_first_missing_event(
    ledger: tuple[EventStore, LedgerLog], tmp_path: Path
) -> None:
    store, log = ledger
    await append_notes(store, 6)
    await log.catch_up()
    await log.sign()
    await append_notes(store, 2)
    await log.catch_up()  # hashed, not signed
    await tamper(store, tmp_path, ["DELETE FROM {table} WHERE position > 6"])
    result = await verify_store(log.store, await log.verifier())
    assert not result.ok
    assert result.first_bad_position == 7, result.problem
