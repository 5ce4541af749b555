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
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from casetrail_platform.hosting import Infrastructure

SERVING_FILE = "serving.lock"


def projection_leadership(service: str, projection: str) -> str:
    """The lock whose holder follows ``projection`` of ``service``'s own store."""
    return f"casetrail.{service}.projection.{projection}"


_MARK_SESSION = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
"""The mark's session sits idle for the process's life: a host lost without its connection
closing would otherwise keep it (and refuse rebuilds) until the kernel's keepalive gave up,
over 2 h by default; with these, about a minute."""


def serving(service: str) -> str:
    """The lock every running process of ``service`` holds shared (distributed)."""
    return f"casetrail.{service}.serving"


async def mark_serving(infra: Infrastructure, service: str) -> Callable[[], Awaitable[None]]:
    """Mark the service running until the returned release is awaited: hold the shared mark,
    waiting while a rebuild holds it."""
    if infra.postgres_dsn is not None:
        from casetrail_platform.locking.postgres import key_of
        from casetrail_platform.store.pg_connections import open_connection

        session = await open_connection(infra.postgres_dsn, "lock session", settings=_MARK_SESSION)
        try:
            await session.execute("SELECT pg_advisory_lock_shared(%s)", (key_of(serving(service)),))
        except BaseException:
            await session.close()
            raise
        return session.close  # the session's locks go with it
    held = _open(infra.service_dir(service) / SERVING_FILE)
    try:
        await asyncio.to_thread(fcntl.flock, held, fcntl.LOCK_SH)
    except BaseException:
        held.close()
        raise

    async def release() -> None:
        held.close()

    return release


@contextlib.asynccontextmanager
async def alone(infra: Infrastructure, service: str, projection: str) -> AsyncIterator[bool]:
    """Whether no running process follows ``projection`` of ``service``; while inside (when
    alone), none starts to."""
    if infra.postgres_dsn is not None:
        from casetrail_platform.locking.postgres import key_of
        from casetrail_platform.store.pg_connections import open_connection

        connection = await open_connection(infra.postgres_dsn, "lock session")
        try:
            cursor = await connection.execute(
                "SELECT pg_try_advisory_lock(%s) AND pg_try_advisory_lock(%s)",
                (key_of(projection_leadership(service, projection)), key_of(serving(service))),
            )
            row = await cursor.fetchone()
            yield bool(row and row[0])
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


def _open(path: Path) -> IO[bytes]:
    # Opened for appending: the file is created if missing and never truncated or written.
    return path.open("ab")
