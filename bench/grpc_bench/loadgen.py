"""The load generator (``--load``, a process of its own): closed and open loops, the measurement
window, and the orchestrator's side that starts it and reads its results back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import grpc
import psycopg

from bench.common import percentile
from bench.grpc_bench.commands import NEEDS_CASES, Commands
from bench.grpc_bench.cpu import CpuProbe, cpu_of
from bench.grpc_bench.plan import REPO, LoadSpec, RowSpec
from bench.grpc_bench.results import RowResult

log = logging.getLogger("bench.grpc")


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
        before = cpu_of(pids)
        await asyncio.sleep(0.5)
        if cpu_of(pids) - before < idle * 0.5:
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
