"""Whether a service is running, for maintenance that must not run beside it.

`casetrail rebuild` throws a projection away and replays it: a service running meanwhile
answers from the half-built projection (a review queue missing entries, an empty directory).
So the rebuild first makes sure no process of the service runs, and keeps it that way until it
is done. Every running process holds a shared mark from before it applies anything
(``mark_serving``); the rebuild takes the mark exclusively without waiting, or finds the service
running, and a process started meanwhile waits for the rebuild to end:

* distributed: the mark is the session-level advisory lock ``serving(<service>)`` taken shared
  (``pg_advisory_lock_shared``). The rebuild also takes the projection's leadership lock
  ``projection_leadership(...)`` without waiting, held by the replica following it: a replica
  whose mark went with a database restart still leads. The mark is taken before a replica
  catches its projections up, not only at leadership: between the two nothing would show it.
* embedded: locks are the process's own, so the mark is a shared ``flock`` on
  ``<data dir>/<service>/serving.lock``.

The database (its session ends) or the operating system releases both when a process dies.
A distributed session (a replica's mark, a rebuild's locks) is asked every ``SESSION_CHECK``
and the server ends one idle for ``LEADER_SESSION_IDLE_LIMIT``, as a leader's: a process frozen
or cut off without its connection closing holds nothing for longer than that. A replica's mark
gone with its session (a database restart) is taken again; a rebuild whose session went stops
(``AloneLost``), since a replica may have started since.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from casetrail_platform.infrastructure import Infrastructure

log = logging.getLogger(__name__)

SERVING_FILE = "serving.lock"

SESSION_CHECK = 2.0
"""Seconds between asks of a mark's or a rebuild's session: well within the server's idle
limit (``LEADER_SESSION_IDLE_LIMIT``), and how soon a session lost is noticed."""


class AloneLost(Exception):
    """The rebuild's lock session ended while it ran (the database restarted, or ended it
    after the rebuild stopped answering): a replica may have started since, so the rebuild
    stopped where it was. Run it again once the service is stopped."""


def projection_leadership(service: str, projection: str) -> str:
    """The lock whose holder follows ``projection`` of ``service``'s own store."""
    return f"casetrail.{service}.projection.{projection}"


_KEEPALIVES = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
"""A mark's or a rebuild's session waiting for a lock is not idle: the keepalives end it, about
a minute after its host is lost (the kernel's defaults: over 2 h)."""


def serving(service: str) -> str:
    """The lock every running process of ``service`` holds shared (distributed)."""
    return f"casetrail.{service}.serving"


async def mark_serving(infra: Infrastructure, service: str) -> Callable[[], Awaitable[None]]:
    """Mark the service running until the returned release is awaited: hold the shared mark,
    waiting while a rebuild holds it."""
    if infra.postgres_dsn is not None:
        mark = _Mark(infra.postgres_dsn, service)
        await mark.take()
        keeping = asyncio.create_task(mark.keep())

        async def release_mark() -> None:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
            await mark.release()

        return release_mark
    held = _open(infra.service_dir(service) / SERVING_FILE)
    try:
        await asyncio.to_thread(fcntl.flock, held, fcntl.LOCK_SH)
    except BaseException:
        held.close()
        raise

    async def release() -> None:
        held.close()

    return release


class _Mark:
    """A replica's shared mark on PostgreSQL, taken again whenever its session is lost: a
    mark gone with a database restart otherwise stayed gone, and a rebuild started after the
    restart found nobody serving."""

    def __init__(self, dsn: str, service: str) -> None:
        self._dsn = dsn
        self._service = service
        self._session: psycopg.AsyncConnection[Any] | None = None

    async def take(self) -> None:
        """Open a session and hold the mark on it, waiting while a rebuild holds it."""
        from casetrail_platform.locking.postgres import key_of

        session = await _open_session(self._dsn)
        try:
            await session.execute(
                "SELECT pg_advisory_lock_shared(%s)", (key_of(serving(self._service)),)
            )
        except BaseException:
            await session.close()
            raise
        self._session = session

    async def keep(self) -> None:
        """Ask the session every ``SESSION_CHECK``; once it is lost, take the mark again
        (retrying, up to every 30 s, while the database is away)."""
        import psycopg

        from casetrail_platform.errors import StorageUnavailableError

        while True:
            await asyncio.sleep(SESSION_CHECK)
            if self._session is not None and await _answers(self._session):
                continue
            log.warning(
                "the serving mark of %s went with its session: taking it again", self._service
            )
            await self.close()
            delay = SESSION_CHECK
            while True:
                try:
                    await self.take()
                except (StorageUnavailableError, psycopg.Error):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                log.info("the serving mark of %s is held again", self._service)
                break

    async def release(self) -> None:
        """Give the mark up now: unlocked before its session closes. A closed session's locks
        go only once its server process has noticed, so a rebuild asking right after the
        release could still find the replica running."""
        session = self._session
        if session is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SESSION_CHECK):
                    await session.execute("SELECT pg_advisory_unlock_all()")
        await self.close()  # the session's locks go with it, whatever the unlock did

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()


async def _open_session(dsn: str) -> psycopg.AsyncConnection[Any]:
    """A session the server ends once idle for ``LEADER_SESSION_IDLE_LIMIT``, as a leader's:
    its process asks it every ``SESSION_CHECK``, so only one frozen or cut off (its connection
    left open) gets there, and it then holds nothing for longer."""
    from casetrail_platform.locking.postgres import LEADER_SESSION_IDLE_LIMIT
    from casetrail_platform.store.pg_connections import open_connection

    idle_limit = f"-c idle_session_timeout={int(LEADER_SESSION_IDLE_LIMIT * 1000)}"
    return await open_connection(dsn, "lock session", settings=f"{_KEEPALIVES} {idle_limit}")


async def _answers(session: psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``session`` still answers (and with it, holds its locks)."""
    import psycopg

    try:
        async with asyncio.timeout(5 * SESSION_CHECK):
            await session.execute("SELECT 1")
    except (psycopg.Error, TimeoutError):
        return False
    return True


@contextlib.asynccontextmanager
async def alone(infra: Infrastructure, service: str, projection: str) -> AsyncIterator[bool]:
    """Whether no running process follows ``projection`` of ``service``; while inside (when
    alone), none starts to."""
    if infra.postgres_dsn is not None:
        from casetrail_platform.locking.postgres import key_of

        connection = await _open_session(infra.postgres_dsn)
        try:
            cursor = await connection.execute(
                "SELECT pg_try_advisory_lock(%s) AND pg_try_advisory_lock(%s)",
                (key_of(projection_leadership(service, projection)), key_of(serving(service))),
            )
            row = await cursor.fetchone()
            if not (row and row[0]):
                yield False
                return
            async with _stopped_if_lost(connection, service):
                yield True
        finally:
            await connection.close()  # the session's locks go with it
        return
    held = _open(infra.service_dir(service) / SERVING_FILE)
    try:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        held.close()


@contextlib.asynccontextmanager
async def _stopped_if_lost(
    session: psycopg.AsyncConnection[Any], service: str
) -> AsyncIterator[None]:
    """Ask ``session`` every ``SESSION_CHECK`` while inside; once it no longer answers, cancel
    the body and raise ``AloneLost``: the server may have ended it (and its locks) after the
    rebuild stopped answering, and replicas may be running from it since."""
    inside = asyncio.current_task()
    assert inside is not None
    lost = asyncio.Event()
    done = False

    async def ask() -> None:
        while True:
            await asyncio.sleep(SESSION_CHECK)
            if not await _answers(session):
                break
        lost.set()
        if not done:
            inside.cancel()

    asking = asyncio.create_task(ask())
    try:
        yield
        done = True
    except asyncio.CancelledError:
        if lost.is_set() and inside.uncancel() == 0:
            raise AloneLost(f"{service}: the rebuild's lock session was lost") from None
        raise
    except Exception as error:
        # Thawed after its sessions were ended, the rebuild's own writes may fail first, with
        # ask()'s cancellation delivered into them or still to come: it is taken back.
        done = True
        if lost.is_set() and inside.cancelling():
            inside.uncancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)
        if lost.is_set() or not await _answers(session):
            raise AloneLost(f"{service}: the rebuild's lock session was lost") from error
        raise
    finally:
        asking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asking


def _open(path: Path) -> IO[bytes]:
    # Opened for appending: the file is created if missing (owner-only, as everything in the
    # service's folder) and never truncated or written.
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
