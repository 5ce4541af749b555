"""What only the PostgreSQL event store does; the shared behaviour is in tests/contract."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from casetrail_platform.errors import (
    CommandAlreadyRecorded,
    ConcurrencyError,
    DuplicateEventIdError,
)
from casetrail_platform.projections.postgres import PostgresReadModelStore
from casetrail_platform.store.port import NO_STREAM, StreamVersion
from casetrail_platform.store.postgres import PostgresEventStore
from casetrail_platform.store.postgres_checkpoints import PostgresCheckpointStore
from casetrail_platform.store.postgres_parking import PostgresParkingLot
from events.catalog.base import CaseEvent, Role
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from events.errors import UnknownEventTypeError
from events.registry import EventRegistry, encode
from tests.support.servers import postgres_dsn, server_missing

pytestmark = pytest.mark.postgres


class CaseOpened(CaseEvent):
    event_type = "casetrail.pgtest.case-opened"
    case_id: str


class CaseTouched(CaseEvent):
    event_type = "casetrail.pgtest.case-touched"
    case_id: str
    n: int


class NotRegistered(CaseEvent):
    event_type = "casetrail.pgtest.not-registered"
    case_id: str


def touched(case_id: str, n: int = 0, *, event_id: uuid.UUID | None = None) -> NewEvent:
    return NewEvent(
        event=CaseTouched(case_id=case_id, n=n),
        metadata=EventMetadata(
            source="casetrail/pgtest",
            actor=Actor("worker-1", Role.SOCIAL_WORKER),
            occurred_at=datetime.now(UTC),
            correlation_id=uuid.uuid4(),
        ),
        event_id=event_id or uuid.uuid4(),
    )


Opener = Callable[[], Awaitable[PostgresEventStore]]


@pytest.fixture
async def admin() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    try:
        connection = await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True)
    except psycopg.OperationalError as error:
        server_missing("PostgreSQL", error)
    async with connection:
        yield connection


@pytest.fixture
async def schema(admin: psycopg.AsyncConnection[Any]) -> AsyncIterator[str]:
    """A fresh schema the store creates itself (dropped afterwards)."""
    name = f"pgtest_{uuid.uuid4().hex[:12]}"
    yield name
    await admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def dsn(schema: str) -> str:
    """Named after the schema, so a test touches only its own server connections."""
    return make_conninfo(postgres_dsn(), application_name=schema)


@pytest.fixture
async def open_store(schema: str, dsn: str) -> AsyncIterator[Opener]:
    opened: list[PostgresEventStore] = []
    registry = EventRegistry([CaseOpened, CaseTouched])

    async def open_one() -> PostgresEventStore:
        store = await PostgresEventStore.connect(dsn, registry, schema=schema)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: Opener) -> PostgresEventStore:
    return await open_store()


async def _scalar(admin: psycopg.AsyncConnection[Any], query: str) -> Any:
    cursor = await admin.execute(query)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll until ``condition`` holds (a guard against hanging, not a timing assertion)."""
    async with asyncio.timeout(30):
        while not await condition():  # noqa: ASYNC110  # the state is the server's, not ours
            await asyncio.sleep(0.01)


async def test_starting_many_stores_at_once_creates_the_schema_once(
    open_store: Opener, schema: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    stores = await asyncio.gather(*(open_store() for _ in range(6)))
    await stores[0].append("case-1", [touched("1")], NO_STREAM)
    again = await open_store()

    assert await again.stream_version("case-1") == 1
    assert await _scalar(admin, f'SELECT count(*) FROM "{schema}".stored_events') == 1
    triggers = await _scalar(
        admin,
        "SELECT count(*) FROM pg_trigger"
        f" WHERE tgrelid = '\"{schema}\".stored_events'::regclass AND NOT tgisinternal",
    )
    assert triggers == 1


async def test_replicas_starting_together_create_their_checkpoints_and_parking_lot(
    admin: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    """Every store of a schema creates its objects under the schema's lock: ``IF NOT EXISTS``
    alone let replicas starting together fail on the catalog's unique indexes."""
    for attempt in range(6):
        schema = f"pgtest_{uuid.uuid4().hex[:12]}"
        try:
            if attempt % 2:  # as at a service's start: its event store made the schema first
                await admin.execute(f'CREATE SCHEMA "{schema}"')
            opened = await asyncio.gather(
                *(PostgresCheckpointStore.connect(dsn, schema=schema) for _ in range(4)),
                *(PostgresParkingLot.connect(dsn, schema=schema) for _ in range(4)),
                return_exceptions=True,
            )
            for store in opened:
                if isinstance(store, PostgresCheckpointStore):
                    await store.close()
            assert [repr(failed) for failed in opened if isinstance(failed, BaseException)] == []
        finally:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_replicas_starting_together_create_their_read_models_schema(
    admin: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    """The read models made their schema with ``IF NOT EXISTS`` before taking any lock:
    connects on a fresh database failed on pg_namespace's unique index (UniqueViolation, which
    a distributed start-up does not retry), about two in five at six at once."""
    for _ in range(6):
        schema = f"pgtest_{uuid.uuid4().hex[:12]}"
        try:
            opened = await asyncio.gather(
                *(PostgresReadModelStore.connect(dsn, schema=schema) for _ in range(6)),
                return_exceptions=True,
            )
            for store in opened:
                if isinstance(store, PostgresReadModelStore):
                    await store.close()
            assert [repr(failed) for failed in opened if isinstance(failed, BaseException)] == []
        finally:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_a_schema_of_the_longest_name_takes_appends_and_wakes_its_waiters(
    admin: psycopg.AsyncConnection[Any],
) -> None:
    schema = f"pgtest_{uuid.uuid4().hex}".ljust(46, "s")
    registry = EventRegistry([CaseOpened, CaseTouched])
    store = await PostgresEventStore.connect(postgres_dsn(), registry, schema=schema)
    try:
        waiting = asyncio.create_task(store.wait_for_append(0, 30))
        await asyncio.sleep(0.05)
        await store.append("case-1", [touched("1")], NO_STREAM)
        await asyncio.wait_for(waiting, 30)
        assert await store.last_position() == 1
    finally:
        await store.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_data_is_stored_as_the_encoded_bytes(
    store: PostgresEventStore, schema: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    new = touched("1", 7)
    await store.append("case-1", [new], NO_STREAM)

    stored = await _scalar(admin, f'SELECT data FROM "{schema}".stored_events')

    assert bytes(stored) == encode(new.event)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET stream = 'case-2'",
        "DELETE FROM {table}",
        "DELETE FROM {table} WHERE false",
        "TRUNCATE {table}",
    ],
)
async def test_stored_events_cannot_be_changed_through_sql(
    store: PostgresEventStore, schema: str, admin: psycopg.AsyncConnection[Any], statement: str
) -> None:
    [recorded] = await store.append("case-1", [touched("1")], NO_STREAM)

    with pytest.raises(psycopg.Error, match="immutable") as raised:
        await admin.execute(statement.format(table=f'"{schema}".stored_events'))

    assert raised.value.sqlstate == "CT003"
    assert await store.read_all() == [recorded]


async def test_a_store_made_before_the_command_table_gets_its_commands_on_start(
    open_store: Opener, schema: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    store = await open_store()
    command = uuid.uuid4()
    first = touched("1")
    first = replace(first, metadata=replace(first.metadata, causation_id=command))
    # As an older version stored a command: its events only.
    await store.append("case-1", [first], NO_STREAM)
    await admin.execute(f'DROP TABLE "{schema}".recorded_commands')

    upgraded = await open_store()
    other = replace(touched("2"), metadata=first.metadata)
    with pytest.raises(CommandAlreadyRecorded):
        await upgraded.append("case-2", [other], NO_STREAM, command_id=command)
    assert await upgraded.stream_version("case-2") == 0
    with pytest.raises(psycopg.Error, match="immutable"):
        await admin.execute(f'DELETE FROM "{schema}".recorded_commands')


async def test_positions_stay_dense_after_failed_appends(store: PostgresEventStore) -> None:
    [first] = await store.append("case-1", [touched("1")], NO_STREAM)
    with pytest.raises(ConcurrencyError):
        await store.append("case-1", [touched("1")], NO_STREAM)
    stranger = replace(touched("1"), event=NotRegistered(case_id="1"))
    with pytest.raises(UnknownEventTypeError):
        await store.append("case-2", [stranger], NO_STREAM)
    with pytest.raises((DuplicateEventIdError, ConcurrencyError)):
        await store.append("case-3", [touched("3", event_id=first.event_id)], NO_STREAM)

    [second] = await store.append("case-4", [touched("4")], NO_STREAM)

    assert second.position == first.position + 1


async def test_a_batch_shares_one_recorded_at_that_never_goes_backwards(
    store: PostgresEventStore,
) -> None:
    for i in range(5):
        await store.append(f"case-{i}", [touched(str(i), n) for n in range(3)], NO_STREAM)

    everything = await store.read_all()

    assert [r.position for r in everything] == list(range(1, 16))
    times = [r.recorded_at for r in everything]
    assert times == sorted(times)
    assert len(set(times)) == 5


async def test_read_by_causation_finds_what_one_command_recorded(
    store: PostgresEventStore,
) -> None:
    command = uuid.uuid4()

    def caused(new: NewEvent) -> NewEvent:
        return replace(new, metadata=replace(new.metadata, causation_id=command))

    await store.append("case-1", [touched("1")], NO_STREAM)
    first = await store.append("case-1", [caused(touched("1", 1))], 1)
    await store.append("case-2", [touched("2")], NO_STREAM)
    second = await store.append("case-2", [caused(touched("2", 1)), caused(touched("2", 2))], 1)

    assert await store.read_by_causation(command) == first + second
    assert await store.read_by_causation(uuid.uuid4()) == []


async def test_many_writers_and_readers_never_see_a_gap(open_store: Opener) -> None:
    """Positions are dense, so "never skips" means each read starts right after the last."""
    writers = [await open_store() for _ in range(8)]
    readers = [await open_store() for _ in range(3)]
    per_writer = 40
    expected_total = 0
    done = asyncio.Event()
    shared_streams = ["case-shared-a", "case-shared-b"]

    async def write(store: PostgresEventStore, number: int) -> None:
        nonlocal expected_total
        chance = random.Random(number)
        for i in range(per_writer):
            size = chance.randint(1, 4)
            if i % 4 == 0:  # contend on a shared stream, retrying on conflicts
                stream = chance.choice(shared_streams)
                while True:
                    version = await store.stream_version(stream)
                    try:
                        await store.append(
                            stream, [touched(stream, n) for n in range(size)], version
                        )
                        break
                    except ConcurrencyError:
                        continue
            else:
                stream = f"case-{number}-{i}"
                await store.append(stream, [touched(stream, n) for n in range(size)], NO_STREAM)
            expected_total += size

    async def read(store: PostgresEventStore, limit: int) -> list[RecordedEvent]:
        seen: list[RecordedEvent] = []
        position = 0
        while True:
            finished = done.is_set()
            batch = await store.read_all(position, limit)
            positions = [r.position for r in batch]
            assert positions == list(range(position + 1, position + 1 + len(batch)))
            seen.extend(batch)
            if batch:
                position = batch[-1].position
            elif finished:
                return seen
            await asyncio.sleep(0)

    reading = [
        asyncio.create_task(read(r, limit)) for r, limit in zip(readers, [1, 7, 100], strict=True)
    ]
    writing = [
        asyncio.create_task(write(store, n))
        for n, store in enumerate(writers + writers)  # two coroutines share each store
    ]
    await asyncio.gather(*writing)
    done.set()
    results = await asyncio.gather(*reading)

    everything = await readers[0].read_all(0, 100_000)
    assert len(everything) == expected_total
    for seen in results:
        assert seen == everything
    for stream in shared_streams:
        sequences = [r.sequence for r in await readers[0].read_stream(stream)]
        assert sequences == list(range(1, len(sequences) + 1))


async def _insert_behind_the_lock(
    schema: str, stream: str, event_id: uuid.UUID
) -> psycopg.AsyncConnection[Any]:
    """An open transaction holding an uncommitted row written without append_events."""
    raw = await psycopg.AsyncConnection.connect(postgres_dsn())
    await raw.execute(
        f'INSERT INTO "{schema}".stored_events (position, occurred_at, sequence, schema_version,'
        " event_id, correlation_id, stream, event_type, source, actor_id, actor_role, subject,"
        " data) VALUES (1000, now(), 1, 1, %s, %s, %s, %s, 'raw', 'raw', 'system', '1', %s)",
        (event_id, uuid.uuid4(), stream, CaseOpened.event_type, b'{"case_id":"1"}'),
    )
    return raw


async def _append_while_a_raw_insert_commits(
    store: PostgresEventStore,
    admin: psycopg.AsyncConnection[Any],
    schema: str,
    raw_stream: str,
    raw_event_id: uuid.UUID,
    new: NewEvent,
) -> None:
    raw = await _insert_behind_the_lock(schema, raw_stream, raw_event_id)
    async with raw:
        appending = asyncio.create_task(store.append("case-1", [new], NO_STREAM))

        async def append_waits_for_the_raw_row() -> bool:
            waiting = await _scalar(
                admin,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                f" AND application_name = '{schema}' AND query LIKE '%append_events%'",
            )
            return bool(waiting)

        await _until(append_waits_for_the_raw_row)
        await raw.commit()
        await appending


async def test_a_racing_writer_that_bypassed_the_lock_is_a_concurrency_error(
    store: PostgresEventStore, schema: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    with pytest.raises(ConcurrencyError) as raised:
        await _append_while_a_raw_insert_commits(
            store, admin, schema, "case-1", uuid.uuid4(), touched("1")
        )

    assert (raised.value.expected_version, raised.value.actual_version) == (NO_STREAM, 1)
    assert [r.event_id for r in await store.read_all()] == [
        r.event_id for r in await store.read_stream("case-1")
    ]


async def test_a_racing_writer_that_took_the_event_id_is_a_duplicate_error(
    store: PostgresEventStore, schema: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    new = touched("1")

    with pytest.raises(DuplicateEventIdError) as raised:
        await _append_while_a_raw_insert_commits(store, admin, schema, "case-9", new.event_id, new)

    assert raised.value.event_id == str(new.event_id)
    assert await store.stream_version("case-1") == NO_STREAM


async def test_wait_for_append_is_woken_by_an_append_on_another_connection(
    open_store: Opener,
) -> None:
    waiter, writer = await open_store(), await open_store()
    await waiter.wait_for_append(0, 0.01)  # nothing appended: returns when the wait is over

    waiting = asyncio.create_task(waiter.wait_for_append(0, 60))
    await asyncio.sleep(0.05)
    await writer.append("case-1", [touched("1")], NO_STREAM)

    await asyncio.wait_for(waiting, 30)
    await asyncio.wait_for(waiter.wait_for_append(0, 60), 30)  # already there: no wait


async def _terminate(admin: psycopg.AsyncConnection[Any], schema: str, query_like: str) -> int:
    """Ends the test's own server connections (named after its schema) whose query matches."""
    cursor = await admin.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = %s AND query LIKE %s",
        (schema, query_like),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_waiting_survives_a_lost_listen_connection(
    open_store: Opener, schema: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    waiter, writer = await open_store(), await open_store()
    waiting = asyncio.create_task(waiter.wait_for_append(0, 60))
    await asyncio.sleep(0.05)

    assert await _terminate(admin, schema, "LISTEN %") == 1
    await asyncio.wait_for(waiting, 30)  # woken: notifications may have been missed

    async def listening_again() -> bool:
        return bool(
            await _scalar(
                admin,
                "SELECT count(*) FROM pg_stat_activity"
                f" WHERE application_name = '{schema}' AND query LIKE 'LISTEN %'",
            )
        )

    await _until(listening_again)
    waiting = asyncio.create_task(waiter.wait_for_append(0, 60))
    await asyncio.sleep(0.05)
    await writer.append("case-1", [touched("1")], NO_STREAM)
    await asyncio.wait_for(waiting, 30)


async def test_a_lost_connection_is_reopened_and_the_call_retried(
    store: PostgresEventStore, schema: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    await store.append("case-1", [touched("1")], NO_STREAM)
    assert await store.last_position() == 1

    assert await _terminate(admin, schema, "%") == 2  # the store's writer and reader

    [recorded] = await store.append("case-1", [touched("1")], 1)
    assert recorded.position == 2
    assert await store.last_position() == 2


async def test_a_snapshot_begun_on_a_lost_connection_is_begun_again_on_a_fresh_one(
    dsn: str, schema: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    """A snapshot (audit's export, state as of a moment, case as seen) after the server
    restarted, as the store's other reads: before it began, nothing ran in it, so it is begun
    again, where it failed UNAVAILABLE once the database was back."""
    read_models = await PostgresReadModelStore.connect(dsn, schema=schema)
    try:
        async with read_models.transaction() as transaction:
            await transaction.put("cases", "case-1", {"notes": 1})
        async with read_models.snapshot() as view:
            assert await view.get("cases", "case-1") == {"notes": 1}

        assert await _terminate(admin, schema, "%") >= 3  # writer, listener, snapshot's

        async with read_models.snapshot() as view:
            assert await view.get("cases", "case-1") == {"notes": 1}
    finally:
        await read_models.close()


async def test_bad_input_is_refused_naming_the_field(store: PostgresEventStore) -> None:
    naive = touched("1")
    naive = replace(naive, metadata=replace(naive.metadata, occurred_at=datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="occurred_at"):
        await store.append("case-1", [naive], NO_STREAM)
    with pytest.raises(ValueError, match="stream"):
        await store.append("case\x00", [touched("1")], NO_STREAM)
    with pytest.raises(ValueError, match="stream"):
        await store.append("", [touched("1")], NO_STREAM)
    twice = touched("1")
    with pytest.raises(ValueError, match="event_id"):
        await store.append("case-1", [twice, twice], NO_STREAM)
    with pytest.raises(ValueError, match="recorded_until"):
        await store.read_stream("case-1", recorded_until=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="schema"):
        await PostgresEventStore.connect(postgres_dsn(), EventRegistry(), schema='x"; drop')
    # Its NOTIFY channel, casetrail_events.<schema>, would pass 63 bytes: every append failed.
    with pytest.raises(ValueError, match="at most 46 characters"):
        await PostgresEventStore.connect(postgres_dsn(), EventRegistry(), schema="s" * 47)

    assert await store.last_position() == 0


@pytest.fixture
def round_trips(store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests each group commit of ``store`` carried, in order."""
    groups: list[int] = []
    commit_group = store._commit_group

    async def counting(group: list[Any]) -> None:
        groups.append(len(group))
        await commit_group(group)

    monkeypatch.setattr(store, "_commit_group", counting)
    return groups


async def test_a_refused_request_fails_alone_in_its_group(
    store: PostgresEventStore, round_trips: list[int]
) -> None:
    [existing] = await store.append("case-1", [touched("1")], NO_STREAM)
    retried = [touched("5", n) for n in range(2)]
    stored_before = await store.append("case-5", retried, NO_STREAM)
    round_trips.clear()

    # gather starts every append before the first group is sent: they all share one commit
    outcomes = await asyncio.gather(
        store.append("case-2", [touched("2", n) for n in range(3)], NO_STREAM),
        store.append("case-1", [touched("1")], NO_STREAM),  # wrong version
        store.append("case-3", [touched("3")], NO_STREAM),
        store.append("case-4", [touched("4", event_id=existing.event_id)], NO_STREAM),
        store.append("case-5", retried, NO_STREAM),  # a retry: answered with the stored ones
        store.append("case-6", [touched("6"), touched("6", 1)], NO_STREAM),
        return_exceptions=True,
    )

    assert round_trips == [6]
    second, conflict, third, duplicate, again, sixth = outcomes
    assert isinstance(conflict, ConcurrencyError)
    assert (conflict.expected_version, conflict.actual_version) == (NO_STREAM, 1)
    assert isinstance(duplicate, DuplicateEventIdError)
    assert duplicate.event_id == str(existing.event_id)
    assert again == stored_before
    assert isinstance(second, list)
    assert isinstance(third, list)
    assert isinstance(sixth, list)
    everything = await store.read_all()
    assert [r.position for r in everything] == list(range(1, 10))  # dense: no hole left
    assert everything[3:] == second + third + sixth
    times = [r.recorded_at for r in everything]
    assert times == sorted(times)
    assert await store.stream_version("case-1") == 1
    assert await store.stream_version("case-4") == NO_STREAM


async def test_requests_on_one_stream_in_one_group_see_each_other(
    store: PostgresEventStore, round_trips: list[int]
) -> None:
    first, rival, follower = touched("1", 1), touched("1", 2), touched("1", 3)

    outcomes = await asyncio.gather(
        store.append("case-1", [first], NO_STREAM),
        store.append("case-1", [rival], NO_STREAM),  # as if sent after the first: too late
        store.append("case-1", [follower], 1),  # expects the first one's version
        return_exceptions=True,
    )

    assert round_trips == [3]
    won, lost, followed = outcomes
    assert isinstance(lost, ConcurrencyError)
    assert (lost.expected_version, lost.actual_version) == (NO_STREAM, 1)
    assert isinstance(won, list)
    assert isinstance(followed, list)
    assert [r.event_id for r in await store.read_stream("case-1")] == [
        first.event_id,
        follower.event_id,
    ]
    assert [r.sequence for r in won + followed] == [1, 2]
    assert [r.position for r in won + followed] == [1, 2]


async def test_a_group_notifies_waiters_and_bad_input_stays_out_of_it(
    open_store: Opener, round_trips: list[int], store: PostgresEventStore
) -> None:
    waiter = await open_store()
    waiting = asyncio.create_task(waiter.wait_for_append(2, 60))
    await asyncio.sleep(0.05)

    outcomes = await asyncio.gather(
        store.append("case-1", [touched("1")], NO_STREAM),
        store.append("case-2", [touched("2\x00")], NO_STREAM),  # refused before sending
        store.append("case-3", [touched("3")], 2**31),
        store.append("case-4", [touched("4"), touched("4", 1)], NO_STREAM),
        return_exceptions=True,
    )

    assert round_trips == [2]
    assert isinstance(outcomes[1], ValueError)
    assert "subject" in str(outcomes[1])
    assert isinstance(outcomes[2], ValueError)
    assert "expected_version" in str(outcomes[2])
    await asyncio.wait_for(waiting, 30)  # woken by the group's last position, 3
    assert await waiter.last_position() == 3


@pytest.mark.parametrize(
    ("source", "failure"),
    [
        # a NUL in a text column: the server refuses the whole statement before anything runs
        ("casetrail/pg\x00test", psycopg.Error),
        # a lone surrogate: psycopg cannot encode the parameters, nothing is sent
        ("casetrail/pg\ud800test", UnicodeEncodeError),
    ],
)
async def test_a_group_that_fails_as_a_whole_is_sent_again_one_by_one(
    store: PostgresEventStore,
    round_trips: list[int],
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    failure: type[Exception],
) -> None:
    """A request whose parameters cannot be sent (a check in append() missed) fails alone."""
    bad = touched("2")
    bad = replace(bad, metadata=replace(bad.metadata, source=source))
    # Where both adapters check an append (``rows.checked_data``): the check that would refuse it.
    monkeypatch.setattr(
        "casetrail_platform.store.rows.storable_data",
        lambda stream, events, guard: [encode(new.event) for new in events],
    )

    outcomes = await asyncio.gather(
        store.append("case-1", [touched("1")], NO_STREAM),
        store.append("case-2", [bad], NO_STREAM),
        store.append("case-3", [touched("3")], NO_STREAM),
        return_exceptions=True,
    )

    assert round_trips == [3, 1, 1, 1]
    assert isinstance(outcomes[0], list)
    assert isinstance(outcomes[2], list)
    assert isinstance(outcomes[1], failure)
    assert [r.position for r in await store.read_all()] == [1, 2]


_OLDER_APPEND = """
CREATE FUNCTION "{schema}".append_events(
    p_stream text, p_expected integer, p_event_ids uuid[], p_event_types text[],
    p_schema_versions integer[], p_data bytea[], p_sources text[], p_actor_ids text[],
    p_actor_roles text[], p_correlation_ids uuid[], p_causation_ids uuid[],
    p_occurred_at timestamptz[], p_subjects text[], p_trace_parents text[],
    OUT first_position bigint, OUT recorded_at timestamptz, OUT first_sequence integer)
LANGUAGE sql AS $$
    SELECT * FROM "{schema}".append_events(p_stream, p_expected, p_event_ids, p_event_types,
        p_schema_versions, p_data, p_sources, p_actor_ids, p_actor_roles, p_correlation_ids,
        p_causation_ids, p_occurred_at, p_subjects, p_trace_parents, NULL::uuid)
$$
"""
"""The overload a version before the table of commands made and calls (a replica not yet
upgraded makes it again on start): its body was the current one without the command row."""


async def _append_as_an_older_replica(
    admin: psycopg.AsyncConnection[Any], schema: str, stream: str, new: NewEvent
) -> None:
    await admin.execute(
        f'SELECT * FROM "{schema}".append_events(%s, %s, %s::uuid[], %s::text[], %s::integer[],'
        " %s::bytea[], %s::text[], %s::text[], %s::text[], %s::uuid[], %s::uuid[],"
        " %s::timestamptz[], %s::text[], %s::text[])",
        (
            stream, 0, [new.event_id], [new.event.event_type], [new.event.schema_version],
            [encode(new.event)], [new.metadata.source], [new.metadata.actor.user_id],
            [new.metadata.actor.role.value], [new.metadata.correlation_id],
            [new.metadata.causation_id], [new.metadata.occurred_at], [new.event.subject],
            [None],
        ),
    )  # fmt: skip


async def test_during_a_rolling_upgrade_an_older_replica_records_commands_without_the_table(
    store: PostgresEventStore, schema: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    """What the README's upgrade notes say of the rollout window: an older replica's commands
    get no row, so two different requests under one key, for two streams, racing on an older
    and a newer replica, may both be recorded (in either order), as before the table. Once
    recorded, the newer version still finds the command by its events' causation id, so a
    later retry or reuse of the key is answered as always."""
    await admin.execute(_OLDER_APPEND.format(schema=schema))

    def command_of(new: NewEvent, command: uuid.UUID) -> NewEvent:
        return replace(new, metadata=replace(new.metadata, causation_id=command))

    older_first = uuid.uuid4()
    await _append_as_an_older_replica(
        admin, schema, "case-1", command_of(touched("1"), older_first)
    )
    assert await _scalar(admin, f'SELECT count(*) FROM "{schema}".recorded_commands') == 0
    # The newer replica had looked before the older one appended: not refused.
    await store.append("case-2", [command_of(touched("2"), older_first)], NO_STREAM,
                       command_id=older_first)  # fmt: skip

    newer_first = uuid.uuid4()
    await store.append("case-3", [command_of(touched("3"), newer_first)], NO_STREAM,
                       command_id=newer_first)  # fmt: skip
    # The older replica never looks at the table: not refused either.
    await _append_as_an_older_replica(
        admin, schema, "case-4", command_of(touched("4"), newer_first)
    )
    assert [r.stream for r in await store.read_by_causation(older_first)] == ["case-1", "case-2"]
    assert [r.stream for r in await store.read_by_causation(newer_first)] == ["case-3", "case-4"]

    # After the window: a command an older replica recorded is found by its causation id.
    after = uuid.uuid4()
    await _append_as_an_older_replica(admin, schema, "case-5", command_of(touched("5"), after))
    earlier, _ = await store.read_for_command(after, "case-6")
    assert [r.stream for r in earlier] == ["case-5"]


_GROUP_ARGUMENTS = (
    "text[], integer[], integer[], uuid[], text[], integer[], bytea[], text[], text[], text[],"
    " uuid[], uuid[], timestamptz[], text[], text[], uuid[], text[], integer[]"
)
"""append_events_in_group's arguments before the guards' locks (p_guard_locks)."""

_OLDER_GROUP_APPEND = """
CREATE FUNCTION "{schema}".append_events_in_group({arguments})
RETURNS TABLE (first_position bigint, recorded_at timestamptz, first_sequence integer,
               error_state text, error_detail text, error_constraint text, error_message text)
LANGUAGE sql AS $$
    SELECT * FROM "{schema}".append_events_in_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
        $11, $12, $13, $14, $15, $16, $17, $18, NULL::bigint[])
$$
"""
"""The overload the version before the guards' locks made and calls (its body was the current
one without the lock's try)."""


async def test_a_schema_made_before_the_guards_locks_gets_their_overload_beside_the_older(
    open_store: Opener, schema: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    """An existing database upgrades on a newer store's start (services.migrate, or any
    service starting): the overload with p_guard_locks is added, the older one is left for a
    replica not yet upgraded, and both append."""
    await open_store()
    await admin.execute(_OLDER_GROUP_APPEND.format(schema=schema, arguments=_GROUP_ARGUMENTS))
    # As the older version left the schema: its overload only.
    await admin.execute(
        f'DROP FUNCTION "{schema}".append_events_in_group({_GROUP_ARGUMENTS}, bigint[])'
    )

    upgraded = await open_store()
    new = touched("1")
    await admin.execute(
        f'SELECT * FROM "{schema}".append_events_in_group(%s, %s, %s, %s::uuid[], %s::text[],'
        " %s::integer[], %s::bytea[], %s::text[], %s::text[], %s::text[], %s::uuid[],"
        " %s::uuid[], %s::timestamptz[], %s::text[], %s::text[], %s::uuid[], %s::text[],"
        " %s::integer[])",
        (
            ["case-1"], [0], [1], [new.event_id], [new.event.event_type],
            [new.event.schema_version], [encode(new.event)], [new.metadata.source],
            [new.metadata.actor.user_id], [new.metadata.actor.role.value],
            [new.metadata.correlation_id], [new.metadata.causation_id],
            [new.metadata.occurred_at], [new.event.subject], [None], [None], [None], [None],
        ),
    )  # fmt: skip
    await upgraded.append(
        "case-2", [touched("2")], NO_STREAM, guard=StreamVersion("case-1", 1, "a lock")
    )
    assert [r.stream for r in await upgraded.read_all()] == ["case-1", "case-2"]
    overloads = await admin.execute(
        "SELECT pronargs FROM pg_proc WHERE proname = 'append_events_in_group'"
        " AND pronamespace = %s::regnamespace ORDER BY pronargs",
        (schema,),
    )
    assert [row[0] for row in await overloads.fetchall()] == [18, 19]
