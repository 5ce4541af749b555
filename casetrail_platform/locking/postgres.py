"""Locks shared by every process of a service through PostgreSQL advisory locks.

Session-level locks: the server releases them when the session ends, so a process that dies
(kill -9, lost host) never leaves a lock behind, and its leadership passes to another process
within a poll. Each name becomes one 64-bit key (BLAKE2b of the name); two names that happen to
share a key only make their holders wait for each other. Advisory locks belong to a database,
so services in other databases never meet; the event store's own append lock uses the two-key
form, a key space PostgreSQL keeps apart from this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import psycopg
from psycopg import pq

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.locking.port import LEADERSHIP_POLL, Locks, Work
from casetrail_platform.store.pg_connections import open_connection

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[Any]

_WHAT = "lock session"
"""How errors name this storage: "the lock session is unavailable"."""

LEADER_SESSION_IDLE_LIMIT = 10.0
"""Seconds the server lets a leadership session sit idle before it ends it, and with it the
leadership. A leader asks its session every poll (``LEADERSHIP_POLL``), so only one that stopped
answering reaches this: a frozen process, or a host cut off without its connection closing,
whose session the server would otherwise keep until TCP keepalive gives up (over 2 h with
the defaults), nobody leading meanwhile. Another replica then takes over within this and a
poll."""


def key_of(name: str) -> int:
    """The advisory-lock key of ``name``: also what the event store's append takes shared for
    a guard's lock (``StreamVersion.lock``), so the two meet."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)


class PostgresLocks(Locks):
    def __init__(self, dsn: str, *, connections: int = 8, poll: float = LEADERSHIP_POLL) -> None:
        """``connections``: at most this many ``holding`` sections at once in this process
        (each keeps one session while inside); leadership uses one more per name led."""
        self._dsn = dsn
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()
        self._poll = poll

    @contextlib.asynccontextmanager
    async def holding(self, names: Iterable[str]) -> AsyncIterator[None]:
        # One order for every caller: overlapping sets never wait for each other in a cycle.
        keys = sorted({key_of(name) for name in names})
        if not keys:
            yield
            return
        async with self._slots:
            connection = await self._locked(keys)
            try:
                yield
            finally:
                try:
                    await self._release(connection)
                except psycopg.OperationalError as error:
                    # The server went away while the locks were held (they went with it).
                    raise StorageUnavailableError("locks") from error

    async def _locked(self, keys: list[int]) -> Connection:
        """A session holding every lock of ``keys`` (in that order). An idle session found
        broken (the server restarted since it was last used) is replaced once."""
        while True:
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else await self._connect()
            try:
                for key in keys:
                    await connection.execute("SELECT pg_advisory_lock(%s)", (key,))
            except psycopg.OperationalError as error:
                await self._discard(connection)
                if reused:
                    continue
                raise StorageUnavailableError(_WHAT) from error
            except BaseException:
                await self._discard(connection)
                raise
            return connection

    async def lead(self, name: str, work: Work, stop: asyncio.Event) -> None:
        key = key_of(name)
        delay = self._poll
        while not stop.is_set():
            try:
                connection = await self._connect(
                    idle_limit=max(LEADER_SESSION_IDLE_LIMIT, 3 * self._poll)
                )
            except (psycopg.Error, StorageUnavailableError) as error:
                log.warning("cannot reach the database to lead %s (%s)", name, error)
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = self._poll
            try:
                while not stop.is_set():
                    cursor = await connection.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                    row = await cursor.fetchone()
                    if row is not None and row[0]:
                        await self._lead_while_held(connection, name, work, stop)
                        break
                    await _sleep_unless(stop, self._poll)
            except psycopg.Error as error:
                log.warning("leadership of %s: database connection lost (%s)", name, error)
            finally:
                await self._discard(connection)
            await _sleep_unless(stop, self._poll)

    async def close(self) -> None:
        for connection in list(self._open):
            await self._discard(connection)
        self._idle.clear()

    async def _lead_while_held(
        self, connection: Connection, name: str, work: Work, stop: asyncio.Event
    ) -> None:
        log.info("this process leads %s", name)
        must_stop = asyncio.Event()
        task = asyncio.ensure_future(work(must_stop))
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    [task, stopping], timeout=self._poll, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    break
                # The lock lives as long as this session: check that it still does.
                async with asyncio.timeout(max(5 * self._poll, 5.0)):
                    await connection.execute("SELECT 1")
        except (psycopg.Error, TimeoutError) as error:
            log.warning("this process no longer leads %s (%s)", name, error)
        finally:
            must_stop.set()
            stopping.cancel()
            try:
                await task
            except Exception as error:
                # By type and place, no traceback: the message may quote what it failed on.
                log.error("%s failed while leading: %s", name, failure_text(error))
        if not stop.is_set() and not connection.broken:
            await connection.execute("SELECT pg_advisory_unlock_all()")

    async def _connect(self, *, idle_limit: float | None = None) -> Connection:
        """A new session; ``StorageUnavailableError`` while the database is away, so a command
        waiting for a lock then is answered UNAVAILABLE, like one waiting for the store.
        ``idle_limit``: seconds idle after which the server ends the session (leadership only:
        a section of ``holding`` may sit idle as long as its work takes)."""
        settings = "" if idle_limit is None else f"-c idle_session_timeout={int(idle_limit * 1000)}"
        connection = await open_connection(self._dsn, _WHAT, settings=settings)
        self._open.add(connection)
        return connection

    async def _release(self, connection: Connection) -> None:
        """Unlock everything the session holds and keep it, or close it (the server then
        unlocks) when it is not in a state to be asked (a cancelled lock wait, a lost link)."""
        if (
            not connection.broken
            and connection.info.transaction_status == pq.TransactionStatus.IDLE
        ):
            try:
                await connection.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error:
                # The session is gone (a database restart), and its locks with it: what the
                # section did stands, and the caller hears about that, not about the unlock.
                await self._discard(connection)
                return
            except BaseException:
                await self._discard(connection)
                raise
            self._idle.append(connection)
            return
        await self._discard(connection)

    async def _discard(self, connection: Connection) -> None:
        self._open.discard(connection)
        with contextlib.suppress(Exception):
            await connection.close()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
