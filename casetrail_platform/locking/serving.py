"""Whether a service is running, for maintenance that must not run beside it.

`casetrail rebuild` throws a projection away and replays it: a service running meanwhile
answers from the half-built projection (a review queue missing entries, an empty directory).
So the rebuild first makes sure the projection is followed by no running process, and keeps
it that way until it is done:

* distributed: the replica following the projection leads it, holding the session-level
  advisory lock ``projection_leadership(...)`` (``PostgresLocks.lead``); the rebuild takes
  that lock without waiting, or finds the service running. A replica started meanwhile
  does not follow the projection until the rebuild has released it.
* embedded: locks are the process's own, so a running service also holds a shared ``flock``
  on ``<data dir>/<service>/serving.lock`` (``mark_serving``); the rebuild takes it
  exclusively without waiting, or finds the service running. A service started meanwhile
  waits for the rebuild to end. The operating system releases both when a process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from casetrail_platform.hosting import Infrastructure

SERVING_FILE = "serving.lock"


def projection_leadership(service: str, projection: str) -> str:
    """The lock whose holder follows ``projection`` of ``service``'s own store."""
    return f"casetrail.{service}.projection.{projection}"


async def mark_serving(infra: Infrastructure, service: str) -> Callable[[], None]:
    """Mark an embedded service running until the returned release is called: hold the
    shared lock (waiting while a rebuild holds it). A distributed one needs no mark (its
    leadership says it): nothing is held."""
    if infra.postgres_dsn is not None:
        return lambda: None
    held = _open(infra.service_dir(service) / SERVING_FILE)
    try:
        await asyncio.to_thread(fcntl.flock, held, fcntl.LOCK_SH)
    except BaseException:
        held.close()
        raise
    return held.close


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
                "SELECT pg_try_advisory_lock(%s)",
                (key_of(projection_leadership(service, projection)),),
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
