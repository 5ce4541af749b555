"""SQLite event store: the embedded default. One file in a data directory, WAL, fsync on commit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from casetrail_platform.errors import (
    CommandAlreadyRecorded,
    ConcurrencyError,
    DuplicateEventIdError,
    GuardLockHeld,
)
from casetrail_platform.locking.inprocess import InProcessLocks
from casetrail_platform.store.port import (
    ANY_VERSION,
    EventStore,
    Snapshot,
    StreamVersion,
)
from casetrail_platform.store.rows import (
    COLUMNS,
    TRACED_COLUMNS,
    StoredRow,
    check_read,
    checked_data,
    insert_values,
    opened_records,
    recorded_from_new,
    same_content,
    to_recorded,
)
from casetrail_platform.store.sqlite_writer import SqliteWriter, call_soon_unless_closed, connect
from casetrail_platform.telemetry.tracing import current_traceparent
from events.envelope import NewEvent, RecordedEvent, from_micros, to_micros
from events.registry import EventRegistry

SCHEMA = """
CREATE TABLE IF NOT EXISTS stored_events (
    position INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    sequence INTEGER NOT NULL CHECK (sequence > 0),
    event_type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    data BLOB NOT NULL,
    source TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_role TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id TEXT,
    occurred_at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    subject TEXT NOT NULL,
    trace_parent TEXT,
    UNIQUE (stream, sequence)
);
CREATE INDEX IF NOT EXISTS stored_events_by_causation ON stored_events (causation_id);
CREATE TRIGGER IF NOT EXISTS stored_events_are_immutable
BEFORE UPDATE ON stored_events
BEGIN SELECT RAISE(ABORT, 'stored events are immutable'); END;
CREATE TRIGGER IF NOT EXISTS stored_events_are_never_deleted
BEFORE DELETE ON stored_events
BEGIN SELECT RAISE(ABORT, 'stored events cannot be deleted'); END;
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS parked_records (
    relay TEXT NOT NULL,
    position INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    key TEXT NOT NULL,
    stream TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    reason TEXT NOT NULL,
    parked_at TEXT NOT NULL,
    retry_requested INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (relay, position)
);
CREATE TABLE IF NOT EXISTS snapshots (
    fold TEXT NOT NULL,
    stream TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    version INTEGER NOT NULL,
    last_event_id TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (fold, stream)
);
"""

_INSERT = (
    "INSERT INTO stored_events (event_id, stream, sequence, event_type, schema_version, data,"
    " source, actor_id, actor_role, correlation_id, causation_id, occurred_at, recorded_at,"
    " subject, trace_parent) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_SELECT = f"SELECT {COLUMNS} FROM stored_events"
_INSERT_COMMAND = (
    "INSERT INTO recorded_commands (command_id, stream, first_event_id, first_position)"
    " VALUES (?,?,?,?) ON CONFLICT (command_id) DO NOTHING"
)
_READ_ALL = (
    f"SELECT {TRACED_COLUMNS} FROM stored_events WHERE position > ? ORDER BY position LIMIT ?"
)
_BY_CAUSATION = f"{_SELECT} WHERE causation_id = ? ORDER BY position"
_LOAD_SNAPSHOT = (
    "SELECT schema_version, version, last_event_id, data FROM snapshots"
    " WHERE fold = ? AND stream = ?"
)
_SAVE_SNAPSHOT = (
    "INSERT INTO snapshots (fold, stream, schema_version, version, last_event_id, data)"
    " VALUES (?,?,?,?,?,?) ON CONFLICT (fold, stream) DO UPDATE SET"
    " schema_version = excluded.schema_version, version = excluded.version,"
    " last_event_id = excluded.last_event_id, data = excluded.data"
    " WHERE snapshots.schema_version <> excluded.schema_version"
    " OR snapshots.version < excluded.version"
)

T = TypeVar("T")

GUARD_LOCK_WAIT = 0.5
"""Seconds an append waits for its guard's lock before it is refused ``GuardLockHeld`` (a
lost race: ``decide.execute`` tries again within its budget)."""

INLINE_ROWS = 64
"""Reads of at most this many rows run on the event loop's thread (see ``_fetch``)."""


async def _to_its_end(work: Awaitable[T]) -> T:
    """``work``'s result, waited for to its end even if the caller is cancelled meanwhile (the
    cancellation is raised then): a write queued to the writer is committed whether or not its
    caller still waits, so a guard's lock must be held until it is."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break  # the task's own failure, raised below
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the caller gave up on its outcome
        raise asyncio.CancelledError
    return task.result()


class SqliteEventStore(EventStore):
    """Open with ``await SqliteEventStore.open(path, registry)``; close with ``close()``."""

    def __init__(self, path: Path, registry: EventRegistry) -> None:
        self._path = path
        self._registry = registry
        self._writer = SqliteWriter(str(path))
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        """Every reader thread's connection, so ``close()`` closes them: a thread-local one
        would stay open (and keep the WAL) until garbage collection."""
        self._reader_connections_lock = threading.Lock()
        self._inline: sqlite3.Connection | None = None
        self._last_recorded_at = 0
        self._appended: asyncio.Event | None = None
        self._committed_position = 0
        """Newest position committed by this process's writer (or found at open)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.locks = InProcessLocks()
        """The embedded host's locks (``infrastructure.open_locks``): the one process that owns this
        file decides with them, and a guard's lock (``StreamVersion.lock``) is one of them."""

    @classmethod
    async def open(cls, path: Path, registry: EventRegistry) -> SqliteEventStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(path, registry)
        store._loop = asyncio.get_running_loop()
        store._appended = asyncio.Event()
        store._writer.after_commit = store._notify_from_writer
        await asyncio.to_thread(store._writer.start, SCHEMA)
        await store._writer.write(_add_trace_column)
        await store._writer.write(_add_command_table)
        store._last_recorded_at = await store.read(_max_recorded_at)
        store._committed_position = await store.read(_last_position)
        return store

    @property
    def writer(self) -> SqliteWriter:
        """The file's single writer, shared with checkpoints stored beside the events."""
        return self._writer

    async def close(self) -> None:
        await asyncio.to_thread(self._writer.stop)
        self._readers.shutdown(wait=True)
        with self._reader_connections_lock:
            connections, self._reader_connections = self._reader_connections, []
        for connection in connections:
            connection.close()
        if self._inline is not None:
            self._inline.close()
            self._inline = None

    @contextlib.asynccontextmanager
    async def _guard_lock(self, guard: StreamVersion | None) -> AsyncIterator[None]:
        """Holds a guard's lock from before the append is queued to its commit, so a section
        holding it (an erasure) comes wholly before or after: PostgreSQL's shared lock taken
        in the append's transaction. Held exclusively here (in process, one writer anyway),
        and waited for outside the writer, which the holder's own append needs. Waited for at
        most ``GUARD_LOCK_WAIT``, then refused ``GuardLockHeld`` as PostgreSQL refuses it at
        once: a command kept out for its whole retry budget gets the same answer on both."""
        if guard is None or guard.lock is None:
            yield
            return
        async with contextlib.AsyncExitStack() as held:
            try:
                async with asyncio.timeout(GUARD_LOCK_WAIT):
                    await held.enter_async_context(self.locks.holding([guard.lock]))
            except TimeoutError:
                raise GuardLockHeld(guard.stream, guard.version, guard.lock) from None
            yield

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        command_id: UUID | None = None,
        guard: StreamVersion | None = None,
    ) -> list[RecordedEvent]:
        if not events:
            return []
        data = await checked_data(self._registry, stream, events, expected_version, guard)
        trace_parent = current_traceparent()
        registry = self._registry
        command = None if command_id is None else str(command_id)
        async with self._guard_lock(guard):
            writing = self._writer.write(
                lambda connection: self._append_in(
                    connection,
                    stream,
                    list(events),
                    data,
                    expected_version,
                    trace_parent,
                    registry,
                    command,
                    guard,
                )
            )
            rows = await (writing if guard is None or guard.lock is None else _to_its_end(writing))
        if isinstance(rows, _Appended):
            recorded_at = from_micros(rows.recorded_at)
            return [
                recorded_from_new(
                    new,
                    stream,
                    rows.after_sequence + offset,
                    rows.first_position + offset - 1,
                    recorded_at,
                    stored,
                )
                for offset, (new, stored) in enumerate(zip(events, data, strict=True), start=1)
            ]
        return [to_recorded(row, self._registry) for row in rows]

    def _append_in(
        self,
        connection: sqlite3.Connection,
        stream: str,
        events: list[NewEvent],
        data: list[bytes],
        expected_version: int,
        trace_parent: str | None,
        registry: EventRegistry,
        command: str | None,
        guard: StreamVersion | None,
    ) -> list[StoredRow] | _Appended:
        """The new events' place, or the stored rows when this is a retry of a stored batch."""
        current = _version_of(connection, stream)
        if expected_version == ANY_VERSION:
            # The writer thread is the file's only writer: the stream cannot move under us.
            expected_version = current
        elif current != expected_version:
            retried = _already_stored(connection, stream, events, registry)
            if retried is not None:
                return retried
            raise ConcurrencyError(stream, expected_version, current)
        if guard is not None:
            # Checked by the file's only writer, in this append's transaction: nothing can be
            # appended to the guarded stream between this check and the commit.
            guarded = _version_of(connection, guard.stream)
            if guarded != guard.version:
                retried = _already_stored(connection, stream, events, registry)
                if retried is not None:
                    return retried
                raise ConcurrencyError(guard.stream, guard.version, guarded)
        # recorded-at never goes backwards along the global order, even if the clock does.
        recorded_at = max(to_micros_now(), self._last_recorded_at)
        try:
            connection.executemany(
                _INSERT,
                [
                    insert_values(
                        new, encoded, stream, expected_version + offset, recorded_at, trace_parent
                    )
                    for offset, (new, encoded) in enumerate(zip(events, data, strict=True), start=1)
                ],
            )
        except sqlite3.IntegrityError:
            retried = _already_stored(connection, stream, events, registry)
            if retried is not None:
                return retried
            if command is not None and _command_recorded(connection, command):
                # The command's ids with other content: the key's first request won.
                raise CommandAlreadyRecorded(command) from None
            raise DuplicateEventIdError(_first_stored_id(connection, events)) from None
        # One writer and INTEGER PRIMARY KEY: the batch got consecutive positions.
        last_position = connection.execute("SELECT last_insert_rowid()").fetchone()[0]
        first_position = last_position - len(events) + 1
        if command is not None:
            recorded = connection.execute(
                _INSERT_COMMAND, (command, stream, str(events[0].event_id), first_position)
            )
            if recorded.rowcount == 0:
                # Recorded before, with other events (the same ones would have collided
                # above): raising rolls this request's savepoint back, events and all.
                raise CommandAlreadyRecorded(command)
        self._last_recorded_at = recorded_at
        return _Appended(first_position, recorded_at, expected_version)

    @property
    def registry(self) -> EventRegistry:
        return self._registry

    async def read_stream(
        self,
        stream: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        recorded_until: datetime | None = None,
        occurred_until: datetime | None = None,
    ) -> list[RecordedEvent]:
        check_read(stream, from_version=from_version, to_version=to_version)
        clauses = ["stream = ?", "sequence >= ?"]
        parameters: list[Any] = [stream, from_version]
        if to_version is not None:
            clauses.append("sequence <= ?")
            parameters.append(to_version)
        if recorded_until is not None:
            clauses.append("recorded_at <= ?")
            parameters.append(to_micros(recorded_until))
        if occurred_until is not None:
            clauses.append("occurred_at <= ?")
            parameters.append(to_micros(occurred_until))
        query = f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY sequence"
        return await opened_records(await self._fetch(query, parameters), self._registry)

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        check_read(after_position=after_position, limit=limit)
        query = _READ_ALL
        if self._committed_position - after_position <= INLINE_ROWS:
            # A follower keeping up: the few new rows are cheaper to read than a thread hop.
            rows = self._inline_connection().execute(query, (after_position, limit)).fetchall()
        else:
            rows = await self.read(lambda c: c.execute(query, (after_position, limit)).fetchall())
        return await opened_records(rows, self._registry)

    async def read_by_causation(self, causation_id: UUID) -> list[RecordedEvent]:
        return await opened_records(
            await self._fetch(_BY_CAUSATION, (str(causation_id),)), self._registry
        )

    async def load_snapshot(self, fold: str, stream: str) -> Snapshot | None:
        row = await self.read(lambda c: c.execute(_LOAD_SNAPSHOT, (fold, stream)).fetchone())
        if row is None:
            return None
        schema_version, version, last_event_id, data = row
        return Snapshot(fold, stream, schema_version, version, UUID(last_event_id), data)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        parameters = (
            snapshot.fold,
            snapshot.stream,
            snapshot.schema_version,
            snapshot.version,
            str(snapshot.last_event_id),
            snapshot.data,
        )
        await self._writer.write(lambda c: c.execute(_SAVE_SNAPSHOT, parameters))

    async def stream_version(self, stream: str) -> int:
        check_read(stream)
        return await self.read(lambda c: _version_of(c, stream))

    async def last_position(self) -> int:
        return await self.read(_last_position)

    async def wait_for_append(self, after_position: int, max_wait: float) -> None:
        assert self._appended is not None, "open the store with SqliteEventStore.open()"
        appended = self._appended
        # Known without a read: this process's writer is the file's only one.
        if self._committed_position > after_position:
            return
        try:
            await asyncio.wait_for(appended.wait(), max_wait)
        except TimeoutError:
            return

    def _notify_from_writer(self, connection: sqlite3.Connection) -> None:
        # Read back rather than kept from the appends: what the commit holds, whatever it
        # rolled back or another writer added; a b-tree seek, ~2-4 us (bench/RESULTS.md).
        self._committed_position = _last_position(connection)
        if self._loop is not None:
            # A closed loop has no followers left to wake.
            call_soon_unless_closed(self._loop, self._wake_followers)

    def _wake_followers(self) -> None:
        assert self._appended is not None
        # Wake everyone waiting now; later waiters wait for the next append.
        self._appended.set()
        self._appended = asyncio.Event()

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """``query`` run on a reader connection, in a reader thread (the store's own reads, its
        checkpoints' and its parking lot's)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, query)

    async def _fetch(self, query: str, parameters: Sequence[Any]) -> list[StoredRow]:
        """The rows of ``query`` (which has no LIMIT): read on the event loop's thread when
        there are at most ``INLINE_ROWS`` of them, else again in a reader thread. A command's
        reads (a case's stream, a look-up by causation) are nearly always that small, and the
        hop to a reader thread and back costs the loop more than the read itself."""
        bounded = f"{query} LIMIT {INLINE_ROWS + 1}"
        rows: list[StoredRow] = self._inline_connection().execute(bounded, parameters).fetchall()
        if len(rows) <= INLINE_ROWS:
            return rows
        return await self.read(lambda c: c.execute(query, parameters).fetchall())

    def _inline_connection(self) -> sqlite3.Connection:
        """The loop thread's own reader (WAL: never waits for the writer)."""
        if self._inline is None:
            self._inline = connect(str(self._path))
        return self._inline

    def _run_read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = connect(str(self._path))
            self._local.connection = connection
            with self._reader_connections_lock:
                self._reader_connections.append(connection)
        return query(connection)


@dataclass(frozen=True, slots=True)
class _Appended:
    first_position: int
    recorded_at: int
    after_sequence: int
    """The stream's version before the batch (its first event is this + 1)."""


def to_micros_now() -> int:
    return time.time_ns() // 1000


def _version_of(connection: sqlite3.Connection, stream: str) -> int:
    row = connection.execute(
        "SELECT max(sequence) FROM stored_events WHERE stream = ?", (stream,)
    ).fetchone()
    return 0 if row[0] is None else int(row[0])


def _last_position(connection: sqlite3.Connection) -> int:
    return int(
        connection.execute("SELECT coalesce(max(position), 0) FROM stored_events").fetchone()[0]
    )


def _add_trace_column(connection: sqlite3.Connection) -> None:
    """Give a file made before trace contexts were kept its ``trace_parent`` column."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(stored_events)")}
    if "trace_parent" not in columns:
        connection.execute("ALTER TABLE stored_events ADD COLUMN trace_parent TEXT")


_COMMAND_TABLE = (
    "CREATE TABLE recorded_commands (command_id TEXT PRIMARY KEY, stream TEXT NOT NULL,"
    " first_event_id TEXT NOT NULL, first_position INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TRIGGER recorded_commands_are_immutable BEFORE UPDATE ON recorded_commands"
    " BEGIN SELECT RAISE(ABORT, 'recorded commands are immutable'); END",
    "CREATE TRIGGER recorded_commands_are_never_deleted BEFORE DELETE ON recorded_commands"
    " BEGIN SELECT RAISE(ABORT, 'recorded commands cannot be deleted'); END",
    # A file made before the table: every causation id already stored, with its first event.
    "INSERT INTO recorded_commands (command_id, stream, first_event_id, first_position)"
    " SELECT causation_id, stream, event_id, min(position) FROM stored_events"
    " WHERE causation_id IS NOT NULL GROUP BY causation_id",
)
"""Statements run one by one (``executescript`` would commit the writer's transaction)."""


def _add_command_table(connection: sqlite3.Connection) -> None:
    """Give a file its table of recorded commands (one row per command id: the stream, first
    event and position it recorded; the first event's id carries the request's fingerprint).
    A file made before the table existed gets a row for every causation id already stored,
    so a command recorded before the upgrade is not recorded again under another request.
    Causation ids of follow-ups (an event's id) come along: they never equal a command id."""
    found = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recorded_commands'"
    ).fetchone()
    if found is not None:
        return
    for statement in _COMMAND_TABLE:
        connection.execute(statement)


def _command_recorded(connection: sqlite3.Connection, command: str) -> bool:
    found = connection.execute(
        "SELECT 1 FROM recorded_commands WHERE command_id = ?", (command,)
    ).fetchone()
    return found is not None


def _max_recorded_at(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT coalesce(max(recorded_at), 0) FROM stored_events").fetchone()
    return int(row[0])


def _already_stored(
    connection: sqlite3.Connection, stream: str, events: list[NewEvent], registry: EventRegistry
) -> list[StoredRow] | None:
    """The stored rows if this exact batch was appended before (a retry), else None."""
    ids = [str(new.event_id) for new in events]
    marks = ",".join("?" * len(ids))
    rows: list[StoredRow] = connection.execute(
        f"{_SELECT} WHERE event_id IN ({marks}) ORDER BY position", ids
    ).fetchall()
    by_id = {row[1]: row for row in rows}
    if len(by_id) != len(events):
        return None
    ordered = [by_id[event_id] for event_id in ids]
    if all(
        same_content(new, row, stream, registry) for new, row in zip(events, ordered, strict=True)
    ):
        return ordered
    return None


def _first_stored_id(connection: sqlite3.Connection, events: list[NewEvent]) -> str:
    for new in events:
        found = connection.execute(
            "SELECT 1 FROM stored_events WHERE event_id = ?", (str(new.event_id),)
        ).fetchone()
        if found is not None:
            return str(new.event_id)
    return str(events[0].event_id)
