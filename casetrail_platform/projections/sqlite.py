"""Read models in SQLite for the embedded default.

Statements run on the event loop's thread: they are local and take microseconds, and the
durable COMMIT at the end of a transaction is one fsync. WAL checkpoints, which copy pages back
into the file and fsync it, run in a background thread every ``CHECKPOINT_EVERY`` commits
instead of inside a commit on the loop. Queries use a second connection, so they read the last
committed state and never wait for a writer (WAL).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.projections.port import (
    FORGET_PATIENCE_SECONDS,
    ChangeCallback,
    Document,
    DocumentReader,
    DocumentTransaction,
    KeyRange,
    ReadModelStore,
    no_list,
    ordering,
)
from casetrail_platform.store.sqlite_writer import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE TABLE IF NOT EXISTS projection_positions (
    projection TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS projection_applied (
    projection TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (projection, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS forget_pending (
    mark TEXT PRIMARY KEY
) WITHOUT ROWID;
"""


CHECKPOINT_EVERY = 200
"""Read-model commits between two background WAL checkpoints."""


class _SqliteReads(DocumentReader):
    """Reads on one connection: the store's reader (each statement sees the last commit) or a
    snapshot's (in a read transaction: every statement sees the commit its first one saw)."""

    def __init__(self, reader: sqlite3.Connection) -> None:
        self._reader = reader

    async def get(self, collection: str, key: str) -> Document | None:
        return _get(self._reader, collection, key)

    async def get_many(self, collection: str, keys: Sequence[str]) -> dict[str, Document]:
        # The keys travel as one JSON array: no limit on how many a statement may bind.
        rows = self._reader.execute(
            "SELECT key, document FROM documents WHERE collection = ?"
            " AND key IN (SELECT value FROM json_each(?))",
            (collection, json.dumps(list(keys))),
        ).fetchall()
        return {key: dict(json.loads(document)) for key, document in rows}

    async def find(
        self,
        collection: str,
        equals: Mapping[str, str | int | bool] | None = None,
        contains: Mapping[str, str] | None = None,
        limit: int = 1000,
    ) -> list[Document]:
        return _find(self._reader, collection, equals or {}, contains or {}, limit)

    async def applied_position(self, projection: str) -> int:
        return _position(self._reader, projection)

    async def scan(self, collection: str) -> AsyncIterator[tuple[str, Document]]:
        rows = self._reader.execute(
            "SELECT key, document FROM documents WHERE collection = ? ORDER BY key", (collection,)
        ).fetchall()
        for key, document in rows:
            yield key, json.loads(document)

    async def key_range(self, collection: str, keys: KeyRange) -> list[tuple[str, Document]]:
        clauses, parameters = _range_clauses(collection, keys)
        order = "DESC" if keys.descending else "ASC"
        rows = self._reader.execute(
            f"SELECT key, document FROM documents WHERE {clauses} ORDER BY key {order} LIMIT ?",
            [*parameters, keys.limit],
        ).fetchall()
        return [(key, dict(json.loads(document))) for key, document in rows]

    async def count_range(self, collection: str, keys: KeyRange) -> int:
        clauses, parameters = _range_clauses(collection, keys)
        row = self._reader.execute(
            f"SELECT count(*) FROM documents WHERE {clauses}", parameters
        ).fetchone()
        return int(row[0])


class SqliteReadModelStore(_SqliteReads, ReadModelStore):
    """``fsync_each_commit=False`` is for read models whose every feed can be replayed from a
    durable source by this store's own tracking: the service's own event store (position
    tracked here) or a bus that re-delivers everything on start (the in-process bus). A commit
    lost to a power cut is then applied again; nothing else acknowledged depends on it. A
    read model fed from Kafka must keep the default, because Kafka offsets are committed once
    the handler returned."""

    def __init__(self, path: Path, *, fsync_each_commit: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = connect(str(path))
        if not fsync_each_commit:
            # WAL stays consistent after a crash; only the last commits may need replaying.
            self._writer.execute("PRAGMA synchronous=NORMAL")
        # Freed space is zeroed: a value an erasure overwrote leaves no copy in the file.
        self._writer.execute("PRAGMA secure_delete=ON")
        self._writer.executescript(SCHEMA)
        # Checkpoints copy the WAL back into the file and fsync it: done on the loop's thread
        # they would stall every service of the process, so a background thread does them.
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._path = path
        self._reader = connect(str(path))
        self._checkpointer = connect(str(path))
        # A cut waiting for a reader sits in SQLite's busy handler, holding the log's write
        # lock: the loop's next BEGIN IMMEDIATE would wait as long. Busy is answered at once
        # instead, and ``forget_overwritten`` tries again for its patience, off the loop.
        self._checkpointer.execute("PRAGMA busy_timeout=0")
        self._commits_since_checkpoint = 0
        self._checkpointing: asyncio.Future[None] | None = None
        # A process that ended between an erasure's commit and its ``forget_overwritten``
        # left the values it overwrote in the log, and its mark: cut on every start (only an
        # operator's reader may have the file open yet), the marks going with a cut.
        self._forget_pending = not _truncated(self._checkpointer)
        if not self._forget_pending:
            self._writer.execute("DELETE FROM forget_pending")
        self._lock = asyncio.Lock()
        self._watchers: dict[str, list[ChangeCallback]] = {}

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[DocumentTransaction]:
        async with self._lock:
            self._writer.execute("BEGIN IMMEDIATE")
            transaction = _SqliteTransaction(self._writer, self._watchers)
            try:
                yield transaction
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")
        self._after_commit()
        self._tell(transaction.changed)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[DocumentReader]:
        # A connection of its own: the store's reader, shared by every query of the process,
        # would hold them all to the snapshot. SQLite's write-ahead log lets the writer commit
        # meanwhile; the read transaction sees the commit its first read saw.
        connection = connect(str(self._path))
        try:
            connection.execute("BEGIN")
            yield _SqliteReads(connection)
        finally:
            connection.close()  # the read transaction ends with it

    def watch(self, collection: str, changed: ChangeCallback) -> bool:
        # The embedded read models have one writing process, this one: every change passes
        # through ``transaction`` or ``reset`` below.
        self._watchers.setdefault(collection, []).append(changed)
        return True

    def _tell(self, changes: Iterable[tuple[str, str | None]]) -> None:
        for collection, key in changes:
            for changed in self._watchers.get(collection, ()):
                changed(key)

    def _after_commit(self) -> None:
        self._commits_since_checkpoint += 1
        due = self._commits_since_checkpoint >= CHECKPOINT_EVERY or self._forget_pending
        if not due or (self._checkpointing is not None and not self._checkpointing.done()):
            return
        self._commits_since_checkpoint = 0
        self._checkpointing = asyncio.ensure_future(asyncio.to_thread(self._checkpoint))

    def _checkpoint(self) -> None:
        if self._forget_pending:
            self._forget_pending = not _truncated(self._checkpointer)
        else:
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def forgetting_pending(self) -> bool:
        return bool(
            self._reader.execute("SELECT EXISTS (SELECT 1 FROM forget_pending)").fetchone()[0]
        )

    async def forget_overwritten(self, patience: float | None = None) -> None:
        """Old page versions live on in the write-ahead log until it is copied back and cut.
        A background checkpoint in flight holds the checkpoint lock, and SQLite then answers
        TRUNCATE busy at once: the values an erasure overwrote stayed in the log and the file
        until the next checkpoint, 200 commits on. So the one in flight is awaited first, and
        the cut, in a thread (a reader of the log makes SQLite answer it busy), is tried again
        for ``patience`` seconds (``FORGET_PATIENCE_SECONDS`` unless told); then
        ``StorageUnavailableError`` (the caller's batch is tried again; the erasure's mark
        stays for ``forget_if_pending``), and the next commits' background checkpoint keeps
        trying. Once cut, the marks seen before go."""
        async with self._lock:  # no commit, so no new background checkpoint, meanwhile
            marks = [row[0] for row in self._writer.execute("SELECT mark FROM forget_pending")]
            deadline = time.monotonic() + (
                FORGET_PATIENCE_SECONDS if patience is None else patience
            )
            while True:
                if self._checkpointing is not None:
                    await asyncio.gather(self._checkpointing, return_exceptions=True)
                if await asyncio.to_thread(_truncated, self._checkpointer):
                    self._forget_pending = False
                    self._writer.execute(
                        "DELETE FROM forget_pending WHERE mark IN (SELECT value FROM json_each(?))",
                        (json.dumps(marks),),
                    )
                    return
                if time.monotonic() >= deadline:
                    self._forget_pending = True
                    raise StorageUnavailableError(
                        "read models (their write-ahead log, which still holds values an"
                        " erasure overwrote, could not be cut while another connection read it)"
                    )
                await asyncio.sleep(0.05)

    async def reset(
        self, projection: str, collections: tuple[str, ...], *, forget: bool = False
    ) -> bool:
        async with self._lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                deleted = self._writer.executemany(
                    "DELETE FROM documents WHERE collection = ?", [(c,) for c in collections]
                ).rowcount
                for statement in (
                    "DELETE FROM projection_positions WHERE projection = ?",
                    "DELETE FROM projection_applied WHERE projection = ?",
                ):
                    deleted += self._writer.execute(statement, (projection,)).rowcount
                if forget and deleted:
                    await _SqliteTransaction(self._writer).mark_overwritten()
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")
        self._tell((collection, None) for collection in collections)
        return deleted > 0

    async def close(self) -> None:
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        self._writer.close()
        self._reader.close()
        self._checkpointer.close()


def _truncated(connection: sqlite3.Connection) -> bool:
    """Copy the write-ahead log back into the file and cut it: whether that was done (not
    busy)."""
    busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy


class _SqliteTransaction(DocumentTransaction):
    def __init__(
        self, connection: sqlite3.Connection, watched: Mapping[str, object] | None = None
    ) -> None:
        self._connection = connection
        self._watched = watched or {}
        self.changed: list[tuple[str, str | None]] = []
        """Changes to watched collections, told to their watchers once committed."""

    async def get(self, collection: str, key: str) -> Document | None:
        return _get(self._connection, collection, key)

    async def put(self, collection: str, key: str, document: Document) -> None:
        self._connection.execute(_PUT, (collection, key, dump_document(document)))
        if collection in self._watched:
            self.changed.append((collection, key))

    async def put_many(self, documents: Sequence[tuple[str, str, Document]]) -> None:
        self._connection.executemany(
            _PUT,
            [(collection, key, dump_document(document)) for collection, key, document in documents],
        )
        self.changed.extend((c, k) for c, k, _ in documents if c in self._watched)

    async def put_new(self, collection: str, key: str, document: Document) -> bool:
        cursor = self._connection.execute(
            "INSERT INTO documents (collection, key, document) VALUES (?, ?, ?)"
            " ON CONFLICT (collection, key) DO NOTHING",
            (collection, key, dump_document(document)),
        )
        if cursor.rowcount != 1:
            return False
        if collection in self._watched:
            self.changed.append((collection, key))
        return True

    async def put_if_later(
        self, collection: str, key: str, document: Document, order_field: str
    ) -> bool:
        order = ordering(document, order_field)
        cursor = self._connection.execute(
            "INSERT INTO documents (collection, key, document) VALUES (?, ?, ?)"
            " ON CONFLICT (collection, key) DO UPDATE SET document = excluded.document"
            " WHERE coalesce(json_extract(documents.document, ?), '') < ?",
            (collection, key, dump_document(document), _path(order_field), order),
        )
        if cursor.rowcount != 1:
            return False
        if collection in self._watched:
            self.changed.append((collection, key))
        return True

    async def delete(self, collection: str, key: str) -> None:
        self._connection.execute(
            "DELETE FROM documents WHERE collection = ? AND key = ?", (collection, key)
        )
        if collection in self._watched:
            self.changed.append((collection, key))

    async def append_to_list(self, collection: str, key: str, field: str, item: Any) -> bool:
        cursor = self._connection.execute(
            "UPDATE documents SET document = json_insert(document, ?, json(?))"
            " WHERE collection = ? AND key = ? AND json_type(document, ?) = 'array'",
            (f"{_path(field)}[#]", dump_document(item), collection, key, _path(field)),
        )
        if cursor.rowcount != 1:
            if _get(self._connection, collection, key) is not None:
                raise no_list(collection, key, field)
            return False
        if collection in self._watched:
            self.changed.append((collection, key))
        return True

    async def find(
        self, collection: str, equals: Mapping[str, str | int | bool] | None = None
    ) -> list[Document]:
        return _find(self._connection, collection, equals or {}, {}, limit=-1)

    async def position(self, projection: str) -> int:
        return _position(self._connection, projection)

    async def set_position(self, projection: str, position: int) -> None:
        self._connection.execute(
            "INSERT INTO projection_positions (projection, position) VALUES (?, ?)"
            " ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
            (projection, position),
        )

    async def already_applied(self, projection: str, event_ids: Sequence[UUID]) -> set[UUID]:
        if not event_ids:
            return set()
        marks = ",".join("?" * len(event_ids))
        rows = self._connection.execute(
            "SELECT event_id FROM projection_applied"
            f" WHERE projection = ? AND event_id IN ({marks})",
            [projection, *(str(event_id) for event_id in event_ids)],
        ).fetchall()
        return {UUID(row[0]) for row in rows}

    async def mark_applied(self, projection: str, event_ids: Sequence[UUID]) -> None:
        self._connection.executemany(
            "INSERT OR IGNORE INTO projection_applied (projection, event_id) VALUES (?, ?)",
            [(projection, str(event_id)) for event_id in event_ids],
        )

    async def mark_overwritten(self) -> None:
        # One mark per transaction, as on PostgreSQL: a forgetting deletes the marks it saw.
        self._connection.execute("INSERT INTO forget_pending (mark) VALUES (?)", (str(uuid4()),))


_PUT = (
    "INSERT INTO documents (collection, key, document) VALUES (?, ?, ?)"
    " ON CONFLICT (collection, key) DO UPDATE SET document = excluded.document"
)


def dump_document(document: Document) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)


def _get(connection: sqlite3.Connection, collection: str, key: str) -> Document | None:
    row = connection.execute(
        "SELECT document FROM documents WHERE collection = ? AND key = ?", (collection, key)
    ).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def _find(
    connection: sqlite3.Connection,
    collection: str,
    equals: Mapping[str, str | int | bool],
    contains: Mapping[str, str],
    limit: int,
) -> list[Document]:
    clauses = ["collection = ?"]
    parameters: list[Any] = [collection]
    for field, value in equals.items():
        clause, values = _equal_json(_path(field), value)
        clauses.append(clause)
        parameters.extend(values)
    for field, value in contains.items():
        # A list holding the string, as PostgreSQL's `@>` (json_each also walks a scalar).
        clauses.append(
            "json_type(document, ?) = 'array' AND EXISTS (SELECT 1 FROM json_each(document, ?)"
            " WHERE type = 'text' AND value = ?)"
        )
        parameters.extend([_path(field), _path(field), value])
    parameters.append(limit)
    rows = connection.execute(
        f"SELECT document FROM documents WHERE {' AND '.join(clauses)} ORDER BY key LIMIT ?",
        parameters,
    ).fetchall()
    return [dict(json.loads(row[0])) for row in rows]


def _range_clauses(collection: str, keys: KeyRange) -> tuple[str, list[Any]]:
    # The primary key (collection, key) is the index: SQLite compares TEXT bytewise.
    clauses = ["collection = ?", "key > ?", "key < ?"]
    parameters: list[Any] = [collection, keys.low, keys.high]
    for field, values in keys.where.items():
        clauses.append(
            "json_type(document, ?) = 'text'"
            f" AND json_extract(document, ?) IN ({','.join('?' * len(values))})"
        )
        parameters.extend([_path(field), _path(field), *values])
    return " AND ".join(clauses), parameters


def _equal_json(path: str, value: str | int | bool) -> tuple[str, list[Any]]:
    """A clause true where the field at ``path`` is JSON equal to ``value``, as PostgreSQL's
    jsonb `=` is: json_extract turns true into 1 and SQLite compares 1 with 1.0 but not with
    '1', so without the type a boolean would match a number and a number a boolean."""
    if isinstance(value, bool):  # before int: a bool is one
        return "json_type(document, ?) = ?", [path, "true" if value else "false"]
    if isinstance(value, int):
        return (
            "json_type(document, ?) IN ('integer', 'real') AND json_extract(document, ?) = ?",
            [path, path, value],
        )
    return "json_type(document, ?) = 'text' AND json_extract(document, ?) = ?", [path, path, value]


def _path(field: str) -> str:
    if not field.replace("_", "").isalnum():
        raise ValueError(f"read-model field names are plain identifiers, not {field!r}")
    return f"$.{field}"


def _position(connection: sqlite3.Connection, projection: str) -> int:
    row = connection.execute(
        "SELECT position FROM projection_positions WHERE projection = ?", (projection,)
    ).fetchone()
    return 0 if row is None else int(row[0])
