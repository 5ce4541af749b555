"""Start casetrail services.

Embedded default (``make run``): all four services in this process, SQLite files under the data
directory and the in-process bus between them. Distributed (``make run-distributed``): one
service per process on PostgreSQL and Kafka, settings from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from events.bus.kafka_settings import KafkaSettings
from events.bus.names import DEFAULT_CASE_EVENTS_TOPIC
from events.bus.topics import TopicSettings, ensure_topics
from events.hosting import Infrastructure, RunningService

SERVICES = ("intake", "coordination", "planning", "audit")
# Below Linux's ephemeral range (32768-60999), so outgoing connections never hold them.
DEFAULT_PORTS = {"intake": 7301, "coordination": 7302, "planning": 7303, "audit": 7304}
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:15432/casetrail"


async def start_services(
    infra: Infrastructure, names: Sequence[str], host: str, ports: dict[str, int]
) -> list[RunningService]:
    running: list[RunningService] = []
    try:
        for name in names:
            bootstrap = importlib.import_module(f"services.{name}.bootstrap")
            running.append(await bootstrap.start(infra, f"{host}:{ports[name]}"))
    except BaseException:
        await stop_services(running)
        raise
    return running


async def stop_services(running: Sequence[RunningService]) -> None:
    for service in reversed(running):
        await service.stop()


def addresses_file(data_dir: Path) -> Path:
    return data_dir / "addresses.json"


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    logging.basicConfig(
        level=os.environ.get("CASETRAIL_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    data_dir = Path(options.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(options, data_dir))


async def serve(options: argparse.Namespace, data_dir: Path) -> None:
    names = options.service or list(SERVICES)
    ports = {name: (0 if options.any_port else DEFAULT_PORTS[name]) for name in SERVICES}
    if options.backend == "distributed":
        kafka = KafkaSettings.from_env()
        await ensure_topics(kafka, TopicSettings(case_events_topic=options.topic))
        infra = Infrastructure.distributed(
            data_dir, os.environ.get("CASETRAIL_PG_DSN", DEFAULT_PG_DSN), kafka, options.topic
        )
    elif options.topic != DEFAULT_CASE_EVENTS_TOPIC:
        raise SystemExit("--topic needs --backend distributed (the embedded bus has no topics)")
    else:
        infra = Infrastructure.embedded(data_dir)
    running = await start_services(infra, names, options.host, ports)
    tune_gc()
    addresses = {service.name: f"{options.host}:{service.port}" for service in running}
    if options.backend == "embedded":
        await asyncio.to_thread(
            addresses_file(data_dir).write_text, json.dumps(addresses, indent=2) + "\n"
        )
    print(f"casetrail ({options.backend}) is serving; data in {data_dir}", flush=True)
    for name, address in addresses.items():
        print(f"  {name:<13} {address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    print("stopping...", flush=True)
    await stop_services(running)


def tune_gc() -> None:
    """Garbage-collector settings for a serving process, once start-up is done."""
    # Long-lived objects made at start-up need no more scans, and event-heavy work allocates
    # many short-lived objects: fewer young-generation collections (bench/RESULTS.md).
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="casetrail serve", description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("CASETRAIL_DATA_DIR", "var/data"))
    parser.add_argument("--backend", choices=["embedded", "distributed"], default="embedded")
    parser.add_argument("--service", action="append", choices=SERVICES, help="repeatable")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--any-port", action="store_true", help="let the OS pick free ports")
    parser.add_argument(
        "--topic",
        default=os.environ.get("CASETRAIL_CASE_EVENTS_TOPIC", DEFAULT_CASE_EVENTS_TOPIC),
        help="the case-event topic (distributed backend)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
