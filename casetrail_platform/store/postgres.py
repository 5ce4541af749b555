"""PostgreSQL event store: the shared-server adapter of
``casetrail_platform.store.port.EventStore``.

Open with ``await PostgresEventStore.connect(dsn, registry, schema=...)``, which creates the
schema (``postgres_schema.sql``) if it is missing. One store object may be used by many
coroutines: appends go through one writer connection (appends are serialised in the database
anyway, see ``append_events`` in the schema), reads through a few reader connections, and
``wait_for_append`` through one LISTEN connection opened on first use.

Group commit: appends that arrive while a commit is in flight wait for it, then go together in
one call of ``append_events_in_group`` in autocommit mode: one round trip, one transaction, one
WAL flush for the whole group. Each request runs in its own savepoint there, so it stays atomic
on its own (all its events or none) and its failure touches no other request of the group. An
append with nobody else waiting is a group of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql

from casetrail_platform.errors import (
    CommandAlreadyRecorded,
    ConcurrencyError,
    DuplicateEventIdError,
    GuardLockHeld,
    StorageUnavailableError,
)
from casetrail_platform.locking.postgres import key_of
from casetrail_platform.store.pg_connections import (
    Connection,
    PgConnections,
    creating_schema,
    is_connection_failure,
    open_connection,
)
from casetrail_platform.store.port import EventStore, Snapshot, StreamVersion
from casetrail_platform.store.rows import (
    COLUMNS,
    TRACED_COLUMNS,
    check_read,
    checked_data,
    opened_records,
    recorded_from_new,
    same_content,
)
from casetrail_platform.telemetry.tracing import current_traceparent
from events.envelope import NewEvent, RecordedEvent
from events.registry import EventRegistry

log = logging.getLogger(__name__)

_CHANNEL_PREFIX = "casetrail_events."
_MAX_SCHEMA_CHARS = 63 - len(_CHANNEL_PREFIX)
"""PostgreSQL names are at most 63 bytes, the NOTIFY channel (the prefix and the schema) too:
a longer schema was created, and every append failed in pg_notify."""
_SCHEMA_NAME = re.compile(rf"^[a-z_][a-z0-9_]{{0,{_MAX_SCHEMA_CHARS - 1}}}$")
# First key of the advisory lock of appends (second key: the table oid).
_APPEND_LOCK = 0x63747276
_CONCURRENCY_SQLSTATE = "CT001"
_COMMAND_RECORDED_SQLSTATE = "CT004"
_GUARD_SQLSTATE = "CT005"
_GUARD_LOCK_SQLSTATE = "CT006"
_UNIQUE_VIOLATION = "23505"
# Bounds on one group commit: the transaction, its parameters and the array slicing in the
# database stay small, and a waiting request is never held back by a huge group for long.
_MAX_REQUESTS_PER_GROUP = 256
_MAX_EVENTS_PER_GROUP = 5000

Row = tuple[Any, ...]


class PostgresEventStore(EventStore):
    def __init__(self, dsn: str, registry: EventRegistry, schema: str, readers: int) -> None:
        """Use ``connect()``; this only prepares the object."""
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(
                f"schema {schema!r}: use lower-case letters, digits and _, at most"
                f" {_MAX_SCHEMA_CHARS} characters"
            )
        if readers < 1:
            raise ValueError("readers must be at least 1")
        self._registry = registry
        self._schema = schema
        self._channel = f"{_CHANNEL_PREFIX}{schema}"
        self._writer = PgConnections(dsn, 1, f"{schema} event store")
        self._readers = PgConnections(dsn, readers, f"{schema} event store")
        self._listener = _Listener(dsn, self._channel, f"{schema} event store")
        self._pending: list[_Request] = []
        self._committing: asyncio.Task[None] | None = None
        table = sql.Identifier(schema, "stored_events")
        # %b: arrays travel in binary, which spares psycopg escaping every item as text.
        self._append_sql = sql.SQL(
            "SELECT first_position, recorded_at, first_sequence, error_state, error_detail,"
            " error_constraint, error_message FROM {}.append_events_in_group(%b::text[],"
            " %b::integer[], %b::integer[], %b, %b, %b::integer[], %b, %b, %b, %b, %b, %b, %b,"
            " %b, %b::text[], %b::uuid[], %b::text[], %b::integer[], %b::bigint[])"
        ).format(sql.Identifier(schema))
        self._select = sql.SQL(f"SELECT {COLUMNS} FROM {{}}").format(table)
        self._read_all_sql = sql.SQL(
            f"SELECT {TRACED_COLUMNS} FROM {{}} WHERE position > %s ORDER BY position LIMIT %s"
        ).format(table)
        self._by_causation_sql = self._select + sql.SQL(
            " WHERE causation_id = %s ORDER BY position"
        )
        # One round trip for a command's reads (read_for_command): part 1 the events an
        # earlier attempt recorded, part 2 the stream's history.
        self._for_command_sql = sql.SQL(
            f"SELECT * FROM (SELECT 1 AS part, {COLUMNS} FROM {{table}} WHERE causation_id = %s"
            f" UNION ALL SELECT 2, {COLUMNS} FROM {{table}} WHERE stream = %s"
            " AND sequence >= %s) AS reads"
            " ORDER BY part, CASE WHEN part = 1 THEN position ELSE sequence END"
        ).format(table=table)
        snapshots = sql.Identifier(schema, "snapshots")
        self._load_snapshot_sql = sql.SQL(
            "SELECT schema_version, version, last_event_id, data FROM {}"
            " WHERE fold = %s AND stream = %s"
        ).format(snapshots)
        self._save_snapshot_sql = sql.SQL(
            "INSERT INTO {table} AS kept (fold, stream, schema_version, version, last_event_id,"
            " data) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (fold, stream) DO UPDATE SET"
            " schema_version = excluded.schema_version, version = excluded.version,"
            " last_event_id = excluded.last_event_id, data = excluded.data"
            " WHERE kept.schema_version <> excluded.schema_version"
            " OR kept.version < excluded.version"
        ).format(table=snapshots)
        self._by_ids_sql = self._select + sql.SQL(" WHERE event_id = ANY(%s) ORDER BY position")
        self._version_sql = sql.SQL(
            "SELECT coalesce(max(sequence), 0) FROM {} WHERE stream = %s"
        ).format(table)
        self._last_position_sql = sql.SQL("SELECT coalesce(max(position), 0) FROM {}").format(table)

    @classmethod
    async def connect(
        cls, dsn: str, registry: EventRegistry, *, schema: str = "public", readers: int = 2
    ) -> PostgresEventStore:
        """Connect, creating the schema and its objects where missing (safe to run concurrently)."""
        store = cls(dsn, registry, schema, readers)
        try:
            async with store._writer.connection() as connection:
                await store._create_schema(connection)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        # Appends already handed over are committed (or refused) and answered, not dropped.
        while self._committing is not None:
            await asyncio.wait([self._committing])
        await self._listener.close()
        await self._writer.close()
        await self._readers.close()

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
        columns = (
            [new.event_id for new in events],
            [new.event.event_type for new in events],
            [new.event.schema_version for new in events],
            data,
            [new.metadata.source for new in events],
            [new.metadata.actor.user_id for new in events],
            [new.metadata.actor.role.value for new in events],
            [new.metadata.correlation_id for new in events],
            [new.metadata.causation_id for new in events],
            [new.metadata.occurred_at for new in events],
            [new.event.subject for new in events],
            [trace_parent] * len(events),
        )
        future: asyncio.Future[Row] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(stream, expected_version, command_id, guard, columns, future))
        if self._committing is None:
            self._committing = asyncio.create_task(
                self._commit_pending(), name=f"append:{self._schema}"
            )
        (
            first_position,
            recorded_at,
            first_sequence,
            state,
            detail,
            constraint,
            message,
        ) = await future
        if state is not None:
            return await self._refused(
                stream,
                events,
                expected_version,
                command_id,
                guard,
                _Refusal(state, detail, constraint, message),
            )
        return [
            recorded_from_new(
                new, stream, first_sequence + offset, first_position + offset, recorded_at, stored
            )
            for offset, (new, stored) in enumerate(zip(events, data, strict=True))
        ]

    async def _commit_pending(self) -> None:
        """Commits waiting appends, group after group, until none is left."""
        try:
            while True:
                # Nothing is written for a caller that gave up before its group was sent.
                self._pending = [r for r in self._pending if not r.future.done()]
                if not self._pending:
                    return
                group = self._pending[:1]
                total = len(group[0].columns[0])
                for request in self._pending[1:_MAX_REQUESTS_PER_GROUP]:
                    total += len(request.columns[0])
                    if total > _MAX_EVENTS_PER_GROUP:
                        break
                    group.append(request)
                del self._pending[: len(group)]
                await self._commit_group(group)
        finally:
            self._committing = None

    async def _commit_group(self, group: list[_Request]) -> None:
        parameters: list[Any] = [
            [request.stream for request in group],
            [request.expected_version for request in group],
            [len(request.columns[0]) for request in group],
        ]
        for column in range(len(group[0].columns)):
            parameters.append([item for request in group for item in request.columns[column]])
        parameters.append([request.command_id for request in group])
        guards = [request.guard for request in group]
        parameters.append([None if guard is None else guard.stream for guard in guards])
        parameters.append([None if guard is None else guard.version for guard in guards])
        parameters.append(
            [
                None if guard is None or guard.lock is None else key_of(guard.lock)
                for guard in guards
            ]
        )

        async def execute(connection: Connection) -> list[Row]:
            cursor = connection.cursor(binary=True)
            await cursor.execute(self._append_sql, parameters, prepare=True)
            return await cursor.fetchall()

        try:
            # A lost connection runs the whole group again: a request whose commit went
            # through finds its stored events then (see _refused).
            rows = await self._writer.run(execute)
        except asyncio.CancelledError:
            for request in group:
                request.future.cancel()
            raise
        except Exception as error:
            if len(group) > 1 and not is_connection_failure(error):
                # The statement failed as a whole, so nothing of it was written: one request's
                # parameters the checks in append() missed (the server refused them, or psycopg
                # could not encode them). Alone, it fails only itself. The error's type only:
                # its text may quote a value.
                log.warning(
                    "group append failed (%s); appending its requests one by one",
                    type(error).__name__,
                )
                for request in group:
                    await self._commit_group([request])
                return
            self._fail(group, error)
            return
        for request, row in zip(group, rows, strict=True):
            if not request.future.done():  # the caller may have given up waiting
                request.future.set_result(row)

    @staticmethod
    def _fail(group: list[_Request], error: Exception) -> None:
        for request in group:
            if not request.future.done():
                request.future.set_exception(error)

    async def _refused(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int,
        command_id: UUID | None,
        guard: StreamVersion | None,
        refusal: _Refusal,
    ) -> list[RecordedEvent]:
        """The answer to a request its group refused: the stored events if it was a retry of an
        append already stored, else the error. Reads committed state, after the group."""
        state, detail, constraint, message = refusal
        if state in (
            _CONCURRENCY_SQLSTATE,
            _GUARD_SQLSTATE,
            _GUARD_LOCK_SQLSTATE,
            _UNIQUE_VIOLATION,
            _COMMAND_RECORDED_SQLSTATE,
        ):
            # Also what a retry after a lost acknowledgement sees: the batch is stored.
            retried = await self._already_stored(stream, events)
            if retried is not None:
                return retried
        if state == _CONCURRENCY_SQLSTATE:
            raise ConcurrencyError(stream, expected_version, int(detail or "-1"))
        if state == _GUARD_SQLSTATE and guard is not None:
            raise ConcurrencyError(guard.stream, guard.version, int(detail or "-1"))
        if state == _GUARD_LOCK_SQLSTATE and guard is not None and guard.lock is not None:
            raise GuardLockHeld(guard.stream, guard.version, guard.lock)
        if state == _COMMAND_RECORDED_SQLSTATE:
            raise CommandAlreadyRecorded(str(command_id))
        if state == _UNIQUE_VIOLATION:
            # Only a writer that bypasses append_events (and its lock) gets here.
            raise await self._unique_violation(constraint, stream, events, expected_version)
        try:
            error_class = psycopg.errors.lookup(state)
        except KeyError:
            error_class = psycopg.DatabaseError
        raise error_class(f"{message} (SQLSTATE {state})")

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
        clauses = [sql.SQL("stream = %s"), sql.SQL("sequence >= %s")]
        parameters: list[Any] = [stream, from_version]
        if to_version is not None:
            clauses.append(sql.SQL("sequence <= %s"))
            parameters.append(to_version)
        if recorded_until is not None:
            clauses.append(sql.SQL("recorded_at <= %s"))
            parameters.append(_aware("recorded_until", recorded_until))
        if occurred_until is not None:
            clauses.append(sql.SQL("occurred_at <= %s"))
            parameters.append(_aware("occurred_until", occurred_until))
        query = (
            self._select
            + sql.SQL(" WHERE ")
            + sql.SQL(" AND ").join(clauses)
            + sql.SQL(" ORDER BY sequence")
        )
        return await opened_records(await self._fetch(query, parameters), self._registry)

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        check_read(after_position=after_position, limit=limit)
        rows = await self._fetch(self._read_all_sql, (after_position, limit))
        return await opened_records(rows, self._registry)

    async def read_by_causation(self, causation_id: UUID) -> list[RecordedEvent]:
        rows = await self._fetch(self._by_causation_sql, (causation_id,))
        return await opened_records(rows, self._registry)

    async def read_for_command(
        self, causation_id: UUID, stream: str, from_version: int = 1
    ) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
        check_read(stream, from_version=from_version)
        rows = await self._fetch(self._for_command_sql, (causation_id, stream, from_version))
        earlier = [row[1:] for row in rows if row[0] == 1]
        if earlier:
            return await opened_records(earlier, self._registry), []
        return [], await opened_records([row[1:] for row in rows], self._registry)

    async def load_snapshot(self, fold: str, stream: str) -> Snapshot | None:
        rows = await self._fetch(self._load_snapshot_sql, (fold, stream))
        if not rows:
            return None
        [(schema_version, version, last_event_id, data)] = rows
        return Snapshot(fold, stream, schema_version, version, last_event_id, bytes(data))

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        parameters = (
            snapshot.fold,
            snapshot.stream,
            snapshot.schema_version,
            snapshot.version,
            snapshot.last_event_id,
            snapshot.data,
        )

        async def save(connection: Connection) -> None:
            # A reader connection: a snapshot of megabytes must not hold up the appends.
            await connection.execute(self._save_snapshot_sql, parameters)

        await self._readers.run(save)

    async def stream_version(self, stream: str) -> int:
        check_read(stream)
        [(version,)] = await self._fetch(self._version_sql, (stream,))
        return int(version)

    async def last_position(self) -> int:
        [(position,)] = await self._fetch(self._last_position_sql, ())
        return int(position)

    async def wait_for_append(self, after_position: int, max_wait: float) -> None:
        listener = self._listener
        # Listen before looking, so an append committed in between still wakes us.
        await listener.start()
        if listener.latest > after_position:
            return
        wake, generation = listener.wake, listener.generation
        if await self.last_position() > after_position:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(max_wait, 0)):
                # A reconnect may have lost notifications: then return and let the caller look.
                while listener.latest <= after_position and listener.generation == generation:
                    await wake.wait()
                    wake = listener.wake

    async def _fetch(self, query: sql.Composed, parameters: Sequence[Any]) -> list[Row]:
        async def fetch(connection: Connection) -> list[Row]:
            cursor = connection.cursor(binary=True)
            await cursor.execute(query, parameters, prepare=True)
            return await cursor.fetchall()

        return await self._readers.run(fetch)

    async def _already_stored(
        self, stream: str, events: Sequence[NewEvent]
    ) -> list[RecordedEvent] | None:
        """The stored events if this exact batch was appended before (a retry), else None."""
        rows = await self._fetch(self._by_ids_sql, ([new.event_id for new in events],))
        by_id = {row[1]: row for row in rows}
        if len(by_id) != len(events):
            return None
        ordered = [by_id[new.event_id] for new in events]
        # Built first: that fetches the keys ``same_content`` opens sealed values with.
        records = await opened_records(ordered, self._registry)
        if not all(
            same_content(new, row, stream, self._registry)
            for new, row in zip(events, ordered, strict=True)
        ):
            return None
        return records

    async def _unique_violation(
        self,
        constraint: str | None,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int,
    ) -> Exception:
        if constraint == "stored_events_event_id_key":
            rows = await self._fetch(self._by_ids_sql, ([new.event_id for new in events],))
            stored = {row[1] for row in rows}
            first = next((new.event_id for new in events if new.event_id in stored), None)
            return DuplicateEventIdError(str(first or events[0].event_id))
        return ConcurrencyError(stream, expected_version, await self.stream_version(stream))

    async def _create_schema(self, connection: Connection) -> None:
        template = (
            resources.files("casetrail_platform.store")
            .joinpath("postgres_schema.sql")
            .read_text("utf-8")
        )
        script = sql.SQL(template).format(
            schema=sql.Identifier(self._schema),
            table_name=sql.Literal(f'"{self._schema}".stored_events'),
            commands_name=sql.Literal(f'"{self._schema}".recorded_commands'),
            channel=sql.Literal(self._channel),
            lock_class=sql.Literal(_APPEND_LOCK),
        )
        # Two services starting together must not both try to create the same objects.
        async with creating_schema(connection, self._schema):
            await connection.execute(script)


@dataclass
class _Request:
    """One append waiting for its group: its columns as ``append_events_in_group`` takes them."""

    stream: str
    expected_version: int
    command_id: UUID | None
    guard: StreamVersion | None
    columns: tuple[list[Any], ...]
    future: asyncio.Future[Row]


class _Refusal(NamedTuple):
    """Why ``append_events_in_group`` refused a request: its row's error columns."""

    state: str
    detail: str | None
    constraint: str | None
    message: str | None


def _aware(field: str, moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{field} must be timezone-aware")
    return moment


class _Listener:
    """One LISTEN connection, read by a background task, that wakes ``wait_for_append``.

    When the connection is lost (a server restart), the task listens again on a fresh one,
    with backoff while the server is away. Notifications sent meanwhile are lost, so each loss
    bumps ``generation`` and wakes every waiter: they look at the store again and catch up.
    """

    def __init__(self, dsn: str, channel: str, what: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._what = what
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self.wake = asyncio.Event()
        """Set (and replaced) on every notification and every lost connection."""
        self.latest = 0
        """Highest position announced since listening began."""
        self.generation = 0
        """Incremented each time the connection was lost."""

    async def start(self) -> None:
        """Listen (raises ``StorageUnavailableError`` if the database is away)."""
        if self._task is not None:
            return
        async with self._starting:
            if self._task is None:
                connection = await self._listen()
                self._task = asyncio.create_task(self._run(connection), name=self._channel)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> Connection:
        connection = await open_connection(self._dsn, self._what)
        try:
            await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException as error:
            await connection.close()
            if isinstance(error, psycopg.OperationalError):
                raise StorageUnavailableError(self._what) from error
            raise
        return connection

    async def _run(self, connection: Connection | None) -> None:
        delay = 0.1
        try:
            while True:
                if connection is not None:
                    try:
                        async for notify in connection.notifies():
                            self.latest = max(self.latest, int(notify.payload or 0))
                            self._signal()
                            delay = 0.1
                    except psycopg.Error as error:
                        log.warning("event notifications interrupted (%s); reconnecting", error)
                    await connection.close()
                    connection = None
                    self.generation += 1
                    self._signal()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                with contextlib.suppress(StorageUnavailableError):
                    connection = await self._listen()
                    log.info("listening for events again on %s", self._channel)
                    # Appends between the loss and now were announced to nobody.
                    self.generation += 1
                    self._signal()
        finally:
            if connection is not None:
                await connection.close()

    def _signal(self) -> None:
        self.wake.set()
        self.wake = asyncio.Event()
