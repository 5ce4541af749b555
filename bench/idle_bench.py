"""Idle cost of the distributed backend: CPU each service process uses with nothing to do, by
how long the broker holds a consumer's fetch (``CASETRAIL_KAFKA_FETCH_MAX_WAIT_MS``).

    python -m bench.idle_bench [--waits 20,200] [--seconds 20] [--rounds 2] [--no-write]

For each wait, the four services start as ``python -m bench.grpc_bench --serve`` starts them
(one process each, a database and a topic of the run's own, the run's token issuer), settle
for 10 s, then nothing calls them for ``--seconds`` while their CPU is read from ``/proc``.
Rounds alternate the order of the waits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from bench.common import machine_info, markdown_table, median, now_utc, replace_section
from bench.grpc_bench.cpu import process_cpu
from bench.grpc_bench.plan import SERVICES
from bench.grpc_bench.servers import Server, start_issuer, start_services
from bench.grpc_bench.storage import delete_topic, fresh_database
from casetrail_platform.bus.kafka_settings import FETCH_MAX_WAIT_VARIABLE, KafkaSettings
from infra.servers import KAFKA_BOOTSTRAP, PG_DSN, server_setting, servers_environment

HEADING = "## Idle cost of the distributed backend"
SETTLE_SECONDS = 10.0


async def idle_cpu(wait_ms: int, seconds: float, dsn: str, work: Path) -> dict[str, float]:
    """Milliseconds of CPU per second each service process used while idle."""
    tag = f"w{wait_ms}-{uuid.uuid4().hex[:6]}"
    topic = f"casetrail.bench-idle-{tag}"
    environment = servers_environment(KAFKA_BOOTSTRAP)
    env = {**environment, PG_DSN: dsn, FETCH_MAX_WAIT_VARIABLE: str(wait_ms)}
    servers: list[Server] = []
    try:
        await start_services(servers, "distributed", [], env, work, tag, topic)
        await asyncio.sleep(SETTLE_SECONDS)
        before = {s.label: process_cpu(s.pid) or 0.0 for s in servers}
        started = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - started
        return {
            s.label: ((process_cpu(s.pid) or 0.0) - before[s.label]) / elapsed * 1000
            for s in servers
        }
    finally:
        for server in servers:
            await server.stop()
        await delete_topic(KafkaSettings.from_env(environment).bootstrap_servers, topic)


async def run(waits: Sequence[int], seconds: float, rounds: int, base_dsn: str) -> str:
    begun = time.perf_counter()
    load_before = os.getloadavg()[0]
    issuer = start_issuer()
    results: dict[int, list[dict[str, float]]] = {wait: [] for wait in waits}
    try:
        with tempfile.TemporaryDirectory(prefix="casetrail-idle-") as scratch:
            for number in range(rounds):
                order = waits if number % 2 == 0 else list(reversed(waits))
                for wait in order:
                    name = f"casetrail_idle_{uuid.uuid4().hex[:8]}"
                    with fresh_database(base_dsn, name) as dsn:
                        work = Path(tempfile.mkdtemp(dir=scratch))
                        results[wait].append(await idle_cpu(wait, seconds, dsn, work))
    finally:
        issuer.stop()
    rows = []
    for wait in waits:
        per_service = {name: median([r[name] for r in results[wait]]) for name in SERVICES}
        rows.append(
            [f"{wait} ms"]
            + [f"{per_service[name]:.0f}" for name in SERVICES]
            + [f"{sum(per_service.values()):.0f}"]
        )
    info = machine_info()
    text = "\n".join(
        [
            f"Run {now_utc()}, {rounds} rounds, {seconds:g} s idle each after {SETTLE_SECONDS:g} s"
            f" to settle, in {time.perf_counter() - begun:.0f} s: `python -m bench.idle_bench`;"
            f" load average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at"
            " the end.",
            "",
            "\n".join(f"- {line}" for line in info.lines()),
            "",
            "CPU of each service process (all threads, `/proc`), milliseconds per second, median"
            " of the rounds; nothing calls the services. Each process runs 2-3 consumer groups"
            " (chart `topology.yaml`), each asking the broker again whenever a fetch comes back"
            " empty after the wait.",
            "",
            markdown_table(["fetch max wait", *SERVICES, "all four"], rows),
        ]
    )
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_bench", description=__doc__)
    parser.add_argument("--waits", default="20,200")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args(argv)
    waits = [int(wait) for wait in options.waits.split(",")]
    dsn = server_setting(PG_DSN)
    text = asyncio.run(run(waits, options.seconds, options.rounds, dsn))
    if not options.no_write:
        replace_section(HEADING, text)
    print(text)


if __name__ == "__main__":
    main()
