"""The ledger of a SQLite event store, in its own file beside it (``ledger.db``).

A file of its own so that the ledger's writes never take the event store's write lock: appends
are not slowed by hashing (which runs behind them, see ``casetrail_platform.ledger.log``). The event
file is attached read-only in spirit: the ledger only SELECTs from it (WAL: never waits for
appends).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

from casetrail_platform.ledger import tiles
from casetrail_platform.ledger.canonical import leaf_hashes_of_inputs
from casetrail_platform.ledger.merkle import HASH_SIZE, Hash, HashRun
from casetrail_platform.ledger.port import (
    LedgerConflict,
    LedgerNotCreated,
    LedgerStore,
    LedgerUnreadable,
    StoredCheckpoint,
)
from casetrail_platform.ledger.sqlite_ranges import STORED_LEAVES_SQL, SqliteRanges, read_only_uri
from casetrail_platform.ledger.store_ranges import StoreRanges
from casetrail_platform.store.sqlite_writer import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_tiles (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL
);
"""

T = TypeVar("T")


class SqliteLedgerStore(LedgerStore):
    """Open with ``await SqliteLedgerStore.open(ledger_path, events_path)``."""

    def __init__(self, path: Path, events_path: Path) -> None:
        self._path = path
        self._events_path = events_path
        # One thread owns the connection: every call is serialised through it.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ledger")
        self._connection: sqlite3.Connection | None = None
        self._proofs: sqlite3.Connection | None = None
        """Read only, used on the event loop itself: a proof's few dozen primary-key reads
        take well under a millisecond, less than handing them to a thread and back costs on
        a busy machine."""

    @classmethod
    async def open(cls, path: Path, events_path: Path) -> SqliteLedgerStore:
        store = cls(path, events_path)
        await store._run(store._open)
        uri = await asyncio.to_thread(read_only_uri, path)
        store._proofs = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return store

    @classmethod
    async def open_read_only(cls, path: Path, events_path: Path) -> SqliteLedgerStore:
        """Both files opened ``mode=ro``: creates and migrates nothing, and a write is refused
        by SQLite itself (``verify-store``, an auditor's check). SQLite still adds a WAL
        database's ``-wal``/``-shm`` companions when they are missing, as any reader does.
        Raises ``LedgerNotCreated`` if there is no ledger (file or tables) yet."""
        store = cls(path, events_path)
        try:
            await store._run(store._open_read_only)
        except BaseException:
            await store.close()
            raise
        uri = await asyncio.to_thread(read_only_uri, path)
        store._proofs = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return store

    def _open_read_only(self) -> None:
        if not self._path.exists():
            raise LedgerNotCreated(f"{self._path} does not exist")
        connection = sqlite3.connect(
            read_only_uri(self._path), uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA busy_timeout=10000")
            with _named(self._path):
                tables = connection.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                    " AND name IN ('ledger_tiles', 'ledger_checkpoints')"
                ).fetchone()[0]
            if tables != 2:
                raise LedgerNotCreated(f"{self._path} holds no ledger tables")
            with _named(self._events_path):
                events = read_only_uri(self._events_path)
                connection.execute("ATTACH DATABASE ? AS events", (events,))
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def _open(self) -> None:
        connection = connect(str(self._path))
        # Derived data, recomputable from the events: a commit need not wait for the disk
        # (WAL keeps the file consistent after a crash; the follower re-hashes what was lost).
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
        _tile_old_nodes(connection)
        connection.execute("ATTACH DATABASE ? AS events", (f"{self._events_path}",))
        self._connection = connection

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    def _db(self) -> sqlite3.Connection:
        assert self._connection is not None, "open with SqliteLedgerStore.open()"
        return self._connection

    async def close(self) -> None:
        if self._proofs is not None:
            self._proofs.close()
            self._proofs = None

        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await self._run(close)
        self._thread.shutdown(wait=True)

    async def size(self) -> int:
        return await self._run(self._size)

    def _size(self) -> int:
        row = (
            self._db()
            .execute(
                "SELECT idx, length(hashes) FROM ledger_tiles WHERE level = 0"
                " ORDER BY idx DESC LIMIT 1"
            )
            .fetchone()
        )
        return tiles.size_of(None if row is None else (int(row[0]), int(row[1])))

    async def append(self, first_index: int, runs: Sequence[HashRun]) -> None:
        planned = tiles.writes(runs)

        def append() -> None:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                if self._size() != first_index:
                    raise LedgerConflict(f"the ledger is not at {first_index} leaves")
                for write in planned:
                    _write_tile(db, write)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        await self._run(append)

    async def read_slices(self, slices: Sequence[tiles.TileSlice]) -> list[bytes | None]:
        assert self._proofs is not None, "open with SqliteLedgerStore.open()"
        db = self._proofs
        found: list[bytes | None] = []
        # One primary-key look-up each (SQLite would not use the index for a row-value IN
        # list), in one read transaction so that they see one state of the ledger.
        db.execute("BEGIN")
        try:
            for level, index, offset, count in slices:
                row = db.execute(
                    "SELECT substr(hashes, ?, ?) FROM ledger_tiles WHERE level = ? AND idx = ?",
                    (offset * HASH_SIZE + 1, count * HASH_SIZE, level, index),
                ).fetchone()
                found.append(None if row is None else bytes(row[0]))
        finally:
            db.execute("COMMIT")
        return found

    async def leaf_tiles(self, first: int, last: int) -> list[tuple[int, bytes]]:
        def fetch() -> list[tuple[int, bytes]]:
            rows = self._db().execute(
                "SELECT idx, hashes FROM ledger_tiles WHERE level = 0 AND idx BETWEEN ? AND ?"
                " ORDER BY idx",
                (first, last),
            )
            return [(int(index), bytes(hashes)) for index, hashes in rows]

        return await self._run(fetch)

    async def store_leaves(self, after_position: int, limit: int) -> list[tuple[int, Hash]]:
        def hash_rows() -> list[tuple[int, Hash]]:
            rows = self._db().execute(STORED_LEAVES_SQL, (after_position, limit))
            return leaf_hashes_of_inputs(rows)

        return await self._run(hash_rows)

    @asynccontextmanager
    async def store_ranges(self) -> AsyncIterator[StoreRanges | None]:
        yield StoreRanges(SqliteRanges(self._events_path), await self.store_last_position())

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
                f"SELECT size, {_NOTE} FROM ledger_checkpoints WHERE size > ? ORDER BY size"
                " LIMIT ?",
                (after_size, limit),
            )
            return [StoredCheckpoint(int(size), _text(note)) for size, note in rows]

        return await self._run(fetch)

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        def fetch() -> StoredCheckpoint | None:
            row = (
                self._db()
                .execute(f"SELECT size, {_NOTE} FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
                .fetchone()
            )
            return None if row is None else StoredCheckpoint(int(row[0]), _text(row[1]))

        return await self._run(fetch)


_NOTE = "CAST(note AS BLOB)"
"""A note as its bytes: SQLite keeps whatever bytes were written as TEXT, and decoding one
not UTF-8 raised ``sqlite3.OperationalError`` (quoting the note) out of every reader."""


@contextmanager
def _named(path: Path) -> Iterator[None]:
    """SQLite finding ``path`` no database, told as ``LedgerUnreadable`` naming it (its own
    error names no file, and left the auditor's check with a traceback)."""
    try:
        yield
    except sqlite3.OperationalError:
        raise  # the file could not be reached (locked, I/O), which says nothing of its bytes
    except sqlite3.DatabaseError as error:  # "file is not a database", "malformed"
        raise LedgerUnreadable(f"{path} cannot be read: {error}") from None


def _text(note: bytes) -> str:
    """A stored note's text, bytes not UTF-8 replaced (U+FFFD): its signature then fails to
    verify, and the checkpoint is reported as the bad one it is."""
    return note.decode("utf-8", errors="replace")


def _write_tile(db: sqlite3.Connection, write: tiles.TileWrite) -> None:
    key = (write.level, write.index)
    if write.offset == 0:
        try:
            db.execute("INSERT INTO ledger_tiles (level, idx, hashes) VALUES (?, ?, ?)",
                       (*key, write.hashes))  # fmt: skip
        except sqlite3.IntegrityError:
            raise LedgerConflict(f"tile {key} is stored already") from None
        return
    row = db.execute("SELECT hashes FROM ledger_tiles WHERE level = ? AND idx = ?", key).fetchone()
    if row is None or len(row[0]) != write.offset * HASH_SIZE:
        raise LedgerConflict(f"tile {key} does not hold {write.offset} hashes")
    db.execute(
        "UPDATE ledger_tiles SET hashes = ? WHERE level = ? AND idx = ?",
        (bytes(row[0]) + write.hashes, *key),
    )


def _tile_old_nodes(db: sqlite3.Connection) -> None:
    """A ledger written before tiles kept one row per subtree (``ledger_nodes``): its stored
    levels move into tiles once, in one transaction."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger_nodes'"
    ).fetchone()
    if exists is None:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        runs: list[HashRun] = []
        for level in range(0, 64, tiles.TILE_HEIGHT):
            rows = db.execute(
                "SELECT idx, hash FROM ledger_nodes WHERE level = ? ORDER BY idx", (level,)
            ).fetchall()
            if rows:
                runs.append((level, int(rows[0][0]), [bytes(digest) for _, digest in rows]))
        if db.execute("SELECT count(*) FROM ledger_tiles").fetchone()[0] == 0:
            for write in tiles.writes(runs):
                _write_tile(db, write)
        db.execute("DROP TABLE ledger_nodes")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
