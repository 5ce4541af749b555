"""The ledger of a SQLite event store, in its own file beside it (``ledger.db``).

A file of its own so that the ledger's writes never take the event store's write lock: appends
are not slowed by hashing (which runs behind them, see ``events.ledger.log``). The event file
is attached read-only in spirit: the ledger only SELECTs from it (WAL: never waits for appends).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from events.ledger.canonical import TAG
from events.ledger.merkle import Hash, SubtreeKey
from events.ledger.port import LedgerConflict, LedgerStore, StoredCheckpoint
from events.store.sqlite_writer import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL
);
"""

T = TypeVar("T")


def _field(expression: str) -> str:
    text = f"coalesce(CAST({expression} AS TEXT), '')"
    return f"CAST(length(CAST({text} AS BLOB)) AS TEXT) || ':' || {text} || ','"


_FIELDS = [
    "position",
    "event_id",
    "stream",
    "sequence",
    "event_type",
    "schema_version",
    "source",
    "actor_id",
    "actor_role",
    "correlation_id",
    "causation_id",
    "occurred_at",
    "recorded_at",
    "subject",
]
CANONICAL_SQL = (
    f"CAST('{len(TAG)}:{TAG.decode()},' || "
    + " || ".join(_field(name) for name in _FIELDS)
    + " || CAST(length(data) AS TEXT) || ':' || CAST(data AS TEXT) || ',' AS BLOB)"
)
"""The canonical bytes of ``events.ledger.canonical`` built by SQLite itself (in C), so that
hashing a store costs Python one SHA-256 per event and no formatting."""
_sha256 = hashlib.sha256


class SqliteLedgerStore(LedgerStore):
    """Open with ``await SqliteLedgerStore.open(ledger_path, events_path)``."""

    def __init__(self, path: Path, events_path: Path) -> None:
        self._path = path
        self._events_path = events_path
        # One thread owns the connection: every call is serialised through it.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ledger")
        self._connection: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path, events_path: Path) -> SqliteLedgerStore:
        store = cls(path, events_path)
        await store._run(store._open)
        return store

    def _open(self) -> None:
        connection = connect(str(self._path))
        # Derived data, recomputable from the events: a commit need not wait for the disk
        # (WAL keeps the file consistent after a crash; the follower re-hashes what was lost).
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
        connection.execute("ATTACH DATABASE ? AS events", (f"{self._events_path}",))
        self._connection = connection

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    def _db(self) -> sqlite3.Connection:
        assert self._connection is not None, "open with SqliteLedgerStore.open()"
        return self._connection

    async def close(self) -> None:
        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await self._run(close)
        self._thread.shutdown(wait=True)

    async def size(self) -> int:
        return await self._run(self._size)

    def _size(self) -> int:
        row = self._db().execute("SELECT max(idx) FROM ledger_nodes WHERE level = 0").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    async def append(self, first_index: int, nodes: Sequence[tuple[SubtreeKey, Hash]]) -> None:
        def append() -> None:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                if self._size() != first_index:
                    raise LedgerConflict(f"the ledger is not at {first_index} leaves")
                db.executemany(
                    "INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)",
                    [(level, index, digest) for (level, index), digest in nodes],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        await self._run(append)

    async def subtrees(self, keys: Iterable[SubtreeKey]) -> Mapping[SubtreeKey, Hash]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}

        def fetch() -> dict[SubtreeKey, Hash]:
            # One primary-key look-up each: a proof needs O(log n) of them, and SQLite would
            # not use the index for a row-value IN list.
            db = self._db()
            found: dict[SubtreeKey, Hash] = {}
            for key in wanted:
                row = db.execute(
                    "SELECT hash FROM ledger_nodes WHERE level = ? AND idx = ?", key
                ).fetchone()
                if row is not None:
                    found[key] = bytes(row[0])
            return found

        return await self._run(fetch)

    async def leaf_hashes(self, first_index: int, limit: int) -> list[Hash]:
        def fetch() -> list[Hash]:
            rows = self._db().execute(
                "SELECT hash FROM ledger_nodes WHERE level = 0 AND idx >= ? ORDER BY idx LIMIT ?",
                (first_index, limit),
            )
            return [bytes(row[0]) for row in rows]

        return await self._run(fetch)

    async def store_leaves(self, after_position: int, limit: int) -> list[tuple[int, Hash]]:
        def hash_rows() -> list[tuple[int, Hash]]:
            rows = self._db().execute(
                f"SELECT position, {CANONICAL_SQL} FROM events.stored_events WHERE position > ?"
                " ORDER BY position LIMIT ?",
                (after_position, limit),
            )
            sha256 = _sha256
            return [(position, sha256(b"\x00" + leaf).digest()) for position, leaf in rows]

        return await self._run(hash_rows)

    async def store_last_position(self) -> int:
        def last() -> int:
            row = self._db().execute("SELECT max(position) FROM events.stored_events").fetchone()
            return 0 if row[0] is None else int(row[0])

        return await self._run(last)

    async def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        def save() -> None:
            self._db().execute(
                "INSERT INTO ledger_checkpoints (size, note) VALUES (?, ?)"
                " ON CONFLICT (size) DO NOTHING",
                (checkpoint.size, checkpoint.note),
            )

        await self._run(save)

    async def checkpoints(self, after_size: int = -1, limit: int = 1000) -> list[StoredCheckpoint]:
        def fetch() -> list[StoredCheckpoint]:
            rows = self._db().execute(
                "SELECT size, note FROM ledger_checkpoints WHERE size > ? ORDER BY size LIMIT ?",
                (after_size, limit),
            )
            return [StoredCheckpoint(int(size), note) for size, note in rows]

        return await self._run(fetch)

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        def fetch() -> StoredCheckpoint | None:
            row = (
                self._db()
                .execute("SELECT size, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
                .fetchone()
            )
            return None if row is None else StoredCheckpoint(int(row[0]), row[1])

        return await self._run(fetch)
