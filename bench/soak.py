"""Soak run (issue 8): minutes of mixed command load while every server and service process is
restarted in turn, then the exact reconciliation of the fault suite.

``python -m bench.soak [--minutes 5] [--every 30] [--no-write]`` needs the PostgreSQL server and
the Kafka broker of ``make servers-start`` (``CASETRAIL_PG_DSN``, ``CASETRAIL_KAFKA_BOOTSTRAP``,
and their ``infra/`` scripts, which it uses to restart them). Not run in CI. It writes the
section "## Soak: faults under load (issue 8)" of ``bench/RESULTS.md``.

The four services run as separate processes (``tests/support/distributed.py``) on a fresh database
and topic; four clients send RegisterClient, LogContact and MakeReferral commands, retrying
UNAVAILABLE with the same idempotency key (``tests/support/load.py``). Every ``--every`` seconds
the next fault of the cycle happens: PostgreSQL restarted (stopped, kept down 3 s, started),
the Kafka broker restarted, then each service process killed with SIGKILL and started again.

Recovery after a fault is measured from the moment the server or process is back (PostgreSQL:
the first moment a new connection succeeds, polled every 50 ms; Kafka and processes: their
start returned) to the first command acknowledged afterwards by each service that stores
events (intake, planning, coordination); the slowest of them is reported. Target (issue 8):
within 5 s of PostgreSQL accepting connections, no casetrail process restarted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.common import machine_info, markdown_table, now_utc, replace_section
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.identity.development import DevelopmentIssuer
from cli.rpc import minted_by
from infra.servers import KAFKA_BOOTSTRAP, PG_DSN, run_script, server_setting
from tests.support.distributed import ServiceProcesses, service_processes
from tests.support.load import Load, Reconciliation, reconcile

HEADING = "## Soak: faults under load (issue 8)"
PG_TARGET = 5.0
WRITERS = ("intake", "planning", "coordination")
CASES = 12
PG_DOWN = 3.0


@dataclass(frozen=True)
class Fault:
    kind: str
    started: float
    back: float
    """When the server or process was back (``time.monotonic()``)."""
    recovery: dict[str, float | None]
    """Per writing service: seconds from ``back`` to its first acknowledged command."""

    @property
    def slowest(self) -> float | None:
        values = list(self.recovery.values())
        return None if None in values else max(v for v in values if v is not None)


async def restart_postgres() -> float:
    await run_script("postgres", "stop.sh")
    await asyncio.sleep(PG_DOWN)
    starting = asyncio.create_task(run_script("postgres", "start.sh"))
    back = await _first_connection(server_setting(PG_DSN))
    await starting
    return back


async def _first_connection(dsn: str) -> float:
    while True:
        try:
            connection = await psycopg.AsyncConnection.connect(dsn, connect_timeout=1)
        except psycopg.OperationalError:
            await asyncio.sleep(0.05)
            continue
        await connection.close()
        return time.monotonic()


async def restart_kafka() -> float:
    await run_script("kafka", "stop.sh")
    await asyncio.sleep(1.0)
    await run_script("kafka", "start.sh")
    return time.monotonic()


def kill(processes: ServiceProcesses, service: str) -> Callable[[], Awaitable[float]]:
    async def kill_and_start() -> float:
        await processes.kill(service)
        await asyncio.sleep(0.5)
        await processes.start((service,))
        return time.monotonic()

    return kill_and_start


async def recovery_of(load: Load, back: float, patience: float) -> dict[str, float | None]:
    """Per writing service, seconds from ``back`` to its first acknowledgement (waits up to
    ``patience`` for them)."""
    deadline = time.monotonic() + patience
    while True:
        found = {
            service: min((a.at - back for a in load.acks if a.service == service and a.at >= back),
                         default=None)
            for service in WRITERS
        }  # fmt: skip
        if None not in found.values() or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


SoakResult = tuple[list[Fault], Load, Reconciliation, float]
"""The faults, the load, the final reconciliation, the seconds of load."""


async def soak(minutes: float, every: float, work: Path) -> SoakResult:
    # The product's development issuer (its key under ``work``), on a free port of 127.0.0.1:
    # the service processes trust it through CASETRAIL_OIDC_ISSUER, as they would any issuer.
    issuer = DevelopmentIssuer(work / "issuer", port=0)
    try:
        return await _soak(minutes, every, work, issuer)
    finally:
        issuer.stop()


async def _soak(minutes: float, every: float, work: Path, issuer: DevelopmentIssuer) -> SoakResult:
    trusted = {
        "CASETRAIL_OIDC_ISSUER": issuer.url,
        "CASETRAIL_OIDC_AUDIENCE": issuer.signer.audience,
    }
    async with service_processes(work, trusted) as processes:
        load = Load(processes, uuid.uuid4().hex[:8], minted_by(issuer.signer))
        try:
            await load.prepare(CASES)
            cycle: list[tuple[str, Callable[[], Awaitable[float]]]] = [
                ("PostgreSQL restart", restart_postgres),
                ("Kafka restart", restart_kafka),
                *((f"kill -9 {name}", kill(processes, name)) for name in processes.addresses),
            ]
            stop = asyncio.Event()
            clients = asyncio.create_task(load.run(stop))
            faults: list[Fault] = []
            began = time.monotonic()
            end = began + minutes * 60
            number = 0
            try:
                while time.monotonic() + every < end:
                    await asyncio.sleep(every)
                    kind, fault = cycle[number % len(cycle)]
                    number += 1
                    started = time.monotonic()
                    print(f"{started - began:6.1f}s {kind}", flush=True)
                    back = await fault()
                    recovery = await recovery_of(load, back, patience=every)
                    faults.append(Fault(kind, started, back, recovery))
                    print(f"        back; first commands after {recovery}", flush=True)
                await asyncio.sleep(max(0.0, end - time.monotonic()))
            finally:
                stop.set()
                await clients
            elapsed = time.monotonic() - began
            kafka = KafkaSettings(
                bootstrap_servers=server_setting(KAFKA_BOOTSTRAP), request_timeout_ms=10_000
            )
            result = await reconcile(load, kafka, patience=180.0)
            return faults, load, result, elapsed
        finally:
            await load.close()


def report(
    faults: Sequence[Fault], load: Load, result: Reconciliation, elapsed: float, every: float
) -> str:
    info = machine_info()
    by_kind = Counter(ack.kind for ack in load.acks)
    pg = [f.slowest for f in faults if f.kind.startswith("PostgreSQL")]
    pg_known = [v for v in pg if v is not None]
    lines = [
        f"Run: {now_utc()}, {elapsed / 60:.1f} min of load, a fault every {every:.0f} s."
        " Command: `python -m bench.soak`.",
        "",
        "Machine:",
        *(f"- {line}" for line in info.lines()),
        f"- Load average (1 min) at end: {os.getloadavg()[0]:.1f}",
        "",
        "Setup: the four services as separate processes on PostgreSQL 15 and Kafka 4"
        f" (`make servers-start`); {CASES} cases opened first; 4 clients send RegisterClient,"
        " LogContact and MakeReferral in turn, retrying UNAVAILABLE / DEADLINE_EXCEEDED with"
        f" the same idempotency key. PostgreSQL is kept down {PG_DOWN:.0f} s per restart.",
        "",
        "Commands acknowledged: "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(by_kind.items()))
        + f"; {len(load.acks)} in all ({len(load.acks) / elapsed:.1f}/s over the run).",
        "",
        "Answers retried, by status (a command can be retried many times): "
        + (", ".join(f"{k} {v}" for k, v in sorted(load.retried.items())) or "none")
        + ". Answers refused (never retried; UNKNOWN would be here): "
        + (", ".join(f"{k} {v}" for k, v in sorted(load.refused.items())) or "none")
        + ".",
        "",
        "Recovery: seconds from the server or process being back to the first acknowledged"
        " command of each service that stores events (the slowest of intake, planning,"
        " coordination).",
        "",
        markdown_table(
            ["#", "fault", "intake s", "planning s", "coordination s", "slowest s"],
            [
                [
                    str(n + 1),
                    f.kind,
                    *(_secs(f.recovery[s]) for s in WRITERS),
                    _secs(f.slowest),
                ]
                for n, f in enumerate(faults)
            ],
        ),
        "",
        f"PostgreSQL restarts: {len(pg)}; commands succeeded again within"
        f" {_secs(max(pg_known) if pg_known else None)} s of the database accepting"
        f" connections (target {PG_TARGET:.0f} s: "
        + ("met" if pg_known and len(pg_known) == len(pg) and max(pg_known) <= PG_TARGET
           else "NOT met")
        + "), no casetrail process restarted for them.",
        "",
        f"Final reconciliation: {result.summary()}.",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between faults")
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="casetrail-soak-") as work:
        faults, load, result, elapsed = asyncio.run(
            soak(options.minutes, options.every, Path(work))
        )
    text = report(faults, load, result, elapsed, options.every)
    print(text)
    if not options.no_write:
        replace_section(HEADING, text)
    if result.problems or load.refused:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
