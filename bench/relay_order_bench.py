"""Relay throughput before and after the per-partition lanes of issue 13, side by side.

``python -m bench.relay_order_bench [--before REV] [--rounds N] [--no-write]`` against the broker
of ``make kafka-start`` (``CASETRAIL_KAFKA_BOOTSTRAP``). It runs ``bench.kafka_bench``'s relay
benchmark (the outbox relay against a plain ``AIOKafkaProducer`` given the same pre-encoded
records, rounds rotating which goes first) once with the current ``KafkaEventPublisher`` and
once with the one of git revision ``--before`` (default: the parent of the commit that added
the lanes), alternating, in one process. Target: relay / plain >= 0.8 after. It writes the
section "## Relay order (issue 13)" of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import bench.kafka_bench as kafka_bench
from bench.common import (
    fmt_rate,
    fmt_ratio,
    machine_info,
    markdown_table,
    median,
    now_utc,
    replace_section,
)
from casetrail_platform.bus.kafka import KafkaEventPublisher
from casetrail_platform.bus.kafka_settings import KafkaSettings
from infra.servers import KAFKA_BOOTSTRAP, servers_environment
from services.runner import tune_gc

HEADING = "## Relay order (issue 13)"
DEFAULT_BEFORE = "8b980e7~1"
"""The commit before "Kafka publisher: one lane per partition" landed."""


def publisher_at(revision: str) -> ModuleType:
    """``casetrail_platform/bus/kafka.py`` as it was at ``revision``, loaded beside the current
    one."""
    source = subprocess.run(
        ["git", "show", f"{revision}:casetrail_platform/bus/kafka.py"],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    directory = Path(tempfile.mkdtemp(prefix="casetrail-relay-before-"))
    path = directory / "kafka_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("casetrail_platform.bus.kafka_before", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def run(before: str, rounds: int, write: bool) -> str:
    kafka = replace(
        KafkaSettings.from_env(servers_environment(KAFKA_BOOTSTRAP)), client_id="casetrail-bench"
    )
    plan = replace(kafka_bench.FULL, relay_rounds=3)
    old = publisher_at(before).KafkaEventPublisher
    new = KafkaEventPublisher
    # bench_relay builds its publisher from the module's global of that name.
    publisher_in_use = vars(kafka_bench)
    results: dict[str, list[Any]] = {"before": [], "after": []}
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    for round_number in range(rounds):
        order = ("after", "before") if round_number % 2 == 0 else ("before", "after")
        for label in order:
            publisher_in_use["KafkaEventPublisher"] = old if label == "before" else new
            with tempfile.TemporaryDirectory(prefix="casetrail-relay-order-") as directory:
                result = await kafka_bench.bench_relay(plan, kafka, Path(directory))
            results[label].append(result)
            print(f"  {label}: relay/plain {fmt_ratio(result.ratio)}", flush=True)
    publisher_in_use["KafkaEventPublisher"] = new
    elapsed = time.perf_counter() - started
    body = report(before, plan.relay_events, results, elapsed, (load_before, os.getloadavg()[0]))
    if write:
        replace_section(HEADING, body)
    return body


def report(
    before: str,
    events: int,
    results: dict[str, list[Any]],
    elapsed: float,
    load: tuple[float, float],
) -> str:
    machine = machine_info()
    rows = []
    for label in ("before", "after"):
        relay = [rate for result in results[label] for rate in result.relay]
        plain = [rate for result in results[label] for rate in result.plain]
        relay_cpu = [us for result in results[label] for us in result.relay_cpu_us]
        plain_cpu = [us for result in results[label] for us in result.plain_cpu_us]
        ratios = [fmt_ratio(result.ratio) for result in results[label]]
        rows.append(
            [
                label,
                fmt_rate(median(relay)),
                fmt_rate(median(plain)),
                fmt_ratio(median(relay) / median(plain)),
                ", ".join(ratios),
                f"{median(relay_cpu):.0f} / {median(plain_cpu):.0f}",
            ]
        )
    after_ratio = median([rate for r in results["after"] for rate in r.relay]) / median(
        [rate for r in results["after"] for rate in r.plain]
    )
    verdict = "meets it" if after_ratio >= 0.8 else "misses it"
    return "\n".join(
        [
            f"Run: {now_utc()}, `python -m bench.relay_order_bench` ({elapsed:.0f} s); before ="
            f" `{before}` (the publisher before the per-partition lanes), after = this tree.",
            "",
            f"- CPUs (usable): {machine.cpus} x {machine.cpu_model}",
            f"- RAM: {machine.ram_gib:.1f} GiB; OS: {machine.system}; Python: {machine.python}",
            "- Kafka: single KRaft node, same machine",
            f"- Load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f} (the machine"
            " is shared with other work: absolute rates are context, the ratios are what count)",
            "",
            f"{events:,} catalog events per relay round, `bench.kafka_bench`'s relay benchmark"
            " (3 rounds rotating relay, plain producer and plain producer with aiokafka's default"
            " batches), run with each publisher in turn, alternating which goes first.",
            "",
            markdown_table(
                [
                    "publisher",
                    "relay events/s (median)",
                    "plain events/s (median)",
                    "relay / plain",
                    "ratio per run",
                    "CPU us/event relay / plain",
                ],
                rows,
            ),
            "",
            f"**Ratio relay / plain after: {fmt_ratio(after_ratio)}** (target >= 0.8: {verdict})."
            " The lanes add no work per record: a partition's next batch is handed to the"
            " producer when the one before is acknowledged, which aiokafka's sender, sending one"
            " batch per partition at a time, would wait for anyway.",
        ]
    )


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_order_bench", description=__doc__)
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each publisher")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    tune_gc()
    print(asyncio.run(run(options.before, options.rounds, not options.no_write)))


if __name__ == "__main__":
    main()
