"""The locking contract: every adapter (in-process, PostgreSQL) must pass all of it.

``open_locks`` opens the adapter as separate processes would (PostgreSQL: separate sessions);
the in-process adapter is one process by definition, so it hands out the same object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from casetrail_platform.locking.inprocess import InProcessLocks
from casetrail_platform.locking.port import Locks
from tests.support.servers import postgres_dsn, server_missing

LocksOpener = Callable[[], Locks]


@pytest.fixture(params=["inprocess", "postgres"])
async def open_locks(request: pytest.FixtureRequest) -> AsyncIterator[LocksOpener]:
    opened: list[Locks] = []
    if request.param == "inprocess":
        shared = InProcessLocks()

        def open_one() -> Locks:
            return shared

    else:
        import psycopg

        from casetrail_platform.locking.postgres import PostgresLocks

        dsn = postgres_dsn()
        try:
            await (await psycopg.AsyncConnection.connect(dsn)).close()
        except psycopg.OperationalError as error:
            server_missing("PostgreSQL", error)

        def open_one() -> Locks:
            locks = PostgresLocks(dsn, poll=0.05)
            opened.append(locks)
            return locks

    yield open_one
    for locks in opened:
        await locks.close()


def unique(name: str) -> str:
    """Names no other test run holds (the database is shared)."""
    return f"test.{uuid.uuid4().hex}.{name}"


async def test_holders_of_one_name_are_inside_one_at_a_time(open_locks: LocksOpener) -> None:
    name = unique("caseload:worker-7")
    inside = 0
    most = 0

    async def hold(locks: Locks) -> None:
        nonlocal inside, most
        async with locks.holding([name]):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(hold(open_locks()) for _ in range(8)))

    assert most == 1


async def test_overlapping_sets_in_any_order_never_deadlock(open_locks: LocksOpener) -> None:
    a, b, c = unique("a"), unique("b"), unique("c")
    done = 0

    async def hold(locks: Locks, names: list[str]) -> None:
        nonlocal done
        async with locks.holding(names):
            await asyncio.sleep(0.005)
            done += 1

    sets = [[a, b], [b, a], [c, b, a], [a, c], [b, c, b]]
    async with asyncio.timeout(20):
        await asyncio.gather(*(hold(open_locks(), names) for names in sets * 3))

    assert done == 15


async def test_different_names_do_not_wait_for_each_other(open_locks: LocksOpener) -> None:
    first, second = open_locks(), open_locks()
    async with first.holding([unique("one")]):
        async with asyncio.timeout(5):
            async with second.holding([unique("two")]), second.holding([]):
                pass


async def test_a_failing_section_releases_its_locks(open_locks: LocksOpener) -> None:
    name = unique("x")
    locks = open_locks()
    with pytest.raises(RuntimeError):
        async with locks.holding([name]):
            raise RuntimeError("refused")
    async with asyncio.timeout(5):
        async with open_locks().holding([name]):
            pass


async def test_one_leader_at_a_time_and_another_takes_over(open_locks: LocksOpener) -> None:
    name = unique("outbox-relay")
    leading: list[int] = []
    most = 0
    stops = [asyncio.Event() for _ in range(3)]
    started = [asyncio.Event() for _ in range(3)]

    def worker(number: int) -> Callable[[asyncio.Event], object]:
        async def work(must_stop: asyncio.Event) -> None:
            nonlocal most
            leading.append(number)
            most = max(most, len(leading))
            started[number].set()
            await must_stop.wait()
            leading.remove(number)

        return work

    tasks = [
        asyncio.create_task(open_locks().lead(name, worker(n), stops[n]))  # type: ignore[arg-type]
        for n in range(3)
    ]
    async with asyncio.timeout(20):
        while not leading:  # noqa: ASYNC110 - polling what the leaders report is the point
            await asyncio.sleep(0.01)
        first = leading[0]
        await asyncio.sleep(0.3)
        assert leading == [first]
        stops[first].set()
        others = [n for n in range(3) if n != first]
        await asyncio.wait(
            [asyncio.ensure_future(started[n].wait()) for n in others],
            return_when=asyncio.FIRST_COMPLETED,
        )
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)

    assert most == 1
    assert leading == []


async def test_work_failing_while_leading_is_logged_without_its_message(
    open_locks: LocksOpener, caplog: pytest.LogCaptureFixture
) -> None:
    # The message may quote what the work failed on (an event's opened values): PostgreSQL's
    # leader logs the failure by type and place, in-process leading hands it to its caller.
    canary = "CANARY-hiv-status-5120"
    stop = asyncio.Event()

    async def work(must_stop: asyncio.Event) -> None:
        stop.set()
        raise LookupError(f"no worker for {canary!r}")

    with caplog.at_level(logging.WARNING):
        async with asyncio.timeout(20):
            with contextlib.suppress(LookupError):  # in-process: the caller's to log
                await open_locks().lead(unique("failing"), work, stop)
    assert canary not in caplog.text
    assert all(record.exc_info is None for record in caplog.records)
