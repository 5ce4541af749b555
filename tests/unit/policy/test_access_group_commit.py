"""Concurrent reads share one durable commit of their access records (the store's group
commit), and each read still waits for its own record: what one commit failed to store is
disclosed to none of the reads whose records it carried."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable
from typing import TypeVar

from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import (
    AccessControl,
    Disclosure,
    access_stream,
)
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.vocabulary import Decision
from casetrail_platform.store.sqlite import SqliteEventStore
from casetrail_platform.store.sqlite_writer import MAX_REQUESTS_PER_COMMIT
from events.catalog.access import AccessPurpose, RecordSection
from events.catalog.base import Role
from events.envelope import RecordedEvent

T = TypeVar("T")

READER = Principal("coord-carla", Role.COORDINATOR, DEFAULT_HOME_AGENCY, "test")
ALLOWED = Decision(True, "agency-coordinator")


def disclosure(case_id: str) -> Disclosure:
    return Disclosure(case_id, ALLOWED, None, (), (RecordSection.IDENTITY,))


def read(access: AccessControl, case_id: str) -> Awaitable[list[RecordedEvent]]:
    return access.release(None, READER, AccessPurpose.COORDINATION, [disclosure(case_id)])


class Commits:
    """Counts the store's commits and holds its writer thread on request, so that the reads
    made meanwhile queue up and go in the next commit together."""

    def __init__(self, store: SqliteEventStore) -> None:
        self.sizes: list[int] = []
        self._store = store
        notify = store.writer.after_commit
        self._rows = 0

        def counted(connection: sqlite3.Connection) -> None:
            rows = connection.execute("SELECT count(*) FROM stored_events").fetchone()[0]
            self.sizes.append(rows - self._rows)
            self._rows = rows
            if notify is not None:
                notify(connection)

        store.writer.after_commit = counted

    async def held(self) -> threading.Event:
        """Hold the writer thread until the returned event is set."""
        entered, release = threading.Event(), threading.Event()

        def hold(connection: sqlite3.Connection) -> None:
            entered.set()
            release.wait(30)

        asyncio.get_running_loop().create_task(self._store.writer.write(hold))
        await asyncio.to_thread(entered.wait, 30)
        return release


async def queued(calls: list[Awaitable[T]]) -> list[asyncio.Task[T]]:
    """Start the calls and let each put its request in the writer's queue."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    for _ in range(5):
        await asyncio.sleep(0)
    return tasks


async def test_concurrent_reads_share_one_commit_in_the_order_they_came(
    store: SqliteEventStore,
) -> None:
    access = AccessControl(store, None, "casetrail/planning", home_agency=DEFAULT_HOME_AGENCY)
    commits = Commits(store)
    release = await commits.held()

    reads = await queued([read(access, "case-1") for _ in range(20)])
    assert not any(task.done() for task in reads)  # none answered before its record is stored
    release.set()
    recorded = [await task for task in reads]

    assert commits.sizes[-1] == 20  # one commit carried all twenty records
    # Each read's record, in the order the reads came, numbered along the case's access log.
    stream = await store.read_stream(access_stream("case-1"))
    assert [event.event_id for event in stream] == [r[0].event_id for r in recorded]
    assert [event.sequence for event in stream] == list(range(1, 21))


async def test_one_commit_carries_at_most_its_bound(store: SqliteEventStore) -> None:
    access = AccessControl(store, None, "casetrail/planning", home_agency=DEFAULT_HOME_AGENCY)
    commits = Commits(store)
    release = await commits.held()

    reads = await queued([read(access, f"case-{n}") for n in range(MAX_REQUESTS_PER_COMMIT + 10)])
    release.set()
    await asyncio.gather(*reads)

    assert commits.sizes[-2:] == [MAX_REQUESTS_PER_COMMIT, 10]


async def test_a_failed_commit_discloses_nothing_to_any_read_it_carried(
    store: SqliteEventStore,
) -> None:
    """The commit itself fails (a deferred constraint checked at COMMIT): every read whose
    record it carried gets the error, and nothing of theirs is stored."""

    def prepare(connection: sqlite3.Connection) -> None:
        connection.execute("CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY)")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS child (parent INTEGER REFERENCES parent (id)"
            " DEFERRABLE INITIALLY DEFERRED)"
        )

    def orphan(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO child (parent) VALUES (42)")  # fails only at COMMIT

    await store.writer.write(prepare)
    access = AccessControl(store, None, "casetrail/planning", home_agency=DEFAULT_HOME_AGENCY)
    commits = Commits(store)
    before = await store.last_position()
    release = await commits.held()

    poisoned = await queued([store.writer.write(orphan)])
    reads = await queued([read(access, "case-1") for _ in range(5)])
    release.set()
    outcomes = await asyncio.gather(*poisoned, *reads, return_exceptions=True)

    assert all(isinstance(outcome, sqlite3.IntegrityError) for outcome in outcomes)
    assert await store.last_position() == before
    assert await store.read_stream(access_stream("case-1")) == []


async def test_a_refused_record_fails_its_read_alone(store: SqliteEventStore) -> None:
    """A request that fails inside a shared commit rolls back alone (its savepoint)."""
    access = AccessControl(store, None, "casetrail/planning", home_agency=DEFAULT_HOME_AGENCY)
    release = await Commits(store).held()

    def refused(connection: sqlite3.Connection) -> None:
        raise sqlite3.IntegrityError("refused")

    reads = await queued(
        [read(access, "case-1"), store.writer.write(refused), read(access, "case-1")]
    )
    release.set()
    first, failed, last = await asyncio.gather(*reads, return_exceptions=True)

    assert isinstance(failed, sqlite3.IntegrityError)
    assert not isinstance(first, BaseException)
    assert not isinstance(last, BaseException)
    assert len(await store.read_stream(access_stream("case-1"))) == 2
