"""PostgreSQL connections that survive a server restart or fail-over.

Every PostgreSQL adapter (event store, checkpoints, read models) takes its connections from a
``PgConnections``: at most ``size`` autocommit connections, opened on demand. A connection the
server dropped is thrown away with every idle one (they went with the same server), and the
next use opens a fresh one, so nothing needs restarting once the database accepts
connections again. While it does not, every use fails fast with ``StorageUnavailableError``
(the driver's error chained as its cause): callers answer UNAVAILABLE or retry later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from casetrail_platform.errors import StorageUnavailableError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
"""A server that neither accepts nor refuses (a fail-over in progress) holds a connect this
long at most: a command waiting on it is then answered UNAVAILABLE."""

Connection = psycopg.AsyncConnection[Any]
T = TypeVar("T")


def is_connection_failure(error: BaseException) -> bool:
    """Whether ``error`` means the database is away rather than that the request is wrong:
    a lost or refused connection, a server shutting down or starting up, a lock or statement
    timeout (psycopg puts all of these under ``OperationalError``)."""
    return isinstance(error, psycopg.OperationalError | StorageUnavailableError)


async def open_connection(
    dsn: str, what: str, *, search_path: str | None = None, settings: str = ""
) -> Connection:
    """One autocommit connection whose times come back as UTC-aware datetimes. ``settings``:
    more session settings, as ``-c name=value`` options."""
    options = "-c TimeZone=UTC"
    if search_path is not None:
        options += f" -c search_path={search_path}"
    if settings:
        options += f" {settings}"
    try:
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, options=options, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
    except psycopg.OperationalError as error:
        raise StorageUnavailableError(what) from error


SCHEMA_LOCK = 0x63747277
"""First key of the advisory lock under which a schema's objects are created (second key: the
schema name's hash). The value the event store has always taken, so a replica of an older
version starting beside a newer one waits for it too."""


@contextlib.asynccontextmanager
async def creating_schema(connection: Connection, schema: str) -> AsyncIterator[None]:
    """A transaction on ``connection`` that holds ``schema``'s creation lock and has made the
    schema if it was missing: every store of a schema (events, checkpoints, parking lot)
    creates its objects inside one. ``IF NOT EXISTS`` alone is not safe against a concurrent
    creator (replicas starting together fail on the catalog's unique indexes)."""
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SCHEMA_LOCK, schema)
        )
        cursor = await connection.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
        )
        if await cursor.fetchone() is None:
            await connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        yield


def _lost(connection: Connection) -> bool:
    return connection.closed or connection.broken


class PgConnections:
    """At most ``size`` connections to one database, reopened after the server came back.

    ``what`` names the storage in errors ("planning read models"), never the DSN.
    """

    def __init__(
        self, dsn: str, size: int, what: str, *, search_path: str | None = None, settings: str = ""
    ) -> None:
        self._dsn = dsn
        self._what = what
        self._search_path = search_path
        self._settings = settings
        self._idle: list[Connection] = []
        self._slots = asyncio.Semaphore(size)
        self._all: set[Connection] = set()

    @property
    def what(self) -> str:
        return self._what

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection for one unit of work. A database error that means the server is away
        (``is_connection_failure``) leaves as ``StorageUnavailableError``."""
        async with self._slots:
            connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = await open_connection(
                    self._dsn, self._what, search_path=self._search_path, settings=self._settings
                )
                self._all.add(connection)
            reusable = True
            try:
                yield connection
            except psycopg.OperationalError as error:
                if _lost(connection):
                    log.warning("%s: database connection lost (%s)", self._what, error)
                    # The server that dropped this one dropped the idle ones too.
                    await self._discard_idle()
                raise StorageUnavailableError(self._what) from error
            except asyncio.CancelledError:
                # Cut off mid-statement (a caller gave up), it may still be busy: never lend
                # it again.
                reusable = False
                raise
            finally:
                if reusable and not _lost(connection):
                    self._idle.append(connection)
                else:
                    self._all.discard(connection)
                    with contextlib.suppress(psycopg.Error):
                        await connection.close()

    async def run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """``work`` on one connection, run again once on a fresh one if the connection was
        lost (an idle connection the restarted server no longer knows). Safe for reads, and for
        appends because a retried append finds its stored events and returns them."""
        used: Connection | None = None
        try:
            async with self.connection() as used:
                return await work(used)
        except StorageUnavailableError:
            if used is None or not _lost(used):
                raise
        async with self.connection() as connection:
            return await work(connection)

    @contextlib.asynccontextmanager
    async def transaction(self, *first: str) -> AsyncIterator[Connection]:
        """A transaction on one connection, ``first`` run as its first statements (``SET
        TRANSACTION ...``): committed on normal exit, rolled back on error. Begun again once on
        a fresh connection if the connection was lost before it was handed out (an idle
        connection the restarted server no longer knows), as ``run`` runs its work again:
        nothing ran in it yet. A snapshot failed UNAVAILABLE once the database was back."""
        for last_try in (False, True):
            used: Connection | None = None
            handed_out = False
            try:
                async with self.connection() as used, used.transaction():
                    for statement in first:
                        await used.execute(statement)
                    handed_out = True
                    yield used
                return
            except StorageUnavailableError:
                if handed_out or last_try or used is None or not _lost(used):
                    raise

    async def close(self) -> None:
        for connection in list(self._all):
            with contextlib.suppress(psycopg.Error):
                await connection.close()
        self._all.clear()
        self._idle.clear()

    async def _discard_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            self._all.discard(connection)
            with contextlib.suppress(psycopg.Error):
                await connection.close()
