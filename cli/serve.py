"""`casetrail serve`: services.runner, plus the choice of case-event topic.

Without --topic this is exactly ``python -m services.runner``. The runner has no topic option
yet, so with --topic the services are started here, with the runner's own start/stop functions.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path


def run(options: argparse.Namespace) -> int:
    from services import runner

    if options.topic is None:
        runner.main(_runner_argv(options))
        return 0
    logging.basicConfig(
        level=os.environ.get("CASETRAIL_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    data_dir = Path(options.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve_on_topic(options, data_dir))
    return 0


def _runner_argv(options: argparse.Namespace) -> list[str]:
    argv = ["--backend", options.backend, "--data-dir", options.data_dir, "--host", options.host]
    for name in options.service or []:
        argv += ["--service", name]
    if options.any_port:
        argv.append("--any-port")
    return argv


async def _serve_on_topic(options: argparse.Namespace, data_dir: Path) -> None:
    from events.bus.kafka_settings import KafkaSettings
    from events.bus.topics import TopicSettings, ensure_topics
    from events.hosting import Infrastructure
    from services.runner import (
        DEFAULT_PG_DSN,
        DEFAULT_PORTS,
        SERVICES,
        start_services,
        stop_services,
    )

    if options.backend != "distributed":
        raise SystemExit("--topic needs --backend distributed (the embedded bus has no topics)")
    names = options.service or list(SERVICES)
    ports = {name: (0 if options.any_port else DEFAULT_PORTS[name]) for name in SERVICES}
    kafka = KafkaSettings.from_env()
    await ensure_topics(kafka, TopicSettings(case_events_topic=options.topic))
    dsn = os.environ.get("CASETRAIL_PG_DSN", DEFAULT_PG_DSN)
    infra = Infrastructure.distributed(data_dir, dsn, kafka, topic=options.topic)
    running = await start_services(infra, names, options.host, ports)
    # The same lines as the runner's, so whoever reads one reads the other.
    print(f"casetrail (distributed) is serving; data in {data_dir}", flush=True)
    for service in running:
        print(f"  {service.name:<13} {options.host}:{service.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    print("stopping...", flush=True)
    await stop_services(running)
