"""Replicas of intake behind one address (issue 11): RegisterClient commands per second with 1,
2 and 3 intake processes on the distributed backend, and the CPU each process spends per command.

``python -m bench.replicas_bench [--seconds S] [--no-write]`` writes the section "## Intake
replicas (issue 11)" of ``bench/RESULTS.md``. Needs the servers of ``make servers-start``.

Every round starts N intake processes on one fresh database and topic, all bound to the same
port (gRPC servers set SO_REUSEPORT, so the kernel spreads new connections over them, as a
Kubernetes Service spreads them over pods). The load generator (this process) opens 12
channels, one TCP connection each, and keeps 48 RegisterClient calls in flight (closed loop):
every registration is a new person, so each one takes the advisory locks of its match keys,
catches the client directory up, searches it and appends. CPU time is read from ``/proc`` for
each intake process, PostgreSQL, Kafka, this process and the machine. On two cores the
replicas compete with each other, the database and the load generator: the point is the CPU
per command of each process and that the total stays flat, not more commands per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.common import machine_info, now_utc, replace_section
from bench.grpc_bench.cpu import kafka_pids, machine_busy, postgres_pids, process_cpu
from bench.grpc_bench.plan import REPO
from bench.grpc_bench.servers import BENCH_TOKENS, start_issuer
from bench.grpc_bench.storage import delete_topic, fresh_database
from bench.grpc_bench.switches import verifier
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from infra.servers import KAFKA_BOOTSTRAP, PG_DSN, server_setting, servers_environment

PORT = 7450
"""The one address every intake replica binds (from this benchmark's own range)."""
CHANNELS = 12
IN_FLIGHT = 48
HEADING = "## Intake replicas (issue 11)"


async def serve_intake(topic: str, data_dir: Path) -> None:
    """(internal) One intake replica on ``PORT``, until SIGTERM."""
    import signal

    from casetrail_platform.bus.kafka_settings import KafkaSettings
    from casetrail_platform.bus.topics import TopicSettings, ensure_topics
    from casetrail_platform.infrastructure import Infrastructure
    from services.runner import start_services, stop_services

    kafka = KafkaSettings.from_env(servers_environment(KAFKA_BOOTSTRAP))
    await ensure_topics(kafka, TopicSettings(case_events_topic=topic))
    dsn = server_setting(PG_DSN)
    infra = Infrastructure.distributed(data_dir, dsn, kafka, topic=topic, verifier=verifier())
    running = await start_services(infra, ["intake"], "127.0.0.1", {"intake": PORT})
    print("SERVING", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await stop_services(running)


async def start_replica(
    topic: str, data_dir: Path, env: dict[str, str]
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.replicas_bench", "--serve", topic, str(data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=REPO,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(180):
        while (line := await process.stdout.readline()) != b"SERVING\n":
            if not line:
                raise RuntimeError("an intake replica did not start")
    return process


def registration(run: str, number: int) -> intake_pb2.RegisterClientRequest:
    from casetrail.common.v1 import common_pb2

    return intake_pb2.RegisterClientRequest(
        context=common_pb2.CommandContext(idempotency_key=f"{run}-{number}"),
        name=intake_pb2.PersonName(given_names="Ada", family_name=f"Bench-{run}-{number}"),
        date_of_birth="1950-03-14",
        identifiers=[intake_pb2.PersonalIdentifier(scheme="national_id", value=f"{run}{number}")],
    )


async def load(seconds: float, run: str) -> tuple[int, int, list[float]]:
    """(answered OK, refused or failed, latencies in s) over ``seconds`` of closed loop."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{PORT}", options=options) for _ in range(CHANNELS)
    ]
    stubs = [intake_pb2_grpc.IntakeServiceStub(channel) for channel in channels]
    metadata = (("authorization", f"Bearer {BENCH_TOKENS['rcp-bench']}"),)
    counter = iter(range(10**9))
    ok = failed = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        nonlocal ok, failed
        stub = stubs[index % CHANNELS]
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await stub.RegisterClient(registration(run, next(counter)), metadata=metadata)
            except grpc.aio.AioRpcError:
                failed += 1
                continue
            ok += 1
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller(index) for index in range(IN_FLIGHT)))
    for channel in channels:
        await channel.close()
    return ok, failed, latencies


def cpu(pids: list[int]) -> float:
    return sum(seconds for pid in pids if (seconds := process_cpu(pid)) is not None)


@dataclass(frozen=True)
class Row:
    replicas: int
    ok: int
    failed: int
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_command: list[float]
    """Each intake process's CPU per command answered (by all of them)."""
    postgres_ms: float
    kafka_ms: float
    loadgen_ms: float
    machine_cores: float


async def one_round(replicas: int, seconds: float, base_dsn: str, work: Path) -> Row:
    run = uuid.uuid4().hex[:8]
    topic = f"casetrail.bench-replicas-{run}"
    with fresh_database(base_dsn, f"casetrail_bench_replicas_{run}") as dsn:
        env = servers_environment(KAFKA_BOOTSTRAP) | {PG_DSN: dsn, "CASETRAIL_LOG_LEVEL": "WARNING"}
        processes = []
        try:
            for _ in range(replicas):
                processes.append(await start_replica(topic, work / run, env))
            await load(3.0, f"{run}w")  # warm-up: connections, keys, caches
            pids = [int(p.pid) for p in processes]
            before = [cpu([pid]) for pid in pids]
            database, broker, mine, machine = (
                cpu(postgres_pids()),
                cpu(kafka_pids()),
                cpu([os.getpid()]),
                machine_busy(),
            )
            ok, failed, latencies = await load(seconds, run)
            spent = [cpu([pid]) - start for pid, start in zip(pids, before, strict=True)]
            commands = max(ok, 1)
            row = Row(
                replicas=replicas,
                ok=ok,
                failed=failed,
                per_second=ok / seconds,
                p50_ms=1000 * statistics.median(latencies) if latencies else 0.0,
                p99_ms=(
                    1000 * statistics.quantiles(latencies, n=100)[98]
                    if len(latencies) > 100
                    else 0.0
                ),
                cpu_ms_per_command=[1000 * s / commands for s in spent],
                postgres_ms=1000 * (cpu(postgres_pids()) - database) / commands,
                kafka_ms=1000 * (cpu(kafka_pids()) - broker) / commands,
                loadgen_ms=1000 * (cpu([os.getpid()]) - mine) / commands,
                machine_cores=(machine_busy() - machine) / seconds,
            )
        finally:
            for process in processes:
                if process.returncode is None:
                    process.terminate()
            for process in processes:
                await process.wait()
        await delete_topic(server_setting(KAFKA_BOOTSTRAP), topic)
    return row


def table(rows: list[Row]) -> str:
    lines = [
        "| intake processes | commands/s | vs 1 | p50 ms | p99 ms"
        " | intake CPU ms/command, each process | intake CPU ms/command, all"
        " | load generator ms/command | machine busy (cores) | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    first = rows[0].per_second
    for row in rows:
        each = " / ".join(f"{value:.2f}" for value in row.cpu_ms_per_command)
        lines.append(
            f"| {row.replicas} | {row.per_second:.0f} | {row.per_second / first:.2f}x"
            f" | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {each}"
            f" | {sum(row.cpu_ms_per_command):.2f} | {row.loadgen_ms:.2f}"
            f" | {row.machine_cores:.2f} | {row.failed} |"
        )
    return "\n".join(lines)


async def main(seconds: float, write: bool) -> None:
    issuer = start_issuer()
    base_dsn = server_setting(PG_DSN)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"casetrail-replicas-{uuid.uuid4().hex[:8]}"
    rows = []
    try:
        for replicas in (1, 2, 3):
            rows.append(await one_round(replicas, seconds, base_dsn, work))
            print(table(rows), flush=True)
    finally:
        issuer.stop()
    load_average = os.getloadavg()
    body = "\n".join(
        [
            f"Run: {now_utc()}, `python -m bench.replicas_bench --seconds {seconds:g}`.",
            "",
            *(f"- {line}" for line in machine_info().lines()),
            f"- Load average at the end (other work on the machine): {load_average[0]:.1f}",
            "",
            f"RegisterClient, closed loop, {IN_FLIGHT} calls in flight over {CHANNELS} channels"
            f" to one address (127.0.0.1:{PORT}, SO_REUSEPORT), {seconds:g} s per row after a"
            " 3 s warm-up;"
            " a fresh database and topic per row. Every registration takes the advisory locks of"
            " its match keys (casetrail_platform/locking/), so this is the replicated duplicate"
            " check's cost.",
            "",
            table(rows),
            "",
            "Reading it: on two cores shared with the other work of the machine (the load"
            " average above; machine busy counts all of it, as PostgreSQL and Kafka are shared"
            " with other users and are not shown), more replicas cannot add commands per second."
            " What the rows show is the CPU each intake process spends per command, and the sum"
            " over the processes: each replica does its share, plus a little of its own (its bus"
            " consumers, its lease polls). A registration's latency is mostly waiting: its"
            " section under the key locks makes several round trips to PostgreSQL, some of them"
            " over the process's one read-model connection, so under this load one process"
            " answers few registrations per second whatever its CPU.",
        ]
    )
    if write:
        replace_section(HEADING, body)
    print(body)


def entry() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("TOPIC", "DATA_DIR"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        asyncio.run(serve_intake(options.serve[0], Path(options.serve[1])))
        return
    asyncio.run(main(options.seconds, not options.no_write))


if __name__ == "__main__":
    entry()
