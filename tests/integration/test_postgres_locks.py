"""PostgreSQL locks when a process dies: the server ends its session, and with it the locks
and the leadership it held; another process takes over (issue 11)."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from casetrail_platform.locking.postgres import PostgresLocks, key_of
from tests.support.servers import postgres_dsn, server_missing

pytestmark = pytest.mark.postgres


async def holder_of(admin: psycopg.AsyncConnection[tuple[int]], name: str) -> int | None:
    """The backend pid holding the advisory lock ``name`` (bigint key: classid = high half,
    objid = low half, objsubid = 1)."""
    key = key_of(name) & 0xFFFFFFFFFFFFFFFF
    cursor = await admin.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
        (key >> 32, key & 0xFFFFFFFF),
    )
    row = await cursor.fetchone()
    return None if row is None else int(row[0])


async def test_a_dead_leader_is_replaced_and_told_to_stop() -> None:
    dsn = postgres_dsn()
    try:
        admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    except psycopg.OperationalError as error:
        server_missing("PostgreSQL", error)
    name = f"test.{uuid.uuid4().hex}.outbox-relay"
    first, second = PostgresLocks(dsn, poll=0.05), PostgresLocks(dsn, poll=0.05)
    stop = asyncio.Event()
    led: list[str] = []
    told_to_stop: list[str] = []

    def worker(who: str):  # type: ignore[no-untyped-def]
        async def work(must_stop: asyncio.Event) -> None:
            led.append(who)
            await must_stop.wait()
            told_to_stop.append(who)

        return work

    leading = asyncio.create_task(first.lead(name, worker("first"), stop))
    async with asyncio.timeout(10):
        while led != ["first"]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    following = asyncio.create_task(second.lead(name, worker("second"), stop))
    await asyncio.sleep(0.3)
    assert led == ["first"]

    pid = await holder_of(admin, name)
    assert pid is not None
    await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    async with asyncio.timeout(10):
        while "second" not in led or "first" not in told_to_stop:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(leading, following)
    await first.close()
    await second.close()
    await admin.close()
    assert led[:2] == ["first", "second"]


async def test_a_lock_held_by_a_dead_session_is_free_again() -> None:
    dsn = postgres_dsn()
    try:
        admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    except psycopg.OperationalError as error:
        server_missing("PostgreSQL", error)
    name = f"test.{uuid.uuid4().hex}.client-key"
    dying, living = PostgresLocks(dsn), PostgresLocks(dsn)
    entered = asyncio.Event()

    async def hold_forever() -> None:
        async with dying.holding([name]):
            entered.set()
            await asyncio.sleep(3600)

    holding = asyncio.create_task(hold_forever())
    await entered.wait()
    pid = await holder_of(admin, name)
    assert pid is not None
    await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    async with asyncio.timeout(10):
        async with living.holding([name]):
            pass
    holding.cancel()
    with pytest.raises((asyncio.CancelledError, psycopg.Error)):
        await holding
    await dying.close()
    await living.close()
    await admin.close()


async def test_an_idle_session_lost_meanwhile_is_replaced() -> None:
    """After a database restart the pooled sessions are gone: the next section opens a new
    one instead of failing."""
    dsn = postgres_dsn()
    try:
        admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    except psycopg.OperationalError as error:
        server_missing("PostgreSQL", error)
    locks = PostgresLocks(dsn)
    name = f"test.{uuid.uuid4().hex}.client-key"
    async with locks.holding([name]):
        pid = await holder_of(admin, name)
    assert pid is not None
    await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    async with asyncio.timeout(10), locks.holding([name]):
        assert await holder_of(admin, name) not in (None, pid)
    await locks.close()
    await admin.close()
