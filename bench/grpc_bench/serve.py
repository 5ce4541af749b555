"""``--serve``: the four services in this process as ``services.runner`` starts them, with the
benchmark's switches, optionally profiling the event loop's thread on signal."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import signal
from pathlib import Path

from bench.grpc_bench.plan import SERVICES
from bench.grpc_bench.switches import set_telemetry, switch_policy_off, verifier
from infra.servers import KAFKA_BOOTSTRAP, PG_DSN, server_setting, servers_environment


def serve_entry(options: argparse.Namespace) -> None:
    """(internal) Run services in this process like ``services.runner``, on a given topic,
    optionally profiling the event loop's thread between SIGUSR1 and SIGUSR2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    profiler = cProfile.Profile() if options.profile else None
    asyncio.run(serve(options, profiler))


async def serve(options: argparse.Namespace, profiler: cProfile.Profile | None) -> None:
    from casetrail_platform.bus.kafka_settings import KafkaSettings
    from casetrail_platform.bus.topics import TopicSettings, ensure_topics
    from casetrail_platform.infrastructure import Infrastructure
    from services.runner import start_services, stop_services

    data_dir = Path(options.data_dir)
    set_telemetry(options.telemetry_mode)
    if options.policy_mode == "off":
        switch_policy_off()
    if options.backend == "distributed":
        kafka = KafkaSettings.from_env(servers_environment(KAFKA_BOOTSTRAP))
        await ensure_topics(kafka, TopicSettings(case_events_topic=options.topic))
        dsn = server_setting(PG_DSN)
        infra = Infrastructure.distributed(
            data_dir, dsn, kafka, topic=options.topic, verifier=verifier(options.auth_mode)
        )
    else:
        infra = Infrastructure.embedded(data_dir, verifier=verifier(options.auth_mode))
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
