"""Event store benchmark (issue 2): casetrail's stores side by side with ``eventsourcing``.

    python -m bench.store_bench [--quick] [--backends sqlite,postgres] [--no-write]

Three contenders get the same workload on the same backend, round by round in rotating order:

* ``casetrail``: our ``EventStore`` adapters. ``append`` takes typed catalog events and
  serialises them; reads decode every stored event into its pydantic model (``RecordedEvent``).
* ``es app``: ``eventsourcing`` at its Application layer (``Application.save`` to append,
  ``Application.events.get`` to read a stream, ``Application.recorder`` + ``Application.mapper``
  to replay), with its default JSON transcoder: it serialises and deserialises domain events
  too, so this is the like-for-like comparison.
* ``es recorder``: ``eventsourcing``'s application recorder alone, given ``StoredEvent`` rows
  whose state is the very JSON bytes casetrail stores. No serialisation, no decoding and no
  metadata: a floor for reference, not a like-for-like row.

eventsourcing is synchronous and is called inline (blocking the event loop, its natural use);
the single-writer rows also time ``es app`` through a worker thread, as an asyncio service
would have to call it.

Every contender commits durably: SQLite in WAL mode with ``synchronous=FULL`` (checked at run
time on eventsourcing's own connection), PostgreSQL with ``synchronous_commit=on``.
PostgreSQL: ``CASETRAIL_PG_DSN``, else the server `make servers-start` recorded for this checkout
(infra/servers.py; none: the benchmark stops saying so);
every run creates its own schemas and drops them afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sqlite3
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import (
    ApplicationRecorder,
    JSONTranscoder,
    StoredEvent,
    Transcoding,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from psycopg import sql

from bench.common import (
    MachineInfo,
    fmt_rate,
    fmt_ratio,
    machine_info,
    markdown_table,
    median,
    now_utc,
    replace_section,
    rotations,
)
from casetrail_platform.commands import CommandContext
from casetrail_platform.projections.port import DocumentTransaction, Projection
from casetrail_platform.projections.runner import catch_up
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.guard import storable_data
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.rows import COLUMNS, insert_values, to_recorded
from events.catalog.base import Role
from events.catalog.monitoring import ContactKind, ContactLogged
from events.catalog_registry import default_registry
from events.envelope import Actor, NewEvent, RecordedEvent
from events.registry import EventRegistry, encode
from infra.servers import PG_DSN, server_setting

HEADING = "## Event store (issue 2)"
CASE_LENGTH = 1000
PAGE = 1000
WRITERS = 16
CONTENDERS = ("casetrail", "es app", "es recorder")

E = TypeVar("E")


@dataclass(frozen=True)
class Sizes:
    rounds: int
    single: int
    """Events appended one per commit by one writer, per round."""
    per_writer: int
    """Events each of the 16 concurrent writers appends, one per commit, per round."""
    commits_of_10: int
    commits_of_100: int
    case_reads: int
    replay_events: int
    """The store is topped up to at least this many events before the replay rounds."""


FULL = Sizes(
    rounds=5,
    single=400,
    per_writer=30,
    commits_of_10=120,
    commits_of_100=30,
    case_reads=6,
    replay_events=30_000,
)
QUICK = Sizes(
    rounds=2,
    single=200,
    per_writer=20,
    commits_of_10=50,
    commits_of_100=10,
    case_reads=3,
    replay_events=8_000,
)


# -- the workload's event, as each contender represents it ------------------------------------

SOURCE = "casetrail/bench"
WORKER = Actor("worker-ana", Role.SOCIAL_WORKER)
SUMMARY = "Home visit: walks with a cane now; asked for transport to the Tuesday therapy sessions."
FOLLOW_UP = date(2024, 3, 15)


def contact_logged(case_id: str, number: int) -> ContactLogged:
    """A real catalog event of typical size (about 200 bytes of JSON)."""
    return ContactLogged(
        case_id=case_id,
        contact_id=f"contact-{number}",
        kind=ContactKind.HOME_VISIT,
        summary=SUMMARY,
        next_follow_up_due=FOLLOW_UP,
    )


def command_events(stream: int, first_version: int, count: int) -> list[NewEvent]:
    """The events of one command, made by ``CommandContext.new_events`` as services make them."""
    context = CommandContext(
        actor=WORKER, idempotency_key=str(uuid4()), occurred_at=datetime.now(UTC)
    )
    case = case_name(stream)
    return context.new_events(
        SOURCE, [contact_logged(case, first_version + index) for index in range(count)]
    )


def case_name(stream: int) -> str:
    return f"case-{stream:06d}"


def case_uuid(stream: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"casetrail-bench/{case_name(stream)}")


@dataclass(frozen=True)
class ContactLoggedES(DomainEvent):
    """The same fact as an ``eventsourcing`` domain event, carrying the same metadata that
    casetrail keeps beside each event (``timestamp`` is the occurred-at time)."""

    case_id: str
    contact_id: str
    kind: str
    summary: str
    next_follow_up_due: date | None
    source: str
    actor_id: str
    actor_role: str
    correlation_id: UUID
    causation_id: UUID | None


class DateAsISO(Transcoding):
    """``eventsourcing``'s JSON transcoder knows datetimes but not dates."""

    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class BenchApplication(Application[UUID]):
    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())


# -- contenders --------------------------------------------------------------------------------


class Contender(ABC, Generic[E]):
    """One implementation under test. Events are built before the clock starts (building
    domain objects is the caller's work); only the store calls are timed."""

    name: str

    @abstractmethod
    def build_commit(self, stream: int, first_version: int, count: int) -> list[E]:
        """The events of one command, to be appended in one commit."""

    def build(
        self, stream: int, first_version: int, commits: int, per_commit: int
    ) -> list[list[E]]:
        return [
            self.build_commit(stream, first_version + number * per_commit, per_commit)
            for number in range(commits)
        ]

    @abstractmethod
    async def append(self, stream: int, expected_version: int, events: Sequence[E]) -> None:
        """Append ``events`` to ``stream`` in one durable commit."""

    @abstractmethod
    async def append_concurrently(self, work: Sequence[tuple[int, list[list[E]]]]) -> None:
        """Each ``(stream, commits)`` is one writer appending its commits in order; all
        writers run at once."""

    @abstractmethod
    async def read_stream(self, stream: int) -> int:
        """Read one stream's events (decoded where the contender decodes); their number."""

    @abstractmethod
    async def replay(self) -> int:
        """Read every event in pages of ``PAGE`` into a dict projection; the number read."""

    async def close(self) -> None:
        return None


class CasetrailContender(Contender[NewEvent]):
    def __init__(self, store: EventStore, scratch: Path) -> None:
        self.name = "casetrail"
        self.store = store
        self._scratch = scratch
        self._read_models = 0

    def build_commit(self, stream: int, first_version: int, count: int) -> list[NewEvent]:
        return command_events(stream, first_version, count)

    async def append(self, stream: int, expected_version: int, events: Sequence[NewEvent]) -> None:
        await self.store.append(case_name(stream), events, expected_version)

    async def append_concurrently(self, work: Sequence[tuple[int, list[list[NewEvent]]]]) -> None:
        async def writer(stream: int, commits: list[list[NewEvent]]) -> None:
            version = 0
            for events in commits:
                await self.append(stream, version, events)
                version += len(events)

        await asyncio.gather(*(writer(stream, commits) for stream, commits in work))

    async def read_stream(self, stream: int) -> int:
        return len(await self.store.read_stream(case_name(stream)))

    async def replay(self) -> int:
        by_type: Counter[str] = Counter()
        by_case: Counter[str] = Counter()
        position = 0
        while True:
            page = await self.store.read_all(position, PAGE)
            for recorded in page:
                # Decoded as es Application's replay decodes its domain events: a fair pair.
                event = recorded.event
                by_type[type(event).__name__] += 1
                by_case[event.subject] += 1
            if len(page) < PAGE:
                return sum(by_type.values())
            position = page[-1].position

    async def catch_up_into_sqlite(self) -> int:
        """Replay every event through ``projections.runner.catch_up`` into a new
        ``SqliteReadModelStore``; the number of events applied."""
        self._read_models += 1
        read_models = SqliteReadModelStore(self._scratch / f"read-models-{self._read_models}.db")
        projection = CaseActivity()
        try:
            await catch_up(self.store, read_models, projection)
        finally:
            await read_models.close()
        return projection.applied

    async def close(self) -> None:
        await self.store.close()


class CaseActivity(Projection):
    """One document per case: how many events it has and the type of the last one."""

    name = "bench-case-activity"
    collections = ("case_activity",)

    def __init__(self) -> None:
        self.applied = 0

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        self.applied += 1
        document = await transaction.get("case_activity", recorded.stream) or {"events": 0}
        document["events"] = int(document["events"]) + 1
        document["last_type"] = recorded.event_type
        await transaction.put("case_activity", recorded.stream, document)


class _Threaded(Contender[E]):
    """``eventsourcing`` is synchronous: sequential calls run inline (its natural use, no
    thread hop), concurrent writers each get a thread of their own."""

    def __init__(self) -> None:
        self._threads = ThreadPoolExecutor(
            max_workers=WRITERS, thread_name_prefix=type(self).__name__
        )
        self.offload = False
        """Run sequential appends in a worker thread, as an asyncio service would have to."""

    @abstractmethod
    def append_now(self, stream: int, expected_version: int, events: Sequence[E]) -> None: ...

    async def append(self, stream: int, expected_version: int, events: Sequence[E]) -> None:
        if self.offload:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                self._threads, self.append_now, stream, expected_version, events
            )
        else:
            self.append_now(stream, expected_version, events)

    async def append_concurrently(self, work: Sequence[tuple[int, list[list[E]]]]) -> None:
        def writer(stream: int, commits: list[list[E]]) -> None:
            version = 0
            for events in commits:
                self.append_now(stream, version, events)
                version += len(events)

        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                loop.run_in_executor(self._threads, writer, stream, commits)
                for stream, commits in work
            )
        )

    async def close(self) -> None:
        self._threads.shutdown(wait=True)


class EsApplicationContender(_Threaded[ContactLoggedES]):
    def __init__(self, app: BenchApplication) -> None:
        super().__init__()
        self.name = "es app"
        self.app = app

    def build_commit(self, stream: int, first_version: int, count: int) -> list[ContactLoggedES]:
        case, originator = case_name(stream), case_uuid(stream)
        occurred_at, correlation_id, command_id = datetime.now(UTC), uuid4(), uuid4()
        return [
            ContactLoggedES(
                originator_id=originator,
                originator_version=first_version + offset + 1,
                timestamp=occurred_at,
                case_id=case,
                contact_id=f"contact-{first_version + offset}",
                kind=ContactKind.HOME_VISIT.value,
                summary=SUMMARY,
                next_follow_up_due=FOLLOW_UP,
                source=SOURCE,
                actor_id=WORKER.user_id,
                actor_role=WORKER.role.value,
                correlation_id=correlation_id,
                causation_id=command_id,
            )
            for offset in range(count)
        ]

    def append_now(
        self, stream: int, expected_version: int, events: Sequence[ContactLoggedES]
    ) -> None:
        self.app.save(*events)

    async def read_stream(self, stream: int) -> int:
        return len(list(self.app.events.get(case_uuid(stream))))

    async def replay(self) -> int:
        by_type: Counter[str] = Counter()
        by_case: Counter[str] = Counter()
        recorder, to_domain_event = self.app.recorder, self.app.mapper.to_domain_event
        position = 0
        while True:
            page = recorder.select_notifications(position, PAGE, inclusive_of_start=False)
            for notification in page:
                event = to_domain_event(notification)
                by_type[type(event).__name__] += 1
                if isinstance(event, ContactLoggedES):
                    by_case[event.case_id] += 1
            if len(page) < PAGE:
                return sum(by_type.values())
            position = page[-1].id

    async def close(self) -> None:
        await super().close()
        self.app.close()


class EsRecorderContender(_Threaded[StoredEvent]):
    def __init__(self, recorder: ApplicationRecorder, close: Callable[[], None]) -> None:
        super().__init__()
        self.name = "es recorder"
        self.recorder = recorder
        self._close = close

    def build_commit(self, stream: int, first_version: int, count: int) -> list[StoredEvent]:
        case, originator = case_name(stream), case_uuid(stream)
        return [
            StoredEvent(
                originator_id=originator,
                originator_version=first_version + offset + 1,
                topic=ContactLogged.event_type,
                state=encode(contact_logged(case, first_version + offset)),
            )
            for offset in range(count)
        ]

    def append_now(self, stream: int, expected_version: int, events: Sequence[StoredEvent]) -> None:
        self.recorder.insert_events(events)

    async def read_stream(self, stream: int) -> int:
        return len(self.recorder.select_events(case_uuid(stream)))

    async def replay(self) -> int:
        by_type: Counter[str] = Counter()
        by_case: Counter[UUID | str] = Counter()
        position = 0
        while True:
            page = self.recorder.select_notifications(position, PAGE, inclusive_of_start=False)
            for notification in page:
                by_type[notification.topic] += 1
                by_case[notification.originator_id] += 1
            if len(page) < PAGE:
                return sum(by_type.values())
            position = page[-1].id

    async def close(self) -> None:
        await super().close()
        self._close()


# -- backends ----------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    contenders: list[Contender[Any]]
    notes: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    """Added to the machine facts (e.g. the database server's version)."""
    files: dict[str, Path] = field(default_factory=dict)
    """SQLite: each contender's database file."""
    cleanup: Callable[[], None] | None = None


async def sqlite_backend(directory: Path, registry: EventRegistry) -> Backend:
    from casetrail_platform.store.sqlite import SqliteEventStore

    ours = await SqliteEventStore.open(directory / "casetrail.db", registry)
    app = BenchApplication(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(directory / "es-app.db"),
        }
    )
    datastore = SQLiteDatastore(db_name=str(directory / "es-recorder.db"))
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    app_recorder = cast(SQLiteApplicationRecorder, app.recorder)
    notes = [
        "casetrail SQLite: journal_mode=wal,"
        f" synchronous={_sqlite_synchronous(directory / 'casetrail.db')}, one writer thread"
        " with group commit",
        f"eventsourcing SQLite: journal_mode={_es_pragma(app_recorder, 'journal_mode')},"
        f" synchronous={_es_pragma(app_recorder, 'synchronous')}, read on its own pooled"
        " connection (the library sets WAL and leaves synchronous at SQLite's default, FULL on"
        " this build): as durable as casetrail",
    ]
    return Backend(
        name="SQLite",
        contenders=[
            CasetrailContender(ours, directory),
            EsApplicationContender(app),
            EsRecorderContender(recorder, datastore.close),
        ],
        notes=notes,
        files={
            "casetrail": directory / "casetrail.db",
            "es app": directory / "es-app.db",
            "es recorder": directory / "es-recorder.db",
        },
    )


_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _sqlite_synchronous(path: Path) -> str:
    from casetrail_platform.store.sqlite_writer import connect

    connection = connect(str(path))
    try:
        return _SYNCHRONOUS[int(connection.execute("PRAGMA synchronous").fetchone()[0])]
    finally:
        connection.close()


def _es_pragma(recorder: SQLiteApplicationRecorder, pragma: str) -> str:
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(f"PRAGMA {pragma}")
        value = cursor.fetchone()[0]
    return _SYNCHRONOUS[value] if pragma == "synchronous" else str(value)


async def postgres_backend(dsn: str, registry: EventRegistry, scratch: Path) -> Backend:
    from casetrail_platform.store.postgres import PostgresEventStore

    prefix = f"bench_{os.getpid()}_{int(time.time())}"
    schemas = [f"{prefix}_casetrail", f"{prefix}_es_app", f"{prefix}_es_recorder"]
    with psycopg.connect(dsn, autocommit=True) as connection:
        for schema in schemas[1:]:
            connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        settings = {
            name: str(_scalar(connection, f"SHOW {name}"))
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
        }

    def cleanup() -> None:
        with psycopg.connect(dsn, autocommit=True) as connection:
            for schema in schemas:
                connection.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )

    try:
        ours = await PostgresEventStore.connect(dsn, registry, schema=schemas[0])
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
        env = {
            "POSTGRES_DBNAME": str(parts.get("dbname", "postgres")),
            "POSTGRES_HOST": str(parts.get("host", "localhost")),
            "POSTGRES_PORT": str(parts.get("port", "5432")),
            "POSTGRES_USER": str(parts.get("user", "postgres")),
            "POSTGRES_PASSWORD": str(parts.get("password", "")),
        }
        app = BenchApplication(
            env={
                **env,
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_SCHEMA": schemas[1],
                "POSTGRES_POOL_SIZE": str(WRITERS),
            }
        )
        datastore = PostgresDatastore(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
            schema=schemas[2],
            pool_size=WRITERS,
        )
        recorder = PostgresApplicationRecorder(datastore)
        recorder.create_table()
    except BaseException:
        cleanup()
        raise
    return Backend(
        name="PostgreSQL",
        contenders=[
            CasetrailContender(ours, scratch),
            EsApplicationContender(app),
            EsRecorderContender(recorder, datastore.close),
        ],
        notes=[
            "PostgreSQL server "
            + ", ".join(f"{name}={value}" for name, value in settings.items())
            + "; casetrail appends through one writer connection, eventsourcing through a pool"
            f" of {WRITERS}",
        ],
        facts={"PostgreSQL": settings["server_version"]},
        cleanup=cleanup,
    )


def _scalar(connection: psycopg.Connection[Any], query: str) -> Any:
    row = connection.execute(query.encode()).fetchone()
    assert row is not None
    return row[0]


# -- workloads ---------------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    backend: str
    rates: dict[str, list[float]] = field(default_factory=dict)
    """Events per second of every round, per contender."""
    read_ms: dict[str, list[float]] = field(default_factory=dict)
    """Milliseconds per read (case reads only)."""

    def rate(self, contender: str) -> float | None:
        rounds = self.rates.get(contender)
        return median(rounds) if rounds else None

    def ratios(self, contender: str, other: str) -> list[float]:
        """``contender`` / ``other`` round by round: both ran back to back in each round, so
        these cancel most of the machine's drift between rounds."""
        if contender not in self.rates or other not in self.rates:
            return []
        pairs = zip(self.rates[contender], self.rates[other], strict=True)
        return [mine / theirs for mine, theirs in pairs if theirs]

    def ratio(self, contender: str, other: str) -> float | None:
        ratios = self.ratios(contender, other)
        return median(ratios) if ratios else None


WORKLOADS = {
    "single": "append, 1 event/commit, 1 writer",
    "concurrent": f"append, 1 event/commit, {WRITERS} writers",
    "batch10": "append, 10 events/commit",
    "batch100": "append, 100 events/commit",
    "read": f"read a {CASE_LENGTH:,}-event case",
    "replay": "replay all into dict projection",
    "catch_up": "replay via catch_up into SqliteReadModelStore",
}

TARGETS = {  # events/s, SQLite (issue 2)
    "single": 4_000.0,
    "concurrent": 4_000.0,
    "batch100": 100_000.0,
    "replay": 200_000.0,
}


class Runner:
    def __init__(self, backend: Backend, sizes: Sizes) -> None:
        self.backend = backend
        self.sizes = sizes
        self.rows: list[Row] = []
        self.wal_pages: dict[str, dict[int, float]] = {}
        """SQLite: WAL pages written per commit, per contender and events per commit."""
        self.events_stored = 0
        """Events every contender has stored."""
        self.extra_events: Counter[str] = Counter()
        """Events only one contender has stored (reference measurements)."""
        self.replayed = 0
        self._next_stream = 0
        self._case_stream = -1

    def new_stream(self) -> int:
        self._next_stream += 1
        return self._next_stream

    async def run(self) -> list[Row]:
        sizes = self.sizes
        await self.warm_up()
        await self.appends("single", 1, sizes.single)
        await self.concurrent()
        await self.appends("batch10", 10, sizes.commits_of_10)
        await self.appends("batch100", 100, sizes.commits_of_100)
        await self.reads()
        await self.replays()
        if self.backend.files:
            await self.measure_wal_pages()
        return self.rows

    async def measure_wal_pages(self) -> None:
        """Untimed: how many pages each commit writes to the WAL (what the fsync must flush,
        and what checkpoints copy back), in the store as the workloads left it."""
        for contender in self.backend.contenders:
            path = self.backend.files[contender.name]
            pages = self.wal_pages.setdefault(contender.name, {})
            # few enough commits that the WAL never reaches SQLite's autocheckpoint (1000 pages)
            for per_commit, commits in ((1, 40), (10, 20), (100, 5)):
                connection = sqlite3.connect(path)
                busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
                connection.close()
                stream = self.new_stream()
                for number, batch in enumerate(contender.build(stream, 0, commits, per_commit)):
                    await contender.append(stream, number * per_commit, batch)
                if not busy:
                    pages[per_commit] = _wal_frames(path, page_size) / commits

    def row(self, key: str) -> Row:
        row = Row(WORKLOADS[key], self.backend.name)
        self.rows.append(row)
        return row

    def progress(self, key: str) -> None:
        print(f"  {self.backend.name}: {WORKLOADS[key]}", file=sys.stderr, flush=True)

    async def appends(self, key: str, per_commit: int, commits: int) -> None:
        self.progress(key)
        row = self.row(key)
        for round_number in range(self.sizes.rounds):
            stream = self.new_stream()
            for contender in rotations(self.backend.contenders, round_number):
                batches = contender.build(stream, 0, commits, per_commit)
                gc.collect()
                started = time.perf_counter()
                for number, batch in enumerate(batches):
                    await contender.append(stream, number * per_commit, batch)
                elapsed = time.perf_counter() - started
                row.rates.setdefault(contender.name, []).append(per_commit * commits / elapsed)
            self.events_stored += per_commit * commits
            if key == "single":
                await self.offloaded_single(row, commits)

    async def offloaded_single(self, row: Row, commits: int) -> None:
        """For reference: eventsourcing's Application called through a worker thread, as an
        asyncio service (casetrail's services are) would call it. Its own stream, so its
        extra events are counted for it alone."""
        contender = next(c for c in self.backend.contenders if isinstance(c, _Threaded))
        stream = self.new_stream()
        batches = contender.build(stream, 0, commits, 1)
        contender.offload = True
        try:
            gc.collect()
            started = time.perf_counter()
            for number, batch in enumerate(batches):
                await contender.append(stream, number, batch)
            elapsed = time.perf_counter() - started
        finally:
            contender.offload = False
        row.rates.setdefault(f"{contender.name} via to_thread", []).append(commits / elapsed)
        self.extra_events[contender.name] += commits

    async def concurrent(self) -> None:
        self.progress("concurrent")
        row = self.row("concurrent")
        per_writer = self.sizes.per_writer
        for round_number in range(self.sizes.rounds):
            streams = [self.new_stream() for _ in range(WRITERS)]
            for contender in rotations(self.backend.contenders, round_number):
                work = [(stream, contender.build(stream, 0, per_writer, 1)) for stream in streams]
                gc.collect()
                started = time.perf_counter()
                await contender.append_concurrently(work)
                elapsed = time.perf_counter() - started
                row.rates.setdefault(contender.name, []).append(WRITERS * per_writer / elapsed)
            self.events_stored += WRITERS * per_writer

    async def fill(self, stream: int, commits: int, per_commit: int = 100) -> None:
        """Untimed: append ``commits`` commits of ``per_commit`` events to a new ``stream`` on
        every contender."""
        for contender in self.backend.contenders:
            for number, batch in enumerate(contender.build(stream, 0, commits, per_commit)):
                await contender.append(stream, number * per_commit, batch)
        self.events_stored += commits * per_commit

    async def warm_up(self) -> None:
        """Untimed: create the files' first pages, open connections and start threads, so the
        first timed round of the first contender pays no start-up costs the others do not."""
        await self.fill(self.new_stream(), 100, 1)
        await self.fill(self.new_stream(), 10, 10)
        streams = [self.new_stream() for _ in range(WRITERS)]
        for contender in self.backend.contenders:
            await contender.append_concurrently(
                [(stream, contender.build(stream, 0, 5, 1)) for stream in streams]
            )
            await contender.replay()
        self.events_stored += WRITERS * 5

    async def reads(self) -> None:
        self.progress("read")
        stream = self.new_stream()
        await self.fill(stream, CASE_LENGTH // 100)
        row = self.row("read")
        for round_number in range(self.sizes.rounds):
            for contender in rotations(self.backend.contenders, round_number):
                gc.collect()
                durations = []
                for _ in range(self.sizes.case_reads):
                    started = time.perf_counter()
                    count = await contender.read_stream(stream)
                    durations.append(time.perf_counter() - started)
                    if count != CASE_LENGTH:
                        raise AssertionError(f"{contender.name} read {count} events")
                row.rates.setdefault(contender.name, []).append(
                    CASE_LENGTH * len(durations) / sum(durations)
                )
                row.read_ms.setdefault(contender.name, []).extend(d * 1000 for d in durations)

    async def replays(self) -> None:
        missing = self.sizes.replay_events - self.events_stored
        if missing > 0:
            print(f"  {self.backend.name}: storing {missing:,} more events", file=sys.stderr)
            per_case = 500
            for _ in range(0, missing, per_case):
                await self.fill(self.new_stream(), per_case // 100)
        self.progress("replay")
        row = self.row("replay")
        for round_number in range(self.sizes.rounds):
            for contender in rotations(self.backend.contenders, round_number):
                gc.collect()
                started = time.perf_counter()
                count = await contender.replay()
                elapsed = time.perf_counter() - started
                if count != self.events_stored + self.extra_events[contender.name]:
                    raise AssertionError(f"{contender.name} replayed {count} events")
                self.replayed = self.events_stored
                row.rates.setdefault(contender.name, []).append(count / elapsed)
        self.progress("catch_up")
        row = self.row("catch_up")
        ours = self.backend.contenders[0]
        assert isinstance(ours, CasetrailContender)
        for _ in range(min(self.sizes.rounds, 3)):
            gc.collect()
            started = time.perf_counter()
            count = await ours.catch_up_into_sqlite()
            elapsed = time.perf_counter() - started
            row.rates.setdefault(ours.name, []).append(count / elapsed)


def _wal_frames(path: Path, page_size: int) -> int:
    wal = path.with_name(path.name + "-wal")
    header, frame = 32, 24 + page_size  # SQLite's WAL file layout
    return max(0, (wal.stat().st_size - header) // frame) if wal.exists() else 0


# -- floors: what one event costs before any store logic ---------------------------------------


@dataclass(frozen=True)
class Floors:
    """Costs per event measured outside the stores (best of 5, microseconds)."""

    bare_commits: float
    """Durable one-row SQLite commits per second (WAL, synchronous=FULL, no Python around)."""
    fetch_us: float
    """Fetching one stored row from SQLite into a tuple."""
    wrap_us: float
    """``rows.to_recorded``: one row into a ``RecordedEvent``, nothing parsed yet."""
    decode_us: float
    """Wrapping plus parsing everything on use: the pydantic event and the envelope."""
    validate_us: float
    """Of that: ``model_validate_json`` of the event's data."""
    uuids_us: float
    """Of that: parsing the three UUIDs (event, correlation, causation) from text."""
    encode_us: float
    """``rows.insert_values``: one ``NewEvent`` into row values (JSON, UUIDs, times)."""


def measure_floors(database: Path, registry: EventRegistry) -> Floors:
    query = f"SELECT {COLUMNS} FROM stored_events ORDER BY position LIMIT {PAGE}"
    connection = sqlite3.connect(database)
    rows = connection.execute(query).fetchall()
    new = command_events(1, 0, len(rows))

    steps: dict[str, Callable[[], object]] = {
        "fetch": lambda: connection.execute(query).fetchall(),
        "wrap": lambda: [to_recorded(row, registry) for row in rows],
        "decode": lambda: [_parsed(to_recorded(row, registry)) for row in rows],
        "validate": lambda: [ContactLogged.model_validate_json(row[6]) for row in rows],
        "uuids": lambda: [
            (UUID(row[1]), UUID(row[10]), None if row[11] is None else UUID(row[11]))
            for row in rows
        ],
        "encode": lambda: [
            insert_values(event, data, "case-1", 1, 0)
            for event, data in zip(new, storable_data("case-1", new), strict=True)
        ],
    }
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(5):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            best[name] = min(best[name], (time.perf_counter() - started) / len(rows) * 1e6)
    connection.close()
    return Floors(
        bare_commits=_bare_commit_rate(database.parent / "bare.db"),
        fetch_us=best["fetch"],
        wrap_us=best["wrap"],
        decode_us=best["decode"],
        validate_us=best["validate"],
        uuids_us=best["uuids"],
        encode_us=best["encode"],
    )


def _parsed(recorded: RecordedEvent) -> RecordedEvent:
    """``recorded`` with every lazily parsed part used once, as a projection uses it."""
    recorded.event, recorded.metadata, recorded.event_id, recorded.recorded_at  # noqa: B018
    return recorded


def _bare_commit_rate(path: Path, commits: int = 500) -> float:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)")
    payload = b"x" * 200
    started = time.perf_counter()
    for _ in range(commits):
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t (data) VALUES (?)", (payload,))
        connection.execute("COMMIT")
    rate = commits / (time.perf_counter() - started)
    connection.close()
    return rate


# -- report ------------------------------------------------------------------------------------


def results_table(rows: Sequence[Row]) -> str:
    headers = [
        "workload",
        "backend",
        "casetrail ev/s",
        "es app ev/s",
        "es recorder ev/s",
        "vs es app (range)",
        "vs es recorder",
        "target (SQLite)",
        "vs target",
    ]
    lines = []
    for row in rows:
        ours, app, recorder = (row.rate(name) for name in CONTENDERS)
        target = TARGETS.get(_key(row)) if row.backend == "SQLite" else None
        cells = [fmt_rate(rate) for rate in (ours, app, recorder)]
        if row.read_ms:
            cells = [
                f"{cell} ({median(row.read_ms[name]):.1f} ms)" if name in row.read_ms else cell
                for cell, name in zip(cells, CONTENDERS, strict=True)
            ]
        lines.append(
            [
                row.workload,
                row.backend,
                *cells,
                _ratio_cell(row, "es app"),
                fmt_ratio(row.ratio("casetrail", "es recorder")),
                fmt_rate(target) if target else "-",
                fmt_ratio(_ratio(ours, target)) if target else "-",
            ]
        )
    return markdown_table(headers, lines)


def _key(row: Row) -> str:
    return next(key for key, label in WORKLOADS.items() if label == row.workload)


def _ratio_cell(row: Row, other: str) -> str:
    ratios = row.ratios("casetrail", other)
    if not ratios:
        return "n/a"
    return f"{fmt_ratio(median(ratios))} ({min(ratios):.2f}-{max(ratios):.2f})"


def _ratio(ours: float | None, other: float | None) -> float | None:
    return None if ours is None or not other else ours / other


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    floors: Floors | None = None
    wal_pages: dict[str, dict[int, float]] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    """Events in each backend's stores when the replays ran."""


def shortfalls(outcome: Outcome) -> list[str]:
    """This run's misses: every target missed and every row behind eventsourcing's
    Application layer, then the measured facts that explain them."""
    facts = []
    for row in outcome.rows:
        ours, app = row.rate("casetrail"), row.ratio("casetrail", "es app")
        target = TARGETS.get(_key(row)) if row.backend == "SQLite" else None
        if ours is not None and target is not None and ours < target:
            facts.append(
                f"- **Below target**: {row.workload} on {row.backend}: {fmt_rate(ours)} ev/s,"
                f" {ours / target:.0%} of {fmt_rate(target)}."
            )
        if app is not None and app < 1:
            facts.append(
                f"- **Behind eventsourcing**: {row.workload} on {row.backend}:"
                f" {app:.2f}x its Application layer."
            )
    if not facts:
        facts.append("- Every target met and every row ahead of eventsourcing in this run.")
    return facts


def measured_facts(outcome: Outcome) -> list[str]:
    facts = []
    floors = outcome.floors
    if floors is not None:
        per_event = floors.fetch_us + floors.decode_us
        facts.append(
            f"- A bare durable one-row SQLite commit loop (no Python around it) does"
            f" {fmt_rate(floors.bare_commits)} commits/s on this disk: the ceiling for one"
            " writer that waits for each commit."
        )
        facts.append(
            f"- Per stored event: fetching the SQLite row {floors.fetch_us:.1f} us; wrapping it"
            f" in a `RecordedEvent` (`rows.to_recorded`, nothing parsed) {floors.wrap_us:.1f}"
            f" us; wrapping and then using all of it {floors.decode_us:.1f} us, of which"
            f" pydantic `model_validate_json` of the event is {floors.validate_us:.1f} us and"
            f" parsing its three UUIDs from text {floors.uuids_us:.1f} us (the rest: two"
            " datetimes from micros, a `Role` lookup, the metadata objects). Fetch plus full"
            f" decode caps a SQLite replay that uses everything at about"
            f" {fmt_rate(1e6 / per_event)} ev/s here;"
            f" the 200k target leaves 5 us per event. Encoding a `NewEvent` into row values"
            f" (`rows.insert_values`) costs {floors.encode_us:.1f} us; 100k appends/s leaves"
            " 10 us per event for everything."
        )
    for row in outcome.rows:
        offloaded = row.ratio("casetrail", "es app via to_thread")
        if offloaded is not None:
            facts.append(
                f"- {row.workload} on {row.backend}: eventsourcing's Application called through"
                " a worker thread, as an asyncio service has to call a blocking library, does"
                f" {fmt_rate(row.rate('es app via to_thread'))} ev/s; casetrail is"
                f" {offloaded:.2f}x that (the inline call in the table blocks its caller's"
                " thread for the whole commit)."
            )
    if outcome.wal_pages:
        stored = outcome.stored.get("SQLite", 0)
        cells = "; ".join(
            f"{name} " + " / ".join(f"{pages.get(size, float('nan')):.0f}" for size in (1, 10, 100))
            for name, pages in outcome.wal_pages.items()
        )
        facts.append(
            f"- WAL pages written per commit of 1 / 10 / 100 events, in SQLite stores of about"
            f" {stored:,} events: {cells}. Each page is 4 KiB that the commit's fsync flushes"
            " and a checkpoint later copies into the database."
        )
    return facts


WHY = """- **One writer, one event per commit** is bound by the durable commit: nothing that fsyncs
  each commit can beat the bare loop above. casetrail adds a hop to its writer thread and back
  to the event loop (two thread wake-ups per append, which a busy 2-core machine delays) and a
  SAVEPOINT. eventsourcing called inline blocks its caller for the commit and pays no hop;
  called through a worker thread, as an asyncio service must call it, it pays one too (the
  reference line above). With concurrent writers both adapters put the appends that arrive
  during a commit into the next one (group commit: SQLite through its writer thread,
  PostgreSQL through one `append_events_in_group` call, each request in its own savepoint),
  so one writer waiting for each commit is the worst case.
- **Batched appends on SQLite** pay for WAL volume and per-event Python work, not fsyncs. A
  command's event ids share a base with the index in the low bits (`CommandContext.new_events`),
  so one commit's events sit together in the `event_id` index, and the adapter builds the
  returned records from the events it was given rather than reading them back. What remains
  is encoding each event (pydantic, 5-8 us) and building its row: 100k events/s leaves 10 us
  per event for everything, below what CPython does here even without serialisation.
- **Replay and stream reads on SQLite** are bound by what the reader uses. A record read back
  parses nothing until used: the event (validated against the catalog model) and the envelope
  (three UUIDs from text, two datetimes; from PostgreSQL psycopg's C loaders hand them over
  ready-made). The outbox relay forwards the stored text as it is; the dict projection here
  decodes every event, as es Application's replay does, so it pays for the validation that
  eventsourcing's mapper (`object.__new__` + `__dict__`) does not do, and reads no metadata,
  so the envelope stays unparsed (es recorder's replay decodes nothing at all).
- **catch_up into a read model** adds a read-model `get` and `put` (JSON both ways) per
  event; it is a second row to watch, with no eventsourcing counterpart measured here.
"""


def report(
    outcome: Outcome, machine: MachineInfo, sizes: Sizes, elapsed: float, quick: bool
) -> str:
    mode = "quick mode (--quick)" if quick else "full run"
    stored = ", ".join(f"{name} {count:,}" for name, count in outcome.stored.items())
    parts = [
        f"Run: {now_utc()}, {mode}, {sizes.rounds} rounds per row in rotating order,"
        f" {elapsed:.0f} s. Command: `python -m bench.store_bench{' --quick' if quick else ''}`.",
        "",
        "Machine:",
        *(f"- {line}" for line in machine.lines()),
        "",
        "Setup:",
        f"- Event: `{ContactLogged.event_type}` from the catalog,"
        f" {len(encode(contact_logged('case-000001', 1)))} bytes of JSON, with the metadata of"
        " the command that recorded it (source, actor, role, occurred-at, correlation id,"
        " causation id = command id; event ids derived from the command id as"
        " `CommandContext.new_events` does). The eventsourcing domain event carries the same"
        " fields.",
        "- casetrail: `EventStore.append` / `read_stream` / `read_all` (typed, validated"
        " events). es app: eventsourcing 9.5 `Application.save`, `Application.events.get`,"
        " `recorder.select_notifications` + `mapper.to_domain_event` with its default JSON"
        " transcoder: the like-for-like comparison. es recorder: its `ApplicationRecorder` given"
        " ready `StoredEvent`s holding casetrail's JSON bytes (no serialisation, no decoding,"
        " no metadata): a floor for reference.",
        f"- Appends of one event: 1 writer awaiting each commit, and {WRITERS} concurrent writers"
        f" on {WRITERS} streams (casetrail: coroutines; eventsourcing: threads). For"
        " reference, each single-writer round also runs es app through a worker thread"
        " (`run_in_executor`), the way an asyncio service would call it. Replays read"
        f" every event ({stored}) in pages of {PAGE}. Rates are medians of the rounds; ratios"
        " are medians of the per-round ratios (each round runs the contenders back to back),"
        " with the lowest and highest round in brackets.",
        *(f"- {note}" for note in outcome.notes),
        "",
        "Ratios are casetrail / other (above 1.00x: casetrail is faster). Targets apply to the"
        " SQLite rows named in issue 2.",
        "",
        results_table(outcome.rows),
        "",
        "### Where we fall short and why",
        "",
        *shortfalls(outcome),
        "",
        "Measured in this run:",
        "",
        *measured_facts(outcome),
        "",
        "Why:",
        "",
        WHY,
    ]
    return "\n".join(parts)


# -- main --------------------------------------------------------------------------------------


async def run(sizes: Sizes, backends: Sequence[str], dsn: str) -> Outcome:
    registry = default_registry()
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="casetrail-store-bench-") as scratch:
        directory = Path(scratch)
        for name in backends:
            if name == "sqlite":
                backend = await sqlite_backend(directory / "sqlite", registry)
            else:
                backend = await postgres_backend(dsn, registry, directory)
            outcome.facts.update(backend.facts)
            runner = Runner(backend, sizes)
            try:
                outcome.rows.extend(await runner.run())
            finally:
                for contender in backend.contenders:
                    await contender.close()
                if backend.cleanup is not None:
                    backend.cleanup()
            outcome.notes.extend(backend.notes)
            outcome.wal_pages.update(runner.wal_pages)
            outcome.stored[backend.name] = runner.replayed
            if name == "sqlite":
                outcome.floors = measure_floors(directory / "sqlite" / "casetrail.db", registry)
    return outcome


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 2 rounds (< 40 s)")
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    arguments = parser.parse_args(argv)
    backends = [name.strip() for name in arguments.backends.split(",") if name.strip()]
    if not backends or set(backends) - {"sqlite", "postgres"}:
        parser.error("--backends takes sqlite and/or postgres")
    dsn = server_setting(PG_DSN) if "postgres" in backends else ""
    if "postgres" in backends:
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
        except psycopg.OperationalError as error:
            sys.exit(
                f"PostgreSQL is not reachable at CASETRAIL_PG_DSN={dsn} ({error}).\n"
                "Start it with `make servers-start`, or run with --backends sqlite."
            )
    sizes = QUICK if arguments.quick else FULL
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    outcome = asyncio.run(run(sizes, backends, dsn))
    elapsed = time.perf_counter() - started
    # Other work on a 2-core machine moves every number; say how busy it was.
    outcome.facts["Load average (1 min) at start / end"] = (
        f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"
    )
    text = report(outcome, machine_info(**outcome.facts), sizes, elapsed, arguments.quick)
    print(text)
    if not arguments.no_write:
        replace_section(HEADING, text)
        print(f"\n(section {HEADING!r} written to bench/RESULTS.md)", file=sys.stderr)


if __name__ == "__main__":
    main()
