"""gRPC command benchmarks (issue 4): commands per second through the services' APIs.

``python -m bench.grpc_bench [--quick] [--no-write] [--keep]`` writes the section "## gRPC commands
(issue 4)" of ``bench/RESULTS.md``. Needs the PostgreSQL server and the Kafka broker of
``make servers-start`` (``CASETRAIL_PG_DSN``, ``CASETRAIL_KAFKA_BOOTSTRAP``).

Three kinds of process, so the load generator's CPU is never counted as the server's:

* the servers: (a) embedded, ``python -m services.runner --any-port`` (all four services in
  one process, SQLite files, in-process bus); (b) distributed, one process per service on a
  fresh PostgreSQL database (``CREATE DATABASE``, dropped afterwards) and a Kafka topic of
  its own (deleted afterwards), started by ``--serve``, which is ``services.runner``'s start
  with the topic as a parameter (the runner always uses the shared development topic, which
  would keep the benchmark's events forever); (c) the reference, ``--serve-empty``: intake's
  gRPC server set-up with an OpenCase that does nothing, the ceiling of any Python gRPC
  service process measured this way on this machine;
* the load generator (``--load``): grpc.aio stubs over a few channels, many calls in flight
  (closed loop), or calls started at a fixed rate whatever the answers (open loop; latency
  counted from when the call was due, so a stalled server cannot hide its queue);
* this orchestrator, which starts them and writes the report.

The load generator reads the CPU time of every process involved from ``/proc`` at the start
and end of each measurement window (servers, PostgreSQL, Kafka, itself, the whole machine):
on two cores the load generator competes with the servers, and the report says how much.
A full run (or ``--profile-run``) also profiles the event loop's thread with cProfile, switched
on and off by signal for one OpenCase window: the distributed intake process at the end of
its run, and the embedded services in one more process like the runner's. ``--keep`` keeps
the servers' logs and data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import itertools
import json
import logging
import os
import pstats
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
from aiokafka.admin import AIOKafkaAdminClient
from psycopg.conninfo import make_conninfo
from typing_extensions import override

from bench.common import (
    fmt_rate,
    fmt_ratio,
    machine_info,
    markdown_table,
    now_utc,
    percentile,
    replace_section,
)
from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2, coordination_pb2_grpc
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc

HEADING = "## gRPC commands (issue 4)"
TARGET = 2_000.0
"""Commands per second per service process (issue 4)."""
SERVICES = ("intake", "coordination", "planning", "audit")
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:15432/casetrail"
REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
BORN_FROM = date(1940, 1, 1).toordinal()
log = logging.getLogger("bench.grpc")
T = TypeVar("T")


# --- plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    warmup: float
    seconds: float
    """Measurement window of a closed-loop row, after ``warmup``."""
    rate: int
    rate_seconds: float
    register_seconds: float
    concurrency: int
    channels: int
    clients: int
    """Clients registered before the run; OpenCase opens cases for them in turn."""
    cases: int
    """Cases opened (and learnt by coordination) before the MakeReferral row."""
    profile_seconds: float
    settle_limit: float
    """Longest wait, before each row, for the servers to finish the previous row's backlog."""


FULL = Plan(
    warmup=3.0,
    seconds=15.0,
    rate=500,
    rate_seconds=10.0,
    register_seconds=8.0,
    concurrency=48,
    channels=4,
    clients=16,
    cases=1_000,
    profile_seconds=8.0,
    settle_limit=20.0,
)
QUICK = Plan(
    warmup=0.75,
    seconds=3.0,
    rate=500,
    rate_seconds=2.0,
    register_seconds=2.0,
    concurrency=48,
    channels=4,
    clients=8,
    cases=100,
    profile_seconds=2.0,
    settle_limit=5.0,
)


@dataclass(frozen=True)
class RowSpec:
    setup: str
    command: str
    """``open_case``, ``register_client`` or ``make_referral``."""
    mode: str
    """``closed`` (``concurrency`` calls in flight) or ``rate`` (``rate`` calls started per
    second)."""
    warmup: float
    seconds: float
    concurrency: int = 0
    rate: int = 0
    server: str = "intake"
    """The label (in ``LoadSpec.pids``) of the process that serves the command."""
    profile: bool = False
    """Send the server SIGUSR1/SIGUSR2 at the start/end of the window (profiled servers)."""

    def load(self) -> str:
        if self.mode == "rate":
            return f"{self.rate}/s offered"
        return f"{self.concurrency} in flight"


@dataclass(frozen=True)
class LoadSpec:
    run_id: str
    addresses: dict[str, str]
    pids: dict[str, int]
    rows: list[RowSpec]
    channels: int
    clients: int
    cases: int
    scratch: str
    """A directory on the servers' disk, for the fsync probe."""
    settle_limit: float
    """Longest wait for the servers to become idle before a row."""
    dsn: str = ""
    """The services' database (distributed): its transaction counters are read too."""
    tokens: dict[str, str] = field(default_factory=dict)
    """Bearer token of each benchmark user (minted by the run's issuer)."""


@dataclass
class RowResult:
    spec: RowSpec
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    cpu: dict[str, float]
    """CPU seconds in the window: one entry per server label, ``<label>/main`` for its main
    (event-loop) thread, ``postgres``, ``kafka``, ``loadgen`` and ``machine`` (every busy
    CPU second of the machine, whoever spent it)."""
    database: dict[str, float] = field(default_factory=dict)
    """Counters of the services' PostgreSQL database in the window (``pg_stat_database``)."""
    samples: dict[str, float] = field(default_factory=dict)
    """Latencies of an fsync and of a PostgreSQL round trip during the window."""
    settled: float = 0.0
    """Seconds the servers needed to become idle before the row began."""

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def cores(self, label: str) -> float:
        return self.cpu.get(label, 0.0) / self.seconds if self.seconds > 0 else 0.0

    def per_cpu_second(self, label: str) -> float | None:
        spent = self.cpu.get(label, 0.0)
        return self.ok / spent if spent > 0 else None


# --- CPU accounting from /proc ----------------------------------------------------------------


def process_cpu(pid: int, thread: int | None = None) -> float | None:
    """User + system CPU seconds of a process (all its threads) or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after it do not.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle (all cores) since boot."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / TICKS


def pids_where(test: Callable[[str, bytes], bool]) -> list[int]:
    """Pids whose (command name, command line) pass ``test``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if test(comm, cmdline):
            found.append(int(entry.name))
    return found


def postgres_pids() -> list[int]:
    return pids_where(lambda comm, _cmdline: comm == "postgres")


def kafka_pids() -> list[int]:
    return pids_where(lambda _comm, cmdline: b"kafka.Kafka" in cmdline)


@dataclass(frozen=True)
class CpuSnapshot:
    groups: dict[str, dict[int, float]]
    machine: float


class CpuProbe:
    """Snapshots of the CPU time of the servers (and their main threads), PostgreSQL, Kafka,
    this process and the machine."""

    def __init__(self, servers: Mapping[str, int]) -> None:
        self._servers = dict(servers)

    def snapshot(self) -> CpuSnapshot:
        groups: dict[str, dict[int, float]] = {}
        for label, pid in self._servers.items():
            groups[label] = _cpu_of([pid])
            main = process_cpu(pid, thread=pid)
            groups[f"{label}/main"] = {pid: main} if main is not None else {}
        groups["postgres"] = _cpu_of(postgres_pids())
        groups["kafka"] = _cpu_of(kafka_pids())
        groups["loadgen"] = _cpu_of([os.getpid()])
        return CpuSnapshot(groups, machine_busy())

    @staticmethod
    def spent(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
        spent = {
            label: sum(cpu - before.groups.get(label, {}).get(pid, 0.0) for pid, cpu in now.items())
            for label, now in after.groups.items()
        }
        spent["machine"] = after.machine - before.machine
        return spent


def _cpu_of(pids: Sequence[int]) -> dict[int, float]:
    cpu = {pid: process_cpu(pid) for pid in pids}
    return {pid: seconds for pid, seconds in cpu.items() if seconds is not None}


# --- the commands -----------------------------------------------------------------------------


NEEDS_CASES = frozenset({"make_referral", "get_case_view"})


def command_context(run_id: str, key: str) -> common_pb2.CommandContext:
    return common_pb2.CommandContext(idempotency_key=f"{run_id}-{key}")


BENCH_USERS = {
    "rcp-bench": "receptionist",
    "sw-bench": "social_worker",
    "coord-bench": "coordinator",
}
"""Who calls: each benchmark user with their role (carried by their bearer token)."""
BENCH_AUDIENCE = "casetrail-bench"


class Commands:
    """One call of each benchmarked command; every call has a fresh idempotency key and its
    caller's bearer token."""

    def __init__(
        self,
        run_id: str,
        addresses: Mapping[str, str],
        channels: int,
        tokens: Mapping[str, str],
    ) -> None:
        self.run_id = run_id
        self._as = {user: (("authorization", f"Bearer {token}"),) for user, token in tokens.items()}
        # A local subchannel pool per channel: one TCP connection each, not one shared.
        options = [("grpc.use_local_subchannel_pool", 1)]
        self._channels = [
            grpc.aio.insecure_channel(addresses[name], options=options)
            for name in ("intake", "coordination")
            for _ in range(channels)
        ]
        self._intake = [
            intake_pb2_grpc.IntakeServiceStub(channel) for channel in self._channels[:channels]
        ]
        self._coordination = [
            coordination_pb2_grpc.CoordinationServiceStub(channel)
            for channel in self._channels[channels:]
        ]
        # Planning only when it is served (the reference serves intake alone).
        planning = [
            grpc.aio.insecure_channel(addresses["planning"], options=options)
            for _ in range(channels if "planning" in addresses else 0)
        ]
        self._channels += planning
        self._planning = [planning_pb2_grpc.PlanningServiceStub(channel) for channel in planning]
        self._numbers = itertools.count()
        self.clients: list[str] = []
        self.cases: list[str] = []

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def call(self, command: str) -> Callable[[], Awaitable[None]]:
        calls: dict[str, Callable[[], Awaitable[None]]] = {
            "open_case": self.open_case,
            "register_client": self.register_client,
            "make_referral": self.make_referral,
            "get_case_view": self.get_case_view,
        }
        return calls[command]

    async def get_case_view(self) -> None:
        number = next(self._numbers)
        stub = self._planning[number % len(self._planning)]
        await stub.GetCaseView(
            planning_pb2.GetCaseViewRequest(
                context=common_pb2.QueryContext(purpose="coordination"),
                case_id=self.cases[number % len(self.cases)],
            ),
            metadata=self._as["coord-bench"],
        )

    async def register_client(self) -> None:
        await self._register(next(self._numbers))

    async def _register(self, number: int) -> str:
        stub = self._intake[number % len(self._intake)]
        response = await stub.RegisterClient(
            intake_pb2.RegisterClientRequest(
                context=command_context(self.run_id, f"reg-{number}"),
                # Unique names: duplicate detection has nothing to refuse.
                name=intake_pb2.PersonName(
                    given_names=f"Person {number}", family_name=f"Bench {self.run_id}"
                ),
                date_of_birth=date.fromordinal(BORN_FROM + number % 20_000).isoformat(),
                preferred_language="en",
            ),
            metadata=self._as["rcp-bench"],
        )
        return str(response.client_id)

    async def open_case(self) -> None:
        await self._open(next(self._numbers))

    async def _open(self, number: int) -> str:
        stub = self._intake[number % len(self._intake)]
        response = await stub.OpenCase(
            intake_pb2.OpenCaseRequest(
                context=command_context(self.run_id, f"open-{number}"),
                client_id=self.clients[number % len(self.clients)],
                referral_source=intake_pb2.ReferralSource(kind="hospital", name="St Mary's"),
                presenting_needs=[
                    intake_pb2.PresentingNeed(category="home_care", description="Cannot wash alone")
                ],
            ),
            metadata=self._as["rcp-bench"],
        )
        return str(response.result.case_id)

    async def _consent(self, case_id: str) -> None:
        stub = self._intake[hash(case_id) % len(self._intake)]
        await stub.GrantConsent(
            intake_pb2.GrantConsentRequest(
                context=command_context(self.run_id, f"consent-{case_id}"),
                case_id=case_id,
                recipient=intake_pb2.ConsentRecipient(
                    kind="agency", recipient_id="pa-bench", name="Bench Care"
                ),
                purpose="coordination",
                scope=["identity", "referrals", "services"],
                expires_at=_in_days(30),
                document_reference="scan://consents/bench.pdf",
            ),
            metadata=self._as["sw-bench"],
        )

    async def make_referral(self) -> None:
        number = next(self._numbers)
        stub = self._coordination[number % len(self._coordination)]
        await stub.MakeReferral(
            coordination_pb2.MakeReferralRequest(
                context=command_context(self.run_id, f"ref-{number}"),
                case_id=self.cases[number % len(self.cases)],
                provider=coordination_pb2.Provider(provider_id="pa-bench", name="Bench Care"),
                need_category="home_care",
                service="two visits a day",
                urgency="routine",
                reason="Cannot wash alone",
            ),
            metadata=self._as["sw-bench"],
        )

    async def prepare(self, clients: int, cases: int, patience: float = 300.0) -> None:
        """Register the clients; open the cases and wait until coordination (and planning,
        when served) knows them all."""
        self.clients = [await self._register(next(self._numbers)) for _ in range(clients)]
        if not cases:
            return
        numbers = [next(self._numbers) for _ in range(cases)]
        self.cases = await _bounded(32, [partial(self._open, n) for n in numbers])
        # A referral discloses the case: the MakeReferral row needs each client's consent.
        await _bounded(32, [partial(self._consent, c) for c in self.cases])
        deadline = time.perf_counter() + patience
        await _bounded(16, [partial(self._await_case, c, deadline) for c in self.cases])
        if self._planning:
            await _bounded(16, [partial(self._await_view, c, deadline) for c in self.cases])

    async def _await_view(self, case_id: str, deadline: float) -> None:
        request = planning_pb2.GetCaseViewRequest(
            context=common_pb2.QueryContext(purpose="coordination"), case_id=case_id
        )
        stub = self._planning[0]
        await _until_known(
            lambda: stub.GetCaseView(request, metadata=self._as["coord-bench"]), deadline
        )

    async def _await_case(self, case_id: str, deadline: float) -> None:
        request = coordination_pb2.GetCaseCoordinationRequest(
            context=common_pb2.QueryContext(purpose="coordination"), case_id=case_id
        )
        stub = self._coordination[0]
        await _until_known(
            lambda: stub.GetCaseCoordination(request, metadata=self._as["coord-bench"]), deadline
        )


NOT_YET = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)
"""Answers of a service that has not learnt the case yet, or not yet fetched the issuer's keys
(a loaded machine: the first fetch may time out)."""


async def _until_known(call: Callable[[], Awaitable[object]], deadline: float) -> None:
    while True:
        try:
            await call()
            return
        except grpc.aio.AioRpcError as error:
            if error.code() not in NOT_YET or time.perf_counter() > deadline:
                raise
        await asyncio.sleep(0.2)


def _in_days(days: int) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    moment = Timestamp()
    moment.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return moment


async def _bounded(limit: int, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))


# --- the load generator -----------------------------------------------------------------------

Outcome = tuple[float, float, str | None]
"""(started or due, finished, error code or None) of one call."""


async def attempt(call: Callable[[], Awaitable[None]], started: float) -> Outcome:
    try:
        await call()
    except grpc.aio.AioRpcError as error:
        return started, time.perf_counter(), error.code().name
    return started, time.perf_counter(), None


class Window:
    """The measurement window of one row: CPU snapshots at both ends and, for profiled
    servers, the signals that switch the profiler on and off."""

    def __init__(self, probe: CpuProbe, spec: RowSpec, load: LoadSpec) -> None:
        self._probe = probe
        self._spec = spec
        self._pid = load.pids[spec.server]
        self._dsn = load.dsn
        self._scratch = Path(load.scratch)
        self.start = float("inf")
        self.end = float("inf")
        self.cpu: dict[str, float] = {}
        self.database: dict[str, float] = {}
        self.samples: dict[str, float] = {}

    async def run(self) -> None:
        await asyncio.sleep(self._spec.warmup)
        if self._spec.profile:
            os.kill(self._pid, signal.SIGUSR1)
        counters = await database_counters(self._dsn)
        before = self._probe.snapshot()
        self.start = time.perf_counter()
        over = asyncio.Event()
        sampling = asyncio.create_task(sample_waits(self._scratch, self._dsn, over))
        await asyncio.sleep(self._spec.seconds)
        self.end = time.perf_counter()
        after = self._probe.snapshot()
        if self._spec.profile:
            os.kill(self._pid, signal.SIGUSR2)
        over.set()
        self.samples = await sampling
        later = await database_counters(self._dsn)
        self.cpu = CpuProbe.spent(before, after)
        self.database = {name: later[name] - value for name, value in counters.items()}


async def sample_waits(scratch: Path, dsn: str, over: asyncio.Event) -> dict[str, float]:
    """What the servers wait for, sampled 20 times a second during the window: a durable
    200-byte write (``fdatasync``) beside the SQLite files, and a ``SELECT 1`` round trip to
    PostgreSQL when there is one."""
    syncs: list[float] = []
    trips: list[float] = []
    connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True) if dsn else None
    descriptor = os.open(scratch / f"fsync-{os.getpid()}", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while not over.is_set():
            syncs.append(await asyncio.to_thread(timed_fdatasync, descriptor))
            if connection is not None:
                started = time.perf_counter()
                await connection.execute("SELECT 1")
                trips.append((time.perf_counter() - started) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(over.wait(), 0.05)
    finally:
        os.close(descriptor)
        if connection is not None:
            await connection.close()
    found = {"fsync p50 ms": percentile(syncs, 50), "fsync p99 ms": percentile(syncs, 99)}
    if trips:
        found |= {"pg p50 ms": percentile(trips, 50), "pg p99 ms": percentile(trips, 99)}
    return found


def timed_fdatasync(descriptor: int) -> float:
    os.write(descriptor, b"x" * 200)
    started = time.perf_counter()
    os.fdatasync(descriptor)
    return (time.perf_counter() - started) * 1000


DATABASE_COUNTERS = ("xact_commit", "tup_inserted", "tup_updated")


async def database_counters(dsn: str) -> dict[str, float]:
    """Transactions and rows of the database so far. Backends publish their counts about once
    a second, so a window's figures are good to a second's worth of work."""
    if not dsn:
        return {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as connection:
        cursor = await connection.execute(
            f"SELECT {', '.join(DATABASE_COUNTERS)} FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
        row = await cursor.fetchone()
    return dict(zip(DATABASE_COUNTERS, (float(v) for v in row or ()), strict=False))


async def closed_loop(
    call: Callable[[], Awaitable[None]], spec: RowSpec, window: Window
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    stopping = asyncio.Event()

    async def worker() -> None:
        while not stopping.is_set():
            outcomes.append(await attempt(call, time.perf_counter()))

    workers = [asyncio.create_task(worker()) for _ in range(spec.concurrency)]
    await window.run()
    stopping.set()
    await asyncio.gather(*workers)
    return outcomes


async def open_loop(
    call: Callable[[], Awaitable[None]], spec: RowSpec, window: Window
) -> list[Outcome]:
    """Start a call every 1/rate seconds, on schedule whatever the answers; a call's latency
    runs from when it was due."""
    outcomes: list[Outcome] = []
    pending: set[asyncio.Task[None]] = set()
    timer = asyncio.create_task(window.run())
    begin = time.perf_counter()
    end = begin + spec.warmup + spec.seconds

    async def one(due: float) -> None:
        outcomes.append(await attempt(call, due))

    for number in itertools.count():
        due = begin + number / spec.rate
        if due >= end:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await timer
    if pending:
        await asyncio.wait(pending, timeout=60)
    return outcomes


def summarise(spec: RowSpec, window: Window, outcomes: Sequence[Outcome]) -> RowResult:
    """Commands/s: successful answers received in the window. Latency: of those answers
    (closed loop), or of the calls due in the window however late they were answered (open
    loop, so that a backlog shows)."""
    answered = [o for o in outcomes if window.start <= o[1] <= window.end]
    if spec.mode == "rate":
        timed = [o for o in outcomes if window.start <= o[0] < window.end]
    else:
        timed = answered
    latencies = [(finished - started) * 1000 for started, finished, code in timed if code is None]
    errors = Counter(
        code
        for started, finished, code in outcomes
        if code is not None
        and (
            window.start <= finished <= window.end
            or (spec.mode == "rate" and window.start <= started < window.end)
        )
    )
    return RowResult(
        spec=spec,
        ok=sum(1 for o in answered if o[2] is None),
        seconds=window.end - window.start,
        p50_ms=percentile(latencies, 50) if latencies else float("nan"),
        p99_ms=percentile(latencies, 99) if latencies else float("nan"),
        errors=dict(errors),
        cpu=window.cpu,
        database=window.database,
        samples=window.samples,
    )


async def settle(pids: Iterable[int], limit: float, idle: float = 0.15) -> float:
    """Wait until the servers are idle (below ``idle`` cores together over half a second), at
    most ``limit`` seconds, and return how long that took. Subscribers work behind the
    commands (Kafka, the in-process bus); a row must not pay for the previous row's backlog."""
    started = time.perf_counter()
    pids = list(pids)
    while time.perf_counter() - started < limit:
        before = sum(process_cpu(pid) or 0.0 for pid in pids)
        await asyncio.sleep(0.5)
        if sum(process_cpu(pid) or 0.0 for pid in pids) - before < idle * 0.5:
            break
    return time.perf_counter() - started


def sustainable(spec: RowSpec, earlier: Sequence[RowResult]) -> RowSpec:
    """An open-loop row at the planned rate if the closed loop showed room for it, else at
    half the closed-loop rate: beyond capacity, an open loop measures only its own backlog."""
    measured = [
        r.rate for r in earlier if r.spec.command == spec.command and r.spec.mode == "closed"
    ]
    if not measured or measured[-1] >= spec.rate * 1.25:
        return spec
    return replace(spec, rate=max(10, int(measured[-1] / 2)))


async def load_main(spec: LoadSpec) -> list[RowResult]:
    commands = Commands(spec.run_id, spec.addresses, spec.channels, spec.tokens)
    probe = CpuProbe(spec.pids)
    results: list[RowResult] = []
    try:
        needs_cases = any(row.command in NEEDS_CASES for row in spec.rows)
        started = time.perf_counter()
        await commands.prepare(spec.clients, spec.cases if needs_cases else 0)
        log.warning("prepared in %.1fs", time.perf_counter() - started)
        for planned in spec.rows:
            row = sustainable(planned, results) if planned.mode == "rate" else planned
            settled = await settle(spec.pids.values(), spec.settle_limit)
            window = Window(probe, row, spec)
            run = closed_loop if row.mode == "closed" else open_loop
            outcomes = await run(commands.call(row.command), row, window)
            results.append(replace(summarise(row, window, outcomes), settled=settled))
            log.warning("%s %s %s: %.0f/s", row.setup, row.command, row.load(), results[-1].rate)
    finally:
        await commands.close()
    return results


def load_entry() -> None:
    raw = json.load(sys.stdin)
    spec = LoadSpec(**{**raw, "rows": [RowSpec(**row) for row in raw["rows"]]})
    results = asyncio.run(load_main(spec))
    json.dump([asdict(result) for result in results], sys.stdout)


async def run_load(spec: LoadSpec, work: Path) -> list[RowResult]:
    """Run the load generator in its own process and read back its results."""
    with (work / "loadgen.log").open("a") as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.grpc_bench",
            "--load",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
            cwd=REPO,
        )
        out, _ = await process.communicate(json.dumps(asdict(spec)).encode())
    if process.returncode != 0:
        tail = (work / "loadgen.log").read_text()[-3000:]
        raise RuntimeError(f"load generator failed ({process.returncode}):\n{tail}")
    return [
        RowResult(**{**row, "spec": RowSpec(**row["spec"])}) for row in json.loads(out.decode())
    ]


# --- the servers ------------------------------------------------------------------------------


@dataclass
class Server:
    label: str
    process: asyncio.subprocess.Process
    addresses: dict[str, str]

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


ADDRESS_LINE = re.compile(r"^\s+(\w+)\s+(\S+:\d+)\s*$")


async def start_server(
    label: str, argv: Sequence[str], env: Mapping[str, str], out: Path, expect: Sequence[str]
) -> Server:
    """Start a server process and wait until it printed the addresses of ``expect``."""
    with out.open("w") as stdout, out.with_suffix(".err").open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdout=stdout, stderr=stderr, cwd=REPO, env=dict(env)
        )
    deadline = time.perf_counter() + 90
    while True:
        addresses = _addresses(await asyncio.to_thread(out.read_text))
        if all(name in addresses for name in expect):
            return Server(label, process, addresses)
        if process.returncode is not None or time.perf_counter() > deadline:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            err = out.with_suffix(".err").read_text()[-3000:]
            raise RuntimeError(f"{label} did not start:\n{err}")
        await asyncio.sleep(0.1)


def _addresses(printed: str) -> dict[str, str]:
    found = {}
    for line in printed.splitlines():
        if line.startswith("ADDRESSES "):
            found.update(json.loads(line.removeprefix("ADDRESSES ")))
        elif match := ADDRESS_LINE.match(line):
            found[match.group(1)] = match.group(2)
    return found


def serve_entry(options: argparse.Namespace) -> None:
    """(internal) Run services in this process like ``services.runner``, on a given topic,
    optionally profiling the event loop's thread between SIGUSR1 and SIGUSR2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    profiler = cProfile.Profile() if options.profile else None
    asyncio.run(serve(options, profiler))


async def serve(options: argparse.Namespace, profiler: cProfile.Profile | None) -> None:
    from casetrail_platform.bus.kafka_settings import KafkaSettings
    from casetrail_platform.bus.topics import TopicSettings, ensure_topics
    from casetrail_platform.hosting import Infrastructure
    from services.runner import start_services, stop_services

    data_dir = Path(options.data_dir)
    _set_telemetry(options.telemetry_mode)
    if options.policy_mode == "off":
        _switch_policy_off()
    if options.backend == "distributed":
        kafka = KafkaSettings.from_env()
        await ensure_topics(kafka, TopicSettings(case_events_topic=options.topic))
        dsn = os.environ.get("CASETRAIL_PG_DSN", DEFAULT_PG_DSN)
        infra = Infrastructure.distributed(
            data_dir, dsn, kafka, topic=options.topic, verifier=_verifier(options.auth_mode)
        )
    else:
        infra = Infrastructure.embedded(data_dir, verifier=_verifier(options.auth_mode))
    names = options.service or list(SERVICES)
    running = await start_services(infra, names, "127.0.0.1", dict.fromkeys(SERVICES, 0))
    addresses = {service.name: f"127.0.0.1:{service.port}" for service in running}
    print("ADDRESSES " + json.dumps(addresses), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if profiler is not None:
        loop.add_signal_handler(signal.SIGUSR1, profiler.enable)

        def finish_profile() -> None:
            profiler.disable()
            profiler.dump_stats(options.profile)

        loop.add_signal_handler(signal.SIGUSR2, finish_profile)
    await stop.wait()
    await stop_services(running)


def _switch_policy_off() -> None:
    """The benchmark's own switch (the product has none): every read allowed with everything
    disclosed, no facts looked up, nothing recorded. What remains is the read itself."""
    from casetrail_platform.policy.guard import AccessControl
    from casetrail_platform.policy.vocabulary import Decision

    allowed = Decision(True, "checks-off", sensitive=True)

    async def no_facts(self: Any, case_id: str, own_entries: Any = ()) -> Any:
        from casetrail_platform.policy.facts import unknown_case

        return unknown_case(case_id)

    async def authorize(self: Any, *args: Any) -> Decision:
        return allowed

    async def require_role(self: Any, *args: Any) -> None:
        return None

    async def release(self: Any, *args: Any) -> list[Any]:
        return []

    AccessControl.case_facts = no_facts  # type: ignore[method-assign]
    AccessControl.decide = lambda self, *args: allowed  # type: ignore[method-assign]
    AccessControl.authorize = authorize  # type: ignore[method-assign,assignment]
    AccessControl.require_role = require_role  # type: ignore[method-assign,assignment]
    AccessControl.release = release  # type: ignore[method-assign,assignment]


# --- the reference: an empty OpenCase handler ------------------------------------------------

# Plausible ids (UUIDv7-shaped, as the services create), so the answers are as large as real ones.
EMPTY_CASE_ID = "01920000-0000-7000-8000-00000000ca5e"
EMPTY_CLIENT_ID = "01920000-0000-7000-8000-00000000c1e7"
EMPTY_EVENT_ID = "01920000-0000-7000-8000-0000000e7e47"


AUTH_MODES = ("off", "every-call", "product")
"""How the servers check tokens in the authentication rows: ``off`` takes the caller from
the token unchecked (a switch that exists only here, never in the product); ``every-call``
verifies the signature and claims on every call (nothing remembered: the cost of a token
seen for the first time); ``product`` is what the services do (a verified token is
remembered until it expires)."""


def _verifier(mode: str = "product") -> Any:
    """The token verifier of the run's issuer (named by the environment, as in production)."""
    from casetrail_platform.identity.keys import IssuerKeys
    from casetrail_platform.identity.settings import IssuerSettings
    from casetrail_platform.identity.verifier import TokenVerifier

    settings = IssuerSettings.from_env()
    if settings is None:
        raise SystemExit("the benchmark's servers need CASETRAIL_OIDC_ISSUER")
    if mode == "every-call":
        return TokenVerifier(IssuerKeys(settings.issuer), settings.audience, remembered=0)
    if mode == "off":
        return _unchecked(settings.issuer)
    return settings.verifier()


def _unchecked(issuer: str) -> Any:
    """A verifier that checks nothing: the caller is read from the token's claims as they
    are (each token decoded once). Benchmark only: it measures what the checks cost."""
    import jwt

    from casetrail_platform.identity.claims import principal_from_claims
    from casetrail_platform.identity.keys import IssuerKeys
    from casetrail_platform.identity.principal import Principal
    from casetrail_platform.identity.verifier import TokenVerifier

    class Unchecked(TokenVerifier):
        def __init__(self) -> None:
            super().__init__(IssuerKeys(issuer), "")
            self._seen: dict[str, Principal] = {}

        @override
        async def verify(self, token: str) -> Principal:
            principal = self._seen.get(token)
            if principal is None:
                claims = jwt.decode(token, options={"verify_signature": False})
                principal = self._seen[token] = principal_from_claims(claims, issuer)
            return principal

    return Unchecked()


def serve_empty_entry() -> None:
    """(internal) Serve the empty intake until SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(serve_empty())


async def serve_empty() -> None:
    """Intake's gRPC server as the services build it (health, reflection, the refusal
    wrapper), with handlers that answer constants: what gRPC, asyncio and the load generator
    cost on this machine without any of casetrail's work. Coordination's address points here
    too, since the load generator opens channels to both (and calls only intake here)."""
    from casetrail_platform.grpc_platform.server import create_server, serve_until_signalled
    from services.runner import tune_gc

    servicer = empty_intake()
    names = [intake_pb2.DESCRIPTOR.services_by_name["IntakeService"].full_name]
    server, port, health_servicer = await create_server(
        "127.0.0.1:0",
        [partial(intake_pb2_grpc.add_IntakeServiceServicer_to_server, servicer)],
        names,
        verifier=_verifier(),
    )
    await server.start()
    tune_gc()  # as services.runner does after start-up: like for like
    address = f"127.0.0.1:{port}"
    print("ADDRESSES " + json.dumps({"intake": address, "coordination": address}), flush=True)
    await serve_until_signalled(server, health_servicer)


def empty_intake() -> intake_pb2_grpc.IntakeServiceServicer:
    """An Intake servicer whose OpenCase and RegisterClient return a constant answer.

    Built in a function so that the orchestrator and the load generator, which never serve,
    do not import the events package (the catalog's pydantic models take a while to load)."""
    from casetrail_platform.grpc_platform.server import Context, refusals_as_status

    opened = intake_pb2.OpenCaseResponse(
        result=common_pb2.CommandResult(
            case_id=EMPTY_CASE_ID, version=1, event_ids=[EMPTY_EVENT_ID]
        )
    )
    registered = intake_pb2.RegisterClientResponse(
        client_id=EMPTY_CLIENT_ID, version=1, event_ids=[EMPTY_EVENT_ID]
    )

    class EmptyIntake(intake_pb2_grpc.IntakeServiceServicer):
        @override
        @refusals_as_status
        async def RegisterClient(
            self, request: intake_pb2.RegisterClientRequest, context: Context
        ) -> intake_pb2.RegisterClientResponse:
            return registered

        @override
        @refusals_as_status
        async def OpenCase(
            self, request: intake_pb2.OpenCaseRequest, context: Context
        ) -> intake_pb2.OpenCaseResponse:
            return opened

    # The stubs declare every method abstract; the generated base class answers the other
    # methods UNIMPLEMENTED, which is all the reference needs.
    return EmptyIntake()  # type: ignore[abstract]


# --- PostgreSQL and Kafka for the distributed run ---------------------------------------------


@contextlib.contextmanager
def fresh_database(base_dsn: str, name: str) -> Iterator[str]:
    """A new database on the server of ``base_dsn``, dropped afterwards."""
    admin = make_conninfo(base_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(base_dsn, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_facts(dsn: str) -> str:
    with psycopg.connect(dsn) as connection:
        version = connection.execute("SHOW server_version").fetchone()
        sync = connection.execute("SHOW synchronous_commit").fetchone()
    return f"{version[0] if version else '?'}, synchronous_commit={sync[0] if sync else '?'}"


async def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="casetrail-bench")
    await admin.start()
    try:
        await admin.delete_topics([topic])
    except Exception as error:  # cleanup only: a leftover topic is no reason to fail
        log.warning("could not delete topic %s: %s", topic, error)
    finally:
        await admin.close()


# --- the runs ---------------------------------------------------------------------------------


def rows(plan: Plan, setup: str, intake: str, coordination: str, register: bool) -> list[RowSpec]:
    """The rows of one setup; ``intake`` and ``coordination`` label the serving processes."""
    closed = RowSpec(setup, "open_case", "closed", plan.warmup, plan.seconds, plan.concurrency)
    specs = [
        closed,
        RowSpec(setup, "open_case", "rate", plan.warmup, plan.rate_seconds, rate=plan.rate),
    ]
    if register:
        specs.append(replace(closed, command="register_client", seconds=plan.register_seconds))
    specs.append(replace(closed, command="make_referral"))
    return [
        replace(spec, server=coordination if spec.command == "make_referral" else intake)
        for spec in specs
    ]


def profile_row(plan: Plan, setup: str, server: str) -> RowSpec:
    """OpenCase once more, with the server's profiler on for the window only."""
    return RowSpec(
        setup,
        "open_case",
        "closed",
        warmup=1.0,
        seconds=plan.profile_seconds,
        concurrency=plan.concurrency,
        server=server,
        profile=True,
    )


@dataclass
class Profile:
    row: RowResult
    stats: pstats.Stats
    what: str


def read_profile(results: list[RowResult], path: Path, what: str) -> Profile | None:
    """Take the profiled row out of ``results`` and pair it with its statistics."""
    profiled = [r for r in results if r.spec.profile]
    for row in profiled:
        results.remove(row)
    if not profiled or not path.exists():
        return None
    return Profile(profiled[0], pstats.Stats(str(path)), what)


BENCH_TOKENS: dict[str, str] = {}
"""Filled by ``start_issuer`` in the orchestrating process."""


def start_issuer() -> Any:
    """An issuer over HTTP on 127.0.0.1 for this run: every server trusts it (through the
    environment it hands down), and the load generator calls with tokens it signed."""
    from casetrail_platform.identity.issuer_http import IssuerHttpServer
    from casetrail_platform.identity.tokens import SigningKey, mint

    key = SigningKey.generate("ES256")
    public = [key.public_jwk()]
    server = IssuerHttpServer(lambda: public)
    os.environ["CASETRAIL_OIDC_ISSUER"] = server.url
    os.environ["CASETRAIL_OIDC_AUDIENCE"] = BENCH_AUDIENCE
    for user, role in BENCH_USERS.items():
        BENCH_TOKENS[user] = mint(
            key,
            issuer=server.url,
            audience=BENCH_AUDIENCE,
            subject=user,
            role=role,
            agency="eastbay-dss",
            lifetime_seconds=4 * 3600,
        )
    return server


async def reference_run(plan: Plan, work: Path, run_id: str) -> list[RowResult]:
    """The OpenCase closed-loop row against the empty handler, with the same load generator
    settings as the services' rows."""
    argv = ["-m", "bench.grpc_bench", "--serve-empty"]
    server = await start_server("reference", argv, os.environ, work / "reference.out", ["intake"])
    try:
        closed = RowSpec(
            "reference", "open_case", "closed", plan.warmup, plan.seconds, plan.concurrency
        )
        spec = LoadSpec(
            run_id=f"{run_id}-r",
            addresses=server.addresses,
            pids={"reference": server.pid},
            rows=[replace(closed, server="reference")],
            channels=plan.channels,
            clients=plan.clients,
            cases=0,
            scratch=str(work),
            settle_limit=plan.settle_limit,
            tokens=BENCH_TOKENS,
        )
        return await run_load(spec, work)
    finally:
        await server.stop()


async def embedded_run(plan: Plan, work: Path, run_id: str) -> list[RowResult]:
    data = work / "embedded"
    data.mkdir()
    argv = ["-m", "services.runner", "--any-port", "--data-dir", str(data)]
    server = await start_server("embedded", argv, os.environ, work / "embedded.out", SERVICES)
    try:
        spec = LoadSpec(
            run_id=f"{run_id}-e",
            addresses=server.addresses,
            pids={"embedded": server.pid},
            rows=rows(plan, "embedded", "embedded", "embedded", register=True),
            channels=plan.channels,
            clients=plan.clients,
            cases=plan.cases,
            scratch=str(work),
            settle_limit=plan.settle_limit,
            tokens=BENCH_TOKENS,
        )
        return await run_load(spec, work)
    finally:
        await server.stop()


async def embedded_profile(plan: Plan, work: Path, run_id: str) -> Profile | None:
    """The embedded services again, in a process like ``services.runner``'s that can profile
    its event loop's thread on signal, under OpenCase."""
    data = work / "embedded-profiled"
    data.mkdir()
    out = work / "embedded.pstats"
    argv = ["-m", "bench.grpc_bench", "--serve", "--data-dir", str(data), "--profile", str(out)]
    server = await start_server("embedded", argv, os.environ, work / "profiled.out", SERVICES)
    try:
        spec = LoadSpec(
            run_id=f"{run_id}-p",
            addresses=server.addresses,
            pids={"embedded": server.pid},
            rows=[replace(profile_row(plan, "embedded", "embedded"), warmup=plan.warmup)],
            channels=plan.channels,
            clients=plan.clients,
            cases=0,
            scratch=str(work),
            settle_limit=plan.settle_limit,
            tokens=BENCH_TOKENS,
        )
        results = await run_load(spec, work)
    finally:
        await server.stop()
    return read_profile(results, out, "embedded (all four services in one process)")


async def distributed_run(
    plan: Plan, work: Path, run_id: str, dsn: str, topic: str, profile: bool
) -> tuple[list[RowResult], Profile | None]:
    """The four services in four processes; with ``profile``, a last OpenCase row with the
    intake process's profiler on."""
    env = {**os.environ, "CASETRAIL_PG_DSN": dsn}
    out = work / "intake.pstats"
    servers: list[Server] = []
    try:
        await start_services(
            servers, "distributed", [], env, work, "distributed", topic, out if profile else None
        )
        specs = rows(plan, "distributed", "intake", "coordination", register=False)
        if profile:
            specs.append(profile_row(plan, "distributed", "intake"))
        spec = LoadSpec(
            run_id=f"{run_id}-d",
            addresses={name: a for s in servers for name, a in s.addresses.items()},
            pids={s.label: s.pid for s in servers},
            rows=specs,
            channels=plan.channels,
            clients=plan.clients,
            cases=plan.cases,
            scratch=str(work),
            settle_limit=plan.settle_limit,
            dsn=dsn,
            tokens=BENCH_TOKENS,
        )
        results = await run_load(spec, work)
    finally:
        for server in reversed(servers):
            await server.stop()
    return results, read_profile(results, out, "distributed intake process")


async def start_services(
    servers: list[Server],
    backend: str,
    switches: Sequence[str],
    env: Mapping[str, str],
    work: Path,
    tag: str,
    topic: str = "",
    profile_intake: Path | None = None,
) -> None:
    """The four services as ``--serve`` runs them, with the benchmark-only ``switches``: one
    process (embedded) or one per service (distributed, on ``topic``), added to ``servers``
    as they start (so the caller stops whatever started, even after a failure)."""
    base = ["-m", "bench.grpc_bench", "--serve", *switches, "--backend", backend]
    if backend == "embedded":
        data = work / tag
        data.mkdir()
        argv = [*base, "--data-dir", str(data)]
        servers.append(await start_server("embedded", argv, env, work / f"{tag}.out", SERVICES))
        return

    from casetrail_platform.keys.hosting import KEK_FILE_VARIABLE

    # One agency, one key-encryption key: every process seals and opens with the same one
    # (in production, a mounted secret named by the same variable).
    shared = {KEK_FILE_VARIABLE: str(work / f"{tag}-kek.bin"), **env}

    async def start(name: str) -> None:
        data = work / f"{tag}-{name}"
        data.mkdir()
        argv = [*base, "--service", name, "--topic", topic, "--data-dir", str(data)]
        if profile_intake is not None and name == "intake":
            argv += ["--profile", str(profile_intake)]
        servers.append(await start_server(name, argv, shared, work / f"{tag}-{name}.out", [name]))

    started = await asyncio.gather(*(start(name) for name in SERVICES), return_exceptions=True)
    for failure in started:
        if isinstance(failure, BaseException):
            raise failure


@dataclass
class BenchRun:
    plan: Plan
    quick: bool
    reference: list[RowResult]
    """The empty OpenCase handler (one row)."""
    embedded: list[RowResult]
    distributed: list[RowResult]
    profiles: list[Profile]
    elapsed: float
    facts: dict[str, str] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    """Source files of the services that changed while the benchmark ran."""


async def run(quick: bool, write: bool, profile: bool | None, keep: bool) -> str:
    from casetrail_platform.bus.kafka_settings import KafkaSettings

    plan = QUICK if quick else FULL
    profile = (not quick) if profile is None else profile
    run_id = f"{int(time.time())}"
    base_dsn = os.environ.get("CASETRAIL_PG_DSN", DEFAULT_PG_DSN)
    bootstrap = KafkaSettings.from_env().bootstrap_servers
    topic = f"casetrail.bench-grpc-{run_id}"
    started = time.perf_counter()
    code = code_fingerprint()
    work = Path(tempfile.mkdtemp(prefix="casetrail-grpc-bench-"))
    issuer = start_issuer()
    try:
        progress(started, "reference: an empty OpenCase handler")
        reference = await reference_run(plan, work, run_id)
        progress(started, "embedded: the four services in one process")
        embedded = await embedded_run(plan, work, run_id)
        progress(started, "distributed: four processes on PostgreSQL + Kafka")
        with fresh_database(base_dsn, f"bench_grpc_{run_id}") as dsn:
            facts = {"PostgreSQL": postgres_facts(dsn), "Kafka": bootstrap}
            try:
                distributed, intake_profile = await distributed_run(
                    plan, work, run_id, dsn, topic, profile
                )
            finally:
                await delete_topic(bootstrap, topic)
        profiles = [intake_profile] if intake_profile else []
        if profile:
            progress(started, "embedded under cProfile")
            embedded_profiled = await embedded_profile(plan, work, run_id)
            profiles[:0] = [embedded_profiled] if embedded_profiled else []
        elapsed = time.perf_counter() - started
        progress(started, "done")
        now = code_fingerprint()
        changed = sorted(
            path for path in code.keys() | now.keys() if code.get(path) != now.get(path)
        )
        outcome = BenchRun(
            plan, quick, reference, embedded, distributed, profiles, elapsed, facts, changed
        )
        body = report(outcome)
    finally:
        issuer.stop()
        if keep:
            print(f"logs and data kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if write:
        replace_section(HEADING, body)
    return body


def code_fingerprint() -> dict[str, float]:
    """Modification times of the code under test, to notice edits made while it runs."""
    return {
        str(path.relative_to(REPO)): path.stat().st_mtime
        for folder in ("events", "casetrail_platform", "services")
        for path in (REPO / folder).rglob("*.py")
    }


def progress(started: float, what: str) -> None:
    print(f"[{time.perf_counter() - started:5.1f}s] {what}", flush=True)


# --- the report -------------------------------------------------------------------------------

COMMAND_NAMES = {
    "open_case": "intake OpenCase",
    "register_client": "intake RegisterClient",
    "make_referral": "coordination MakeReferral",
    "get_case_view": "planning GetCaseView",
}


def ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"


def cores(value: float) -> str:
    return f"{value:.2f}"


def main_table(results: Sequence[RowResult]) -> str:
    headers = [
        "setup",
        "command",
        "load",
        "commands/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "server process CPU (cores)",
        "of it main thread",
        "commands per server CPU-s",
        "load generator (cores)",
        "machine busy (of 2)",
        "vs target",
    ]
    table = []
    for r in results:
        server = r.spec.server
        failed = sum(r.errors.values())
        per_cpu = r.per_cpu_second(server)
        main_share = r.cpu.get(f"{server}/main", 0.0) / r.cpu[server] if r.cpu.get(server) else 0
        table.append(
            [
                r.spec.setup,
                COMMAND_NAMES[r.spec.command],
                r.spec.load(),
                fmt_rate(r.rate),
                ms(r.p50_ms),
                ms(r.p99_ms),
                str(failed) if not failed else f"{failed} ({_codes(r.errors)})",
                f"{cores(r.cores(server))} ({server})",
                f"{main_share:.0%}",
                fmt_rate(per_cpu),
                cores(r.cores("loadgen")),
                cores(r.cores("machine")),
                fmt_ratio(r.rate / TARGET) if r.spec.mode == "closed" else "-",
            ]
        )
    return markdown_table(headers, table)


def _codes(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{code} {count}" for code, count in sorted(errors.items()))


def cpu_split_table(results: Sequence[RowResult], labels: Sequence[str]) -> str:
    """Where the machine's CPU went in each window, in cores (CPU-seconds per second)."""
    headers = ["setup", "command", "load", *labels, "PostgreSQL", "Kafka", "load generator"]
    headers += ["anything else", "machine busy (of 2)"]
    table = []
    for r in results:
        ours = [r.cores(label) for label in labels]
        known = [*ours, r.cores("postgres"), r.cores("kafka"), r.cores("loadgen")]
        other = max(r.cores("machine") - sum(known), 0.0)
        table.append(
            [
                r.spec.setup,
                COMMAND_NAMES[r.spec.command],
                r.spec.load(),
                *(cores(value) for value in known),
                cores(other),
                cores(r.cores("machine")),
            ]
        )
    return markdown_table(headers, table)


def waits_table(results: Sequence[RowResult]) -> str:
    """What a durable write and a database round trip cost while each row ran."""
    headers = ["setup", "command", "load", "servers idle after (s)", "fdatasync p50 / p99 ms"]
    headers += ["PostgreSQL `SELECT 1` p50 / p99 ms", "database transactions per command"]
    headers += ["rows written per command"]
    table = []
    for r in results:
        found = r.samples
        written = r.database.get("tup_inserted", 0.0) + r.database.get("tup_updated", 0.0)
        table.append(
            [
                r.spec.setup,
                COMMAND_NAMES[r.spec.command],
                r.spec.load(),
                f"{r.settled:.1f}",
                _pair(found, "fsync"),
                _pair(found, "pg"),
                f"{r.database['xact_commit'] / r.ok:.1f}" if r.database and r.ok else "-",
                f"{written / r.ok:.1f}" if r.database and r.ok else "-",
            ]
        )
    return markdown_table(headers, table)


def _pair(samples: Mapping[str, float], what: str) -> str:
    if f"{what} p50 ms" not in samples:
        return "-"
    return f"{samples[f'{what} p50 ms']:.2f} / {samples[f'{what} p99 ms']:.2f}"


Key = tuple[str, int, str]
Entry = tuple[int, int, float, float, Any]


def raw_stats(profile: Profile) -> dict[Key, Entry]:
    stats: dict[Key, Entry] = profile.stats.stats  # type: ignore[attr-defined]
    return stats


def short_function(key: Key) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    path = filename
    for prefix in (str(REPO) + "/", "site-packages/", "/lib/python3"):
        if prefix in path:
            path = path.split(prefix, 1)[1]
    return f"{path}:{line} {name}"


def loop_time(profile: Profile) -> float:
    """Seconds the profiled thread spent in the window (wall clock, all functions' own time)."""
    return sum(entry[2] for entry in raw_stats(profile).values())


def profile_tables(profile: Profile) -> tuple[str, str]:
    """Top 15 functions by own time and top 15 casetrail functions by cumulative time, in
    microseconds per command."""
    raw = raw_stats(profile)
    commands = max(profile.row.ok, 1)
    total = loop_time(profile) or 1.0

    def row(key: Key, entry: Entry) -> list[str]:
        _, calls, own, cumulative, _ = entry
        return [
            f"`{short_function(key)}`",
            f"{calls / commands:.1f}",
            f"{own / commands * 1e6:.0f}",
            f"{cumulative / commands * 1e6:.0f}",
            f"{own / total:.1%}",
        ]

    headers = ["function", "calls/command", "own us/command", "cumulative us/command", "own share"]
    by_own = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:15]
    ours = [
        (key, entry)
        for key, entry in raw.items()
        if key[0].startswith(str(REPO)) and "/.venv/" not in key[0] and "/bench/" not in key[0]
    ]
    by_cumulative = sorted(ours, key=lambda item: item[1][3], reverse=True)[:15]
    return (
        markdown_table(headers, [row(key, entry) for key, entry in by_own]),
        markdown_table(headers, [row(key, entry) for key, entry in by_cumulative]),
    )


def per_command(profile: Profile, file_suffix: str, name: str) -> tuple[float, float, float]:
    """Calls, own microseconds and cumulative microseconds per command of the functions
    called ``name`` in files ending with ``file_suffix`` (``~`` for built-ins)."""
    commands = max(profile.row.ok, 1)
    calls = own = cumulative = 0.0
    for (filename, _line, function), entry in raw_stats(profile).items():
        if function == name and filename.endswith(file_suffix):
            calls += entry[1]
            own += entry[2]
            cumulative += entry[3]
    return calls / commands, own / commands * 1e6, cumulative / commands * 1e6


def share(profile: Profile, micros_per_command: float) -> str:
    total = loop_time(profile)
    return f"{micros_per_command * profile.row.ok / 1e6 / total:.0%}" if total else "n/a"


def report(result: BenchRun) -> str:
    plan = result.plan
    info = machine_info(grpcio=grpc.__version__, **result.facts)
    lines = [
        f"Run: {now_utc()}, {'quick' if result.quick else 'full'} run, "
        f"{result.elapsed:.0f} s. Command: `python -m bench.grpc_bench"
        f"{' --quick' if result.quick else ''}`.",
        *(
            [
                "",
                "**Warning: the code under test changed while this ran, so rows may mix "
                f"versions:** {', '.join(result.changed)}.",
            ]
            if result.changed
            else []
        ),
        "",
        "Machine:",
        *(f"- {fact}" for fact in info.lines()),
        "",
        "Setup:",
        "- **embedded**: `python -m services.runner --any-port`: intake, coordination, planning "
        "and audit in ONE process, SQLite files (WAL; the event stores commit with "
        "synchronous=FULL, durable before the answer), the in-process bus between them. "
        "Every command therefore also pays for the other services' projections of its "
        "event. The target (2,000 commands/s per service process) applies to that process.",
        "- **distributed**: one process per service (`services.runner`'s `start_services`, "
        "started by `--serve` with a Kafka topic of the run's own, deleted afterwards; the "
        "runner itself always uses the shared development topic), their schemas in a fresh "
        "PostgreSQL database (`CREATE DATABASE`, dropped afterwards), Kafka between them. "
        "Commands go to intake (OpenCase) or coordination (MakeReferral); the other three "
        "processes consume the events from Kafka meanwhile, on the same two cores.",
        "- **reference**: `python -m bench.grpc_bench --serve-empty`: intake's gRPC server set "
        "up as the services do (`create_server`: health and reflection; `refusals_as_status` "
        "around the method; the runner's gc settings), whose OpenCase and RegisterClient "
        "return a constant answer. It measures gRPC, asyncio and the load generator on this "
        "machine, without any of casetrail's work: the ceiling for a Python gRPC service "
        "process measured this way.",
        f"- Load generator: a separate process, grpc.aio, {plan.channels} channels (one TCP "
        f"connection each) per service. Closed loop: {plan.concurrency} calls in flight, "
        f"{plan.warmup:.0f} s warm-up, then {plan.seconds:.0f} s measured "
        f"({plan.register_seconds:.0f} s for RegisterClient); commands/s counts successful "
        "answers received in the window. Open loop: calls started on schedule whatever the "
        f"answers, {plan.rate_seconds:.0f} s measured, latency from when each call was due; "
        f"at {plan.rate}/s when the closed loop reached 1.25 times that, else at half the "
        "closed-loop rate (beyond capacity an open loop only measures its own backlog).",
        f"- Commands: OpenCase for {plan.clients} clients registered beforehand, in turn; "
        "RegisterClient with a unique name each (the duplicate check runs and finds nothing; "
        "intake serialises registrations on purpose, see services/intake/app/handlers.py); "
        f"MakeReferral on {plan.cases:,} cases opened beforehand and learnt by coordination "
        "from the bus. Every call has a fresh idempotency key.",
        "- CPU: user+system time from `/proc/<pid>/stat` (the main thread, where the event "
        "loop runs: `/proc/<pid>/task/<pid>/stat`) at both ends of the window; PostgreSQL = "
        "every `postgres` process, Kafka = the broker's JVM, machine busy = `/proc/stat` (all "
        "work on the machine, other people's included). 1.00 = one core fully used.",
        "",
        main_table([*result.reference, *result.embedded, *result.distributed]),
        "",
        *comparison(result),
        "",
        "Where the CPU went in each window (cores):",
        "",
        cpu_split_table(result.reference, ["reference"]),
        "",
        cpu_split_table(result.embedded, ["embedded"]),
        "",
        cpu_split_table(result.distributed, list(SERVICES)),
        "",
        "Before each row the load generator waits until the servers are idle (below 0.15 cores "
        f"together, at most {plan.settle_limit:.0f} s): subscribers work behind the commands, "
        "and a row must not pay for the previous row's backlog. What waiting costs: a 200-byte "
        "`fdatasync` beside the SQLite files and a `SELECT 1` to PostgreSQL, each sampled 20 "
        "times a second in the window; the database counters come from `pg_stat_database` "
        "(every autocommit statement is one transaction; backends report about once a second).",
        "",
        waits_table([*result.embedded, *result.distributed]),
        "",
        *shortfall(result),
    ]
    return "\n".join(lines)


def comparison(result: BenchRun) -> list[str]:
    lines = ["Side by side (same run, one after the other):", "", *reference_comparison(result)]
    for command in ("open_case", "make_referral"):
        embedded = find(result.embedded, command)
        distributed = find(result.distributed, command)
        if embedded is None or distributed is None or not distributed.rate:
            continue
        e_cpu = embedded.per_cpu_second(embedded.spec.server)
        d_cpu = distributed.per_cpu_second(distributed.spec.server)
        lines.append(
            f"- {COMMAND_NAMES[command]}: embedded {fmt_rate(embedded.rate)}/s vs distributed "
            f"{fmt_rate(distributed.rate)}/s = {fmt_ratio(embedded.rate / distributed.rate)}; "
            f"per CPU-second of the serving process {fmt_rate(e_cpu)} vs {fmt_rate(d_cpu)}"
            + (f" = {fmt_ratio(e_cpu / d_cpu)}" if e_cpu and d_cpu else "")
            + " (the embedded process also runs the other three services)."
        )
    for rows in (result.embedded, result.distributed):
        closed = find(rows, "open_case")
        paced = find(rows, "open_case", "rate")
        if closed and paced:
            lines.append(
                f"- {closed.spec.setup} OpenCase latency: p50/p99 {ms(paced.p50_ms)}/"
                f"{ms(paced.p99_ms)} ms at {paced.spec.rate}/s offered "
                f"({fmt_rate(paced.rate)}/s answered), {ms(closed.p50_ms)}/"
                f"{ms(closed.p99_ms)} ms with {closed.spec.concurrency} in flight."
            )
    return lines


def reference_comparison(result: BenchRun) -> list[str]:
    """OpenCase of the services against the empty handler's, in rate and server CPU."""
    empty = find(result.reference, "open_case")
    if empty is None or not empty.rate:
        return []
    embedded = find(result.embedded, "open_case")
    distributed = find(result.distributed, "open_case")
    rates = [
        f"{r.spec.setup} OpenCase {fmt_rate(r.rate)}/s vs the empty handler "
        f"{fmt_rate(empty.rate)}/s = {fmt_ratio(r.rate / empty.rate)}"
        for r in (embedded, distributed)
        if r is not None
    ]
    lines = [f"- Against the reference: {'; '.join(rates)}." if rates else ""]
    empty_us = micros_per_command(empty, empty.spec.server)
    if embedded is not None and empty_us is not None:
        embedded_us = micros_per_command(embedded, embedded.spec.server)
        lines.append(
            f"- Server CPU: the empty handler's process spent {empty_us:.0f} us per call, the "
            f"embedded process {embedded_us:.0f} us per OpenCase"
            + (f" = {fmt_ratio(embedded_us / empty_us)}" if embedded_us else "")
            + "."
        )
    return [line for line in lines if line]


def micros_per_command(row: RowResult, label: str) -> float | None:
    """CPU microseconds ``label`` spent per successful command of the row's window."""
    return row.cpu.get(label, 0.0) / row.ok * 1e6 if row.ok else None


def find(rows: Sequence[RowResult], command: str, mode: str = "closed") -> RowResult | None:
    return next((r for r in rows if r.spec.command == command and r.spec.mode == mode), None)


def shortfall(result: BenchRun) -> list[str]:
    below = [
        r
        for r in [*result.embedded, *result.distributed]
        if r.spec.mode == "closed" and r.rate < TARGET
    ]
    if not below:
        return ["Every measured service process reached the target."]
    lines = ["### Where we fall short and why", ""]
    for r in below:
        lines.append(
            f"- **Below target**: {r.spec.setup} {COMMAND_NAMES[r.spec.command]}: "
            f"{fmt_rate(r.rate)} commands/s, {r.rate / TARGET:.0%} of {fmt_rate(TARGET)}; the "
            f"serving process used {cores(r.cores(r.spec.server))} cores, "
            f"{fmt_rate(r.per_cpu_second(r.spec.server))} commands per CPU-second of it."
        )
    embedded = next((p for p in result.profiles if p.row.spec.setup == "embedded"), None)
    intake = next((p for p in result.profiles if p.row.spec.setup == "distributed"), None)
    lines += ["", "Measured in this run:", "", *reference_ceiling(result)]
    if embedded is not None:
        lines += embedded_evidence(embedded, find(result.embedded, "open_case"))
    lines += distributed_evidence(result.distributed, intake)
    lines += ["", "Why:", "", *WHY, *cpu_ceiling(result.distributed)]
    for profile in result.profiles:
        lines += ["", *profile_section(profile)]
    return lines


def reference_ceiling(result: BenchRun) -> list[str]:
    empty = find(result.reference, "open_case")
    if empty is None or not empty.ok:
        return []
    return [
        f"- An empty OpenCase handler (the reference row) reaches {fmt_rate(empty.rate)}/s "
        f"({fmt_ratio(empty.rate / TARGET)} the target) with the load generator on the same "
        f"two cores (server {cores(empty.cores(empty.spec.server))} cores, load generator "
        f"{cores(empty.cores('loadgen'))}): that is this machine's ceiling for any Python gRPC "
        "service process measured this way."
    ]


def embedded_evidence(profile: Profile, closed: RowResult | None) -> list[str]:
    _, idle, _ = per_command(profile, "~", "<method 'poll' of 'select.epoll' objects>")
    statements, blocked, _ = per_command(
        profile, "~", "<method 'execute' of 'sqlite3.Connection' objects>"
    )
    # One read-model transaction object per transaction: a plain call, counted exactly.
    transactions, _, _ = per_command(
        profile, "casetrail_platform/projections/sqlite.py", "__init__"
    )
    decoded, _, _ = per_command(profile, "events/cloudevents.py", "from_kafka_binary")
    _, _, delivering = per_command(profile, "casetrail_platform/bus/delivery.py", "deliver")
    _, _, command = per_command(profile, "casetrail_platform/grpc_platform/server.py", "wrapper")
    built, _, builds = per_command(profile, "services/intake/app/handlers.py", "opening_of")
    loop = loop_time(profile) / max(profile.row.ok, 1) * 1e6
    fsync = _pair(closed.samples, "fsync") if closed else "-"
    lines = []
    if closed is not None and closed.ok:
        main = closed.cpu.get(f"{closed.spec.server}/main", 0.0) / closed.ok * 1000
        lines.append(
            f"- Embedded, without the profiler, the main thread (the event loop of all four "
            f"services) spent {main:.2f} ms of CPU per OpenCase at {fmt_rate(closed.rate)}/s, "
            f"{cores(closed.cores(f'{closed.spec.server}/main'))} cores, and the process "
            f"{cores(closed.cores(closed.spec.server))} cores of the 2 the machine has: one "
            "thread does the work of all four services."
        )
    return [
        *lines,
        f"- Under the profiler (which slows it: {fmt_rate(profile.row.rate)}/s) the loop's "
        f"thread spent {loop / 1000:.1f} ms per OpenCase, waiting in epoll for only "
        f"{share(profile, idle)} of it"
        + (
            ": the loop is saturated, and the shares below say what fills it."
            if idle < loop / 5
            else "."
        ),
        f"- {statements:.1f} SQLite statements in {transactions:.2f} read-model transactions "
        "per command run ON the event loop's thread (casetrail_platform/projections/sqlite.py): "
        f"{blocked:.0f} us per command, {share(profile, blocked)} of the loop; while they run "
        "nothing else in the process moves. These commits do not fsync (the embedded read "
        "models are replayed from the stores after a crash); the event store's durable commits "
        f"do, in its writer thread (a 200-byte fdatasync took {fsync} ms, p50 / p99, in the "
        "OpenCase window).",
        f"- Delivering each event to the subscriptions (the in-process bus hands over the "
        f"`RecordedEvent` itself: {decoded:.1f} CloudEvent decodes per command) takes "
        f"{delivering:.0f} us of loop per command ({share(profile, delivering)}), "
        f"{transactions:.2f} read-model transactions per command (one per projection per "
        "linger window, not one per event).",
        f"- The command itself, request to answer (`refusals_as_status` wrapper): {command:.0f} "
        f"us of loop per command, of which {builds:.0f} us build and validate the `CaseOpened` "
        f"event (`opening_of`, {built:.1f} calls per command"
        + ("; once to check the request, once again in the handler)." if built >= 1.5 else ")."),
    ]


def distributed_evidence(results: Sequence[RowResult], profile: Profile | None) -> list[str]:
    closed = find(results, "open_case")
    paced = find(results, "open_case", "rate")
    lines = []
    if closed is not None and closed.ok:
        main = closed.cpu.get("intake/main", 0.0) / closed.ok * 1000
        lines.append(
            f"- Distributed, intake's main thread spent {main:.1f} ms of CPU per OpenCase, and "
            f"with {closed.spec.concurrency} commands in flight the process used only "
            f"{cores(closed.cores('intake'))} cores: it mostly waits. PostgreSQL `SELECT 1` "
            f"round trips took {_pair(closed.samples, 'pg')} ms (p50 / p99) meanwhile."
        )
        spent = sum(closed.cpu.get(label, 0.0) for label in [*SERVICES, "postgres", "kafka"])
        lines.append(
            f"- The machine was {cores(closed.cores('machine'))} cores busy of 2 in that window: "
            f"the four services, PostgreSQL and Kafka together spent {spent / closed.ok * 1000:.1f}"
            " ms of CPU per OpenCase (intake's command and relay, then every subscriber decoding "
            "the event from Kafka and writing its read models), so on two cores the whole "
            f"system tops out near {2 * closed.ok / spent:,.0f} OpenCase/s before any wait."
        )
    if paced is not None:
        lines.append(
            f"- At {paced.spec.rate}/s offered an OpenCase takes {ms(paced.p50_ms)} ms (p50): "
            "a chain of round trips (client, intake, PostgreSQL), "
            "each one waking another process on two cores shared by the four services, "
            "PostgreSQL, Kafka and the load generator."
        )
    if profile is not None:
        sends, send_us, _ = per_command(profile, "psycopg/_cursor_base.py", "_send_query_prepared")
        decoded, _, decode_us = per_command(
            profile, "casetrail_platform/store/rows.py", "to_recorded"
        )
        _, _, appending = per_command(profile, "casetrail_platform/store/postgres.py", "_append_on")
        lines.append(
            f"- Intake's profile: {sends:.1f} statements sent per OpenCase ({send_us:.0f} us "
            f"of loop per command inside libpq's send, {share(profile, send_us)} of the loop, "
            "far more than writing a few hundred bytes to a socket costs: on a busy two-core "
            "machine the send wakes a PostgreSQL backend, which may take the core at once), "
            f"{decoded:.1f} stored events decoded per command ({decode_us:.0f} us), "
            f"{appending:.0f} us of loop per command in the append itself."
        )
    return lines


WHY = [
    "- **gRPC itself takes most of the budget.** The reference row is an empty OpenCase "
    "handler behind the same server set-up. Its server process already spends the CPU per call "
    "shown above, and the load generator needs a large share of the same two cores. 2,000 "
    "commands/s per process leaves 500 us of one core per command, for everything.",
    "- **One loop carries all four services (embedded).** The four services share one asyncio "
    "loop and one GIL. A command costs protobuf to the pydantic catalog event, its reads, a "
    "durable append through the SQLite writer thread and the answer. Then four subscriptions "
    "(intake's own projections, coordination, planning, audit) write their read models on the "
    "loop's thread. Done so far:",
    "  - A command's reads are one call (`read_for_command`).",
    "  - SQLite reads of a few rows run on the loop, without a hop to a reader thread.",
    "  - Projections take what arrived within a 20 ms linger, across partitions, as one "
    "read-model transaction.",
    "  - The in-process bus hands subscribers the `RecordedEvent` itself, without decoding.",
    "  - A command derives its id once.",
    "- **Still on the loop (embedded).** Read-model SQL, `COMMIT` included. A writer thread "
    "would move it off the loop but not off the GIL, which the event store's writer thread "
    "(it encodes the rows) already competes for.",
    "- **Six processes on two cores (distributed).** Every command costs CPU in intake, in the "
    "three consumers, in PostgreSQL and in Kafka. The machine is fully busy (the CPU split "
    "above). Each libpq send wakes a PostgreSQL backend that may take the core at once (the "
    "profile below). Done so far:",
    "  - Group commit for appends.",
    "  - A command's reads in one round trip.",
    "  - Consumers apply a whole poll in one transaction; the broker holds a fetch up to "
    "20 ms for 64 KiB.",
    "- **Left (distributed).** psycopg's pipeline mode, fewer statements per read-model "
    "transaction, and more partitions and consumer processes where cores allow.",
]


def cpu_ceiling(results: Sequence[RowResult]) -> list[str]:
    """The last reason, with this run's numbers."""
    closed = find(results, "open_case")
    if closed is None or not closed.ok or not closed.cpu.get("intake/main"):
        return []
    main = closed.cpu["intake/main"] / closed.ok
    return [
        "- **Too much CPU per command for one core.** Even with every wait removed, a service "
        f"process is one Python thread: intake's main thread spent {main * 1000:.1f} ms of CPU "
        f"per OpenCase in this run, a ceiling of about {1 / main:,.0f} commands/s per process "
        f"on a core of its own ({1 / main / TARGET:.0%} of the target), and here the two cores "
        "are shared with PostgreSQL, Kafka and the other services. The CPU goes to gRPC's "
        "Python/Cython glue (the reference row's share), building and validating the catalog "
        "event, psycopg's adaptation and libpq's sends, the outbox relay and intake's own "
        f"projections. {TARGET:,.0f}/s per process would need it cut to "
        f"{1e6 / TARGET:.0f} us."
    ]


def profile_section(profile: Profile) -> list[str]:
    own, cumulative = profile_tables(profile)
    row = profile.row
    server = row.spec.server
    return [
        f"#### Profile: {profile.what}",
        "",
        f"OpenCase, {row.spec.concurrency} in flight, cProfile (wall clock) on the event loop's "
        f"thread for {row.seconds:.0f} s: {row.ok:,} commands ({fmt_rate(row.rate)}/s under "
        f"the profiler), {loop_time(profile):.1f} s of that thread's time. The main thread used "
        f"{row.cpu.get(f'{server}/main', 0.0):.1f} of the process's "
        f"{row.cpu.get(server, 0.0):.1f} CPU-seconds; the rest went to threads cProfile does "
        "not see (SQLite writer and readers, gRPC's own). Times are per command. Wall clock: "
        "a function's time includes the thread blocked in it (fsync, a send that wakes "
        "another process) or waiting for a core. A coroutine counts one call per resumption, "
        "and its time excludes the time it spent suspended. `Context.run`'s own time is "
        "mostly gRPC's Cython code, which cProfile cannot see into.",
        "",
        "Top 15 functions by own time:",
        "",
        own,
        "",
        "Top 15 casetrail functions by cumulative time:",
        "",
        cumulative,
    ]


# --- authentication cost (issue 9) --------------------------------------------------------------

AUTH_HEADING = "## gRPC authentication cost (issue 9)"


async def auth_main(quick: bool, write: bool, keep: bool) -> str:
    """OpenCase and GetCaseView against the embedded services, once per token-checking mode."""
    plan = QUICK if quick else FULL
    results, elapsed = await compare_modes(
        "authentication",
        AUTH_MODES,
        lambda work, mode, run_id: switched_run(plan, work, run_id, "--auth-mode", mode),
        keep,
    )
    body = auth_report(plan, quick, results, elapsed)
    if write:
        replace_section(AUTH_HEADING, body)
    return body


# --- one switch of the servers, mode by mode (issues 9 and 11) ----------------------------------

MODE_ROUNDS = 2

RunMode = Callable[[Path, str, str], Awaitable[list[RowResult]]]
"""Runs the rows of one mode: (work directory, mode, run id) -> results."""


async def compare_modes(
    what: str, modes: Sequence[str], run_mode: RunMode, keep: bool
) -> tuple[dict[str, list[RowResult]], float]:
    """Every mode once per round, against an issuer started for the run, in ``MODE_ROUNDS``
    rounds, every other one in reverse order (so that a drifting machine favours none)."""
    run_id = f"{int(time.time())}"
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"casetrail-{what}-bench-"))
    issuer = start_issuer()
    results: dict[str, list[RowResult]] = {mode: [] for mode in modes}
    try:
        for round_number in range(MODE_ROUNDS):
            order = modes if round_number % 2 == 0 else tuple(reversed(modes))
            for mode in order:
                progress(started, f"{what} {mode}, round {round_number + 1}")
                results[mode] += await run_mode(work, mode, f"{run_id}-{round_number}")
        elapsed = time.perf_counter() - started
    finally:
        issuer.stop()
        if keep:
            print(f"logs and data kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return results, elapsed


SWITCHED_SERVER = {
    "embedded": {"open_case": "embedded", "get_case_view": "embedded"},
    "distributed": {"open_case": "intake", "get_case_view": "planning"},
}
"""The process whose CPU each command of the mode rows is charged to."""


async def switched_run(
    plan: Plan, work: Path, run_id: str, switch: str, mode: str, backend: str = "embedded"
) -> list[RowResult]:
    """OpenCase then GetCaseView, closed loop, against the four services started with the
    benchmark-only ``switch`` set to ``mode``; distributed: on a database and a topic of
    their own, dropped afterwards."""
    tag = f"{switch.removeprefix('--')}-{mode.replace('+', '-')}-{backend}-{run_id}"
    if backend == "embedded":
        return await _switched_load(plan, work, tag, backend, [switch, mode], dict(os.environ))
    from casetrail_platform.bus.kafka_settings import KafkaSettings

    bootstrap = KafkaSettings.from_env().bootstrap_servers
    topic = f"casetrail.bench-{tag}"
    base_dsn = os.environ.get("CASETRAIL_PG_DSN", DEFAULT_PG_DSN)
    with fresh_database(base_dsn, "bench_" + tag.replace("-", "_")) as dsn:
        env = {**os.environ, "CASETRAIL_PG_DSN": dsn}
        try:
            return await _switched_load(plan, work, tag, backend, [switch, mode], env, dsn, topic)
        finally:
            await delete_topic(bootstrap, topic)


async def _switched_load(
    plan: Plan,
    work: Path,
    tag: str,
    backend: str,
    switches: Sequence[str],
    env: Mapping[str, str],
    dsn: str = "",
    topic: str = "",
) -> list[RowResult]:
    servers: list[Server] = []
    try:
        await start_services(servers, backend, switches, env, work, tag, topic)
        charged = SWITCHED_SERVER[backend]
        closed = RowSpec(
            f"{backend} {switches[-1]}",
            "open_case",
            "closed",
            plan.warmup,
            plan.seconds,
            plan.concurrency,
            server=charged["open_case"],
        )
        spec = LoadSpec(
            run_id=tag,
            addresses={name: a for s in servers for name, a in s.addresses.items()},
            pids={s.label: s.pid for s in servers},
            rows=[
                closed,
                replace(closed, command="get_case_view", server=charged["get_case_view"]),
            ],
            channels=plan.channels,
            clients=plan.clients,
            cases=plan.cases,
            scratch=str(work),
            settle_limit=plan.settle_limit,
            dsn=dsn,
            tokens=BENCH_TOKENS,
        )
        return await run_load(spec, work)
    finally:
        for server in reversed(servers):
            await server.stop()


def mode_table(
    results: Mapping[str, Sequence[RowResult]],
    modes: Sequence[str],
    base: str,
    setup: str = "",
    lead: Sequence[str] = (),
) -> list[list[str]]:
    """Table rows, per command then mode, compared with mode ``base``: calls/s by round and
    their mean, server CPU µs per call, latencies, failures; of the rows whose setup starts
    with ``setup``. ``lead``: first cells of each."""
    table = []
    for command in ("open_case", "get_case_view"):
        base_rate, base_cpu = _auth_means(
            [r for r in results[base] if r.spec.setup.startswith(setup)], command
        )
        for mode in modes:
            chosen = [r for r in results[mode] if r.spec.setup.startswith(setup)]
            rows = [r for r in chosen if r.spec.command == command]
            rate, cpu = _auth_means(chosen, command)
            table.append(
                [
                    *lead,
                    COMMAND_NAMES[command],
                    mode,
                    " / ".join(fmt_rate(r.rate) for r in rows),
                    fmt_rate(rate),
                    fmt_ratio(rate / base_rate) if base_rate else "-",
                    f"{cpu:.0f}",
                    fmt_ratio(cpu / base_cpu) if base_cpu else "-",
                    " / ".join(ms(r.p50_ms) for r in rows),
                    " / ".join(ms(r.p99_ms) for r in rows),
                    str(sum(sum(r.errors.values()) for r in rows)),
                ]
            )
    return table


def auth_report(
    plan: Plan, quick: bool, results: Mapping[str, Sequence[RowResult]], elapsed: float
) -> str:
    headers = [
        "command",
        "token checks",
        "calls/s by round",
        "calls/s (mean)",
        "vs off",
        "server CPU µs per call (mean)",
        "vs off",
        "p50 ms",
        "p99 ms",
        "failed",
    ]
    table = mode_table(results, AUTH_MODES, "off")
    lines = [
        f"Run: {now_utc()}, {'quick' if quick else 'full'} plan, {elapsed:.0f} s. Command: "
        f"`python -m bench.grpc_bench --auth{' --quick' if quick else ''}`.",
        "",
        *machine_info(grpcio=grpc.__version__, pyjwt=jwt_version()).lines(),
        "",
        "The embedded services (`--serve`, as `services.runner` composes them), one server "
        "process per mode and round, the same load generator as the rows above: closed loop, "
        f"{plan.concurrency} calls in flight on {plan.channels} channels per service, "
        f"{plan.warmup:.0f} s warm-up then {plan.seconds:.0f} s measured; GetCaseView reads "
        f"{plan.cases} cases opened before. Two rounds, the second in reverse order. Every call "
        "carries a bearer token (ES256) from an issuer serving its JWKS on 127.0.0.1.",
        "",
        "- **off**: the caller is read from the token's claims without any check (a switch of "
        "this benchmark only; the product has no such mode).",
        "- **every-call**: signature, issuer, audience, expiry and claims checked on every call "
        "(nothing remembered): what a token seen for the first time costs.",
        "- **product**: as the services run: a verified token is remembered (by its exact text) "
        "until it expires or the issuer's keys change.",
        "",
        markdown_table(headers, table),
        "",
        "Server CPU per call is the server process's CPU time in the window divided by the "
        "calls answered: steadier than calls/s on this shared 2-core machine. The access "
        "policy and access recording (issue 9, items 2-4) add their own costs later.",
    ]
    return "\n".join(lines)


# --- access policy cost (issue 9) ---------------------------------------------------------------

POLICY_HEADING = "## gRPC access policy and access recording cost (issue 9)"
POLICY_MODES = ("off", "on")


POLICY_BACKENDS = ("embedded", "distributed")


async def policy_main(quick: bool, write: bool, keep: bool) -> str:
    """OpenCase and GetCaseView with the access policy off and on, on both backends."""
    plan = QUICK if quick else FULL

    async def run_mode(work: Path, mode: str, run_id: str) -> list[RowResult]:
        results = []
        for backend in POLICY_BACKENDS:
            results += await switched_run(plan, work, run_id, "--policy-mode", mode, backend)
        return results

    load_before = os.getloadavg()
    results, elapsed = await compare_modes("access-policy", POLICY_MODES, run_mode, keep)
    loads = (load_before, os.getloadavg())
    body = policy_report(plan, quick, results, elapsed, loads)
    if write:
        replace_section(POLICY_HEADING, body)
    return body


def policy_report(
    plan: Plan,
    quick: bool,
    results: Mapping[str, Sequence[RowResult]],
    elapsed: float,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    headers = [
        "backend",
        "command",
        "access policy",
        "calls/s by round",
        "calls/s (mean)",
        "vs off",
        "server CPU µs per call (mean)",
        "vs off",
        "p50 ms",
        "p99 ms",
        "failed",
    ]
    table = []
    for backend in POLICY_BACKENDS:
        table += mode_table(results, POLICY_MODES, "off", backend, [backend])
    busy = [r.cores("machine") for rows in results.values() for r in rows]
    lines = [
        f"Run: {now_utc()}, {'quick' if quick else 'full'} plan, {elapsed:.0f} s. Command: "
        f"`python -m bench.grpc_bench --policy{' --quick' if quick else ''}`.",
        "",
        *machine_info(grpcio=grpc.__version__).lines(),
        "",
        f"Load average (1/5/15 min) {_loads(loads[0])} at the start, {_loads(loads[1])} at the "
        f"end; the whole machine was busy {min(busy, default=0):.2f}-{max(busy, default=0):.2f} "
        "cores (of 2) in the measured windows: other engineers' work ran beside it.",
        "",
        "Both backends, one after the other for each mode, two rounds (the second in reverse "
        "order): **embedded**, the four services in one `--serve` process (SQLite, in-process "
        "bus; audit's timeline of every access event runs in that process too); "
        "**distributed**, one process per service on a database and a Kafka topic of their "
        "own (server CPU: intake's process for OpenCase, planning's for GetCaseView). The load "
        f"generator of the rows above: closed loop, {plan.concurrency} calls in flight on "
        f"{plan.channels} channels per service, {plan.warmup:.0f} s warm-up then "
        f"{plan.seconds:.0f} s measured; GetCaseView reads {plan.cases} cases opened before, "
        "as a coordinator (rule agency-coordinator: sensitive fields withheld). Token checks "
        "as the product does them in both modes.",
        "",
        "- **off**: the access policy switched off by this benchmark only (the product has no "
        "such switch): no facts looked up, no decision, nothing withheld, nothing recorded.",
        "- **on**: as the services run: the case's policy facts read, the decision, sensitive "
        "fields withheld, `casetrail.record.accessed` appended durably before the answer.",
        "",
        "Targets (issue 9): OpenCase within 15% of off (commands do not go through the read "
        "policy: any difference is noise and the policy projection's work in the background), "
        "GetCaseView within 25%.",
        "",
        markdown_table(headers, table),
    ]
    return "\n".join(lines)


def _loads(values: Sequence[float]) -> str:
    return " / ".join(f"{value:.1f}" for value in values)


def jwt_version() -> str:
    import jwt

    return str(jwt.__version__)


def _auth_means(rows: Sequence[RowResult], command: str) -> tuple[float, float]:
    """Mean calls/s and mean server CPU µs per call of ``command``'s rows."""
    chosen = [r for r in rows if r.spec.command == command]
    if not chosen:
        return 0.0, 0.0
    rate = sum(r.rate for r in chosen) / len(chosen)
    per_cpu = [r.per_cpu_second(r.spec.server) for r in chosen]
    micros = [1e6 / value for value in per_cpu if value]
    return rate, (sum(micros) / len(micros) if micros else 0.0)


# --- telemetry cost (issue 11) -----------------------------------------------------------------

TELEMETRY_HEADING = "## gRPC telemetry cost (issue 11)"
TELEMETRY_MODES = ("none", "metrics", "metrics+traces")
"""What the servers observe in the telemetry rows: ``none`` serves without the telemetry
interceptor (a switch of this benchmark only); ``metrics`` is the product's default (counters
and latency histograms per call, tracing off); ``metrics+traces`` also traces every call (every
call sampled, spans batched to an exporter that drops them, so no network is measured)."""


def _set_telemetry(mode: str) -> None:
    """(--serve) Install the telemetry of ``mode`` before the services start."""
    if mode == "none":
        from casetrail_platform.grpc_platform import server

        class PassThrough(grpc.aio.ServerInterceptor):  # type: ignore[misc]
            async def intercept_service(self, continuation: Any, details: Any) -> Any:
                return await continuation(details)

        server.TelemetryInterceptor = PassThrough  # type: ignore[attr-defined]
    elif mode == "metrics+traces":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from casetrail_platform.telemetry.tracing import enable_tracing

        class Dropping(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropping()))
        enable_tracing(provider)


async def telemetry_main(quick: bool, write: bool, keep: bool) -> str:
    """OpenCase and GetCaseView against the embedded services, once per telemetry mode."""
    plan = QUICK if quick else FULL
    results, elapsed = await compare_modes(
        "telemetry",
        TELEMETRY_MODES,
        lambda work, mode, run_id: switched_run(plan, work, run_id, "--telemetry-mode", mode),
        keep,
    )
    body = telemetry_report(plan, quick, results, elapsed)
    if write:
        replace_section(TELEMETRY_HEADING, body)
    return body


def telemetry_report(
    plan: Plan, quick: bool, results: Mapping[str, Sequence[RowResult]], elapsed: float
) -> str:
    headers = [
        "command",
        "telemetry",
        "calls/s by round",
        "calls/s (mean)",
        "vs none",
        "server CPU µs per call (mean)",
        "vs none",
        "p50 ms",
        "p99 ms",
        "failed",
    ]
    table = mode_table(results, TELEMETRY_MODES, "none")
    lines = [
        f"Run: {now_utc()}, {'quick' if quick else 'full'} plan, {elapsed:.0f} s. Command: "
        f"`python -m bench.grpc_bench --telemetry{' --quick' if quick else ''}`.",
        "",
        *machine_info(grpcio=grpc.__version__, opentelemetry=otel_version()).lines(),
        "",
        "The embedded services (`--serve`, as `services.runner` composes them), one server "
        "process per mode and round, the load generator of the rows above: closed loop, "
        f"{plan.concurrency} calls in flight on {plan.channels} channels per service, "
        f"{plan.warmup:.0f} s warm-up then {plan.seconds:.0f} s measured; GetCaseView reads "
        f"{plan.cases} cases opened before. Two rounds, the second in reverse order.",
        "",
        "- **none**: no telemetry interceptor (a switch of this benchmark only).",
        "- **metrics**: the product's default: every call counted by method and status and "
        "timed into a histogram; tracing off (no spans, no trace context stored).",
        "- **metrics+traces**: every call also traced (all sampled): a server span per call, "
        "the trace context stored beside each event and sent as `ce_traceparent`, a span per "
        "projected event; spans batched to an exporter that drops them.",
        "",
        markdown_table(headers, table),
        "",
        "Target (issue 11): tracing and metrics cost at most 5% of commands/s. Server CPU per "
        "call is the server process's CPU time in the window divided by the calls answered: "
        "steadier than calls/s on this shared 2-core machine.",
    ]
    return "\n".join(lines)


def otel_version() -> str:
    from importlib.metadata import version

    return version("opentelemetry-sdk")


# --- entry ------------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (under 45 s)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs and data")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument(
        "--profile-run",
        dest="profile_run",
        action="store_true",
        default=None,
        help="profile the servers under OpenCase (the default of a full run)",
    )
    profile.add_argument("--no-profile-run", dest="profile_run", action="store_false")
    parser.add_argument("--load", action="store_true", help="(internal) the load generator")
    parser.add_argument("--serve", action="store_true", help="(internal) run services")
    parser.add_argument(
        "--serve-empty", action="store_true", help="(internal) run the empty OpenCase handler"
    )
    parser.add_argument("--backend", choices=["embedded", "distributed"], default="embedded")
    parser.add_argument("--service", action="append", choices=SERVICES)
    parser.add_argument("--topic", default="casetrail.case-events")
    parser.add_argument("--data-dir")
    parser.add_argument("--profile", help="(internal, --serve) write a cProfile here")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="only the authentication rows: OpenCase and GetCaseView with the token checks "
        "off, on every call, and as the product does them (issue 9)",
    )
    parser.add_argument(
        "--auth-mode", choices=AUTH_MODES, default="product", help="(internal, --serve)"
    )
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="only the telemetry rows: OpenCase and GetCaseView with no telemetry, metrics, "
        "and metrics and traces (issue 11)",
    )
    parser.add_argument(
        "--telemetry-mode",
        choices=TELEMETRY_MODES,
        default="metrics",
        help="(internal, --serve)",
    )
    parser.add_argument(
        "--policy",
        action="store_true",
        help="only the access-policy rows: OpenCase and GetCaseView with the access policy and "
        "access recording off and on (issue 9)",
    )
    parser.add_argument(
        "--policy-mode", choices=POLICY_MODES, default="on", help="(internal, --serve)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    if options.load:
        logging.basicConfig(level=logging.WARNING, format="loadgen: %(message)s")
        load_entry()
        return
    if options.serve:
        serve_entry(options)
        return
    if options.auth:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        print(asyncio.run(auth_main(options.quick, not options.no_write, options.keep)))
        return
    if options.telemetry:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        print(asyncio.run(telemetry_main(options.quick, not options.no_write, options.keep)))
        return
    if options.policy:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        print(asyncio.run(policy_main(options.quick, not options.no_write, options.keep)))
        return
    if options.serve_empty:
        serve_empty_entry()
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(asyncio.run(run(options.quick, not options.no_write, options.profile_run, options.keep)))


if __name__ == "__main__":
    main()
