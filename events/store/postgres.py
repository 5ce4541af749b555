"""PostgreSQL event store: the shared-server adapter of ``events.store.port.EventStore``.

Open with ``await PostgresEventStore.connect(dsn, registry, schema=...)``, which creates the
schema (``postgres_schema.sql``) if it is missing. One store object may be used by many
coroutines: appends go through one writer connection, one at a time (appends are serialised
in the database anyway, see ``append_events`` in the schema), reads through a few reader
connections, and ``wait_for_append`` through one LISTEN connection opened on first use.

An append is one call of the ``append_events`` database function in autocommit mode: one
round trip, one transaction, all events of the batch or none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from psycopg import sql

from events.envelope import NewEvent, RecordedEvent
from events.errors import ConcurrencyError, DuplicateEventIdError
from events.registry import EventRegistry, encode
from events.store.port import EventStore
from events.store.rows import COLUMNS, same_content, to_recorded

log = logging.getLogger(__name__)

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# First keys of the advisory locks: appends (second key: the table oid), schema creation.
_APPEND_LOCK = 0x63747276
_SCHEMA_LOCK = _APPEND_LOCK + 1
_CONCURRENCY_SQLSTATE = "CT001"
_UNIQUE_VIOLATION = "23505"

Row = tuple[Any, ...]
T = TypeVar("T")


class PostgresEventStore(EventStore):
    def __init__(self, dsn: str, registry: EventRegistry, schema: str, readers: int) -> None:
        """Use ``connect()``; this only prepares the object."""
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema {schema!r}: use lower-case letters, digits and _")
        if readers < 1:
            raise ValueError("readers must be at least 1")
        self._registry = registry
        self._schema = schema
        self._channel = f"casetrail_events.{schema}"
        self._writer = _Connections(dsn, 1)
        self._readers = _Connections(dsn, readers)
        self._listener = _Listener(dsn, self._channel)
        table = sql.Identifier(schema, "stored_events")
        # %b: arrays travel in binary, which spares psycopg escaping every item as text.
        self._append_sql = sql.SQL(
            "SELECT first_position, recorded_at FROM {}.append_events"
            "(%s, %s::integer, %b, %b, %b, %b, %b, %b, %b, %b, %b, %b, %b)"
        ).format(sql.Identifier(schema))
        self._select = sql.SQL(f"SELECT {COLUMNS} FROM {{}}").format(table)
        self._read_all_sql = self._select + sql.SQL(
            " WHERE position > %s ORDER BY position LIMIT %s"
        )
        self._by_causation_sql = self._select + sql.SQL(
            " WHERE causation_id = %s ORDER BY position"
        )
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
        await self._listener.close()
        await self._writer.close()
        await self._readers.close()

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: int
    ) -> list[RecordedEvent]:
        if not events:
            return []
        _check_text("stream", stream)
        for new in events:
            self._registry.require_registered(new.event)
            _check_text("metadata.source", new.metadata.source)
            _check_text("metadata.actor.user_id", new.metadata.actor.user_id)
            if new.metadata.occurred_at.tzinfo is None:
                raise ValueError("metadata.occurred_at must be timezone-aware")
        ids = [new.event_id for new in events]
        if len(set(ids)) != len(ids):
            raise ValueError("the same event_id appears twice in one append")
        parameters = (
            stream,
            expected_version,
            ids,
            [new.event.event_type for new in events],
            [new.event.schema_version for new in events],
            [encode(new.event) for new in events],
            [new.metadata.source for new in events],
            [new.metadata.actor.user_id for new in events],
            [new.metadata.actor.role.value for new in events],
            [new.metadata.correlation_id for new in events],
            [new.metadata.causation_id for new in events],
            [new.metadata.occurred_at for new in events],
            [new.event.subject for new in events],
        )
        return await self._writer.run(
            lambda connection: self._append_on(
                connection, stream, events, expected_version, parameters
            )
        )

    async def _append_on(
        self,
        connection: psycopg.AsyncConnection[Row],
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int,
        parameters: Sequence[Any],
    ) -> list[RecordedEvent]:
        try:
            cursor = await connection.execute(
                self._append_sql, parameters, prepare=True, binary=True
            )
            first_position, recorded_at = await _one(cursor)
        except psycopg.Error as error:
            if error.sqlstate == _CONCURRENCY_SQLSTATE:
                # Also what a retry after a lost acknowledgement sees: the batch is stored.
                retried = await self._already_stored(connection, stream, events)
                if retried is not None:
                    return retried
                actual = int(error.diag.message_detail or "-1")
                raise ConcurrencyError(stream, expected_version, actual) from None
            if error.sqlstate == _UNIQUE_VIOLATION:
                # Only a writer that bypasses append_events (and its lock) gets here.
                retried = await self._already_stored(connection, stream, events)
                if retried is not None:
                    return retried
                raise await self._unique_violation(
                    connection, error, stream, events, expected_version
                ) from None
            raise
        return [
            RecordedEvent(
                event_id=new.event_id,
                stream=stream,
                sequence=expected_version + offset + 1,
                position=first_position + offset,
                recorded_at=recorded_at,
                event=new.event,
                metadata=new.metadata,
            )
            for offset, new in enumerate(events)
        ]

    async def read_stream(
        self,
        stream: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        recorded_until: datetime | None = None,
        occurred_until: datetime | None = None,
    ) -> list[RecordedEvent]:
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
        return self._decode(await self._fetch(query, parameters))

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self._decode(await self._fetch(self._read_all_sql, (after_position, limit)))

    async def read_by_causation(self, causation_id: UUID) -> list[RecordedEvent]:
        return self._decode(await self._fetch(self._by_causation_sql, (causation_id,)))

    async def stream_version(self, stream: str) -> int:
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
        async def fetch(connection: psycopg.AsyncConnection[Row]) -> list[Row]:
            cursor = connection.cursor(binary=True)
            await cursor.execute(query, parameters, prepare=True)
            return await cursor.fetchall()

        return await self._readers.run(fetch)

    def _decode(self, rows: list[Row]) -> list[RecordedEvent]:
        registry = self._registry
        return [to_recorded(row, registry) for row in rows]

    async def _stored_rows(
        self, connection: psycopg.AsyncConnection[Any], events: Sequence[NewEvent]
    ) -> list[Row]:
        cursor = connection.cursor(binary=True)
        await cursor.execute(self._by_ids_sql, ([new.event_id for new in events],))
        return await cursor.fetchall()

    async def _already_stored(
        self, connection: psycopg.AsyncConnection[Any], stream: str, events: Sequence[NewEvent]
    ) -> list[RecordedEvent] | None:
        """The stored events if this exact batch was appended before (a retry), else None."""
        by_id = {row[1]: row for row in await self._stored_rows(connection, events)}
        if len(by_id) != len(events):
            return None
        rows = [by_id[new.event_id] for new in events]
        if not all(same_content(new, row, stream) for new, row in zip(events, rows, strict=True)):
            return None
        return self._decode(rows)

    async def _unique_violation(
        self,
        connection: psycopg.AsyncConnection[Any],
        error: psycopg.Error,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int,
    ) -> Exception:
        if error.diag.constraint_name == "stored_events_event_id_key":
            stored = {row[1] for row in await self._stored_rows(connection, events)}
            first = next((new.event_id for new in events if new.event_id in stored), None)
            return DuplicateEventIdError(str(first or events[0].event_id))
        cursor = await connection.execute(self._version_sql, (stream,))
        (actual,) = await _one(cursor)
        return ConcurrencyError(stream, expected_version, int(actual))

    async def _create_schema(self, connection: psycopg.AsyncConnection[Any]) -> None:
        template = (
            resources.files("events.store").joinpath("postgres_schema.sql").read_text("utf-8")
        )
        script = sql.SQL(template).format(
            schema=sql.Identifier(self._schema),
            table_name=sql.Literal(f'"{self._schema}".stored_events'),
            channel=sql.Literal(self._channel),
            lock_class=sql.Literal(_APPEND_LOCK),
        )
        async with connection.transaction():
            # Two services starting together must not both try to create the same objects.
            await connection.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_SCHEMA_LOCK, self._schema)
            )
            cursor = await connection.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,)
            )
            if await cursor.fetchone() is None:
                await connection.execute(
                    sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self._schema))
                )
            await connection.execute(script)


async def _one(cursor: psycopg.AsyncCursor[Row]) -> Row:
    row = await cursor.fetchone()
    assert row is not None, "the query returns exactly one row"
    return row


def _check_text(field: str, value: str) -> None:
    if not value:
        raise ValueError(f"{field} must not be empty")
    if "\x00" in value:
        raise ValueError(f"{field} must not contain NUL characters")


def _aware(field: str, moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{field} must be timezone-aware")
    return moment


async def _open(dsn: str) -> psycopg.AsyncConnection[Row]:
    connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    # Times come back as UTC-aware datetimes whatever the server's default zone.
    await connection.execute("SET TIME ZONE 'UTC'")
    return connection


class _Connections:
    """At most ``size`` autocommit connections, opened on demand and reopened when broken."""

    def __init__(self, dsn: str, size: int) -> None:
        self._dsn = dsn
        self._idle: list[psycopg.AsyncConnection[Row]] = []
        self._slots = asyncio.Semaphore(size)
        self._all: set[psycopg.AsyncConnection[Row]] = set()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Row]]:
        async with self._slots:
            connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = await _open(self._dsn)
                self._all.add(connection)
            try:
                yield connection
            finally:
                if connection.closed or connection.broken:
                    self._all.discard(connection)
                    await connection.close()
                else:
                    self._idle.append(connection)

    async def run(self, work: Callable[[psycopg.AsyncConnection[Row]], Awaitable[T]]) -> T:
        """``work`` on one connection, run again once on a fresh one if the connection was lost
        (e.g. the server restarted). Safe for reads, and for appends because a retried append
        finds its stored events and returns them."""
        used: psycopg.AsyncConnection[Row] | None = None
        try:
            async with self.connection() as used:
                return await work(used)
        except psycopg.OperationalError as error:
            if used is None or not used.closed:
                raise
            log.warning("database connection lost (%s); retrying once", error)
        async with self.connection() as connection:
            return await work(connection)

    async def close(self) -> None:
        for connection in list(self._all):
            await connection.close()
        self._all.clear()
        self._idle.clear()


class _Listener:
    """One LISTEN connection, read by a background task, that wakes ``wait_for_append``."""

    def __init__(self, dsn: str, channel: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self.wake = asyncio.Event()
        """Set (and replaced) on every notification and every lost connection."""
        self.latest = 0
        """Highest position announced since listening began."""
        self.generation = 0
        """Incremented each time the connection was lost."""

    async def start(self) -> None:
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

    async def _listen(self) -> psycopg.AsyncConnection[Row]:
        connection = await _open(self._dsn)
        try:
            await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            await connection.close()
            raise
        return connection

    async def _run(self, connection: psycopg.AsyncConnection[Row]) -> None:
        delay = 0.1
        try:
            while True:
                try:
                    async for notify in connection.notifies():
                        self.latest = max(self.latest, int(notify.payload or 0))
                        self._signal()
                        delay = 0.1
                except psycopg.Error as error:
                    log.warning("event notifications interrupted (%s); reconnecting", error)
                await connection.close()
                self.generation += 1
                self._signal()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                with contextlib.suppress(psycopg.Error):
                    connection = await self._listen()
        finally:
            await connection.close()

    def _signal(self) -> None:
        self.wake.set()
        self.wake = asyncio.Event()
