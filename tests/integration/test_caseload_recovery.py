"""The caseload worker process (``exactly_once``, the default) gets its tables back from a large
changelog on the real broker, however soon after its assignment recovery asks where the
changelog ends."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from casetrail_platform.bus.topics import create_topics
from events.cloudevents import to_kafka_binary
from services.caseload.domain import apply
from services.caseload.processor import build_app
from services.caseload.topics import internal_topics
from tests.integration.caseload import (
    PARTITIONS,
    Setup,
    get,
    publish,
    worker_env_of,
    worker_process,
)
from tests.support.case_history import History
from tests.support.servers import free_port

pytestmark = pytest.mark.kafka

FILLER_CASES_PER_PARTITION = 4_000
"""Case states seeded per changelog partition besides the probe: about 1.3 MB each, more than
the first fetch response carries (1 MiB a partition), so that response is slow to come."""


def partition_of(key: bytes) -> int:
    """The partition Kafka's default partitioner (ours and Faust's) gives ``key``."""
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key, partitions, partitions))


async def seed_changelog(
    bootstrap: str, changelog: str, states: list[tuple[int, dict[str, Any]]]
) -> None:
    """Writes case states into the ``cases`` changelog as a worker's earlier run would have."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        sent = [
            await producer.send(
                changelog,
                json.dumps(state).encode(),
                key=json.dumps(state["case_id"]).encode(),
                partition=partition,
            )
            for partition, state in states
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_a_restarted_worker_recovers_a_large_changelog_before_it_processes(
    setup: Setup, tmp_path: Path
) -> None:
    """Faust took each changelog's end from aiokafka's last stable offset, unknown until the
    first fetch response for it came back: with that response still on its way recovery read
    the end as -1, restored nothing and went on with empty tables (a worker's caseloads, case
    states and contact counts before the restart gone; one run of this test in four, the
    next test makes it certain). The probe case's state is in the changelog, so its opening,
    published again, is a repeat; on empty tables it was applied as new."""
    history = History()
    at = datetime.now(UTC) - timedelta(hours=1)
    probe = history.opened("probe", at)
    applied = apply(None, probe)
    assert applied is not None
    seeded = [(partition_of(to_kafka_binary(probe).key), applied.state.to_json())]
    for partition in range(PARTITIONS):
        for n in range(FILLER_CASES_PER_PARTITION):
            filler = apply(None, History().opened(f"filler-{partition}-{n}", at))
            assert filler is not None
            seeded.append((partition, filler.state.to_json()))
    app = build_app(setup.settings)
    await create_topics(setup.kafka, internal_topics(app))
    changelog = app.cases.changelog_topic.get_topic_name()
    await seed_changelog(setup.kafka.bootstrap_servers, changelog, seeded)
    await publish(setup.kafka, setup.topic, [probe])

    port = free_port()
    log_path = tmp_path / "worker.log"
    status: dict[str, Any] = {}
    async with worker_process(worker_env_of(setup.settings, port), log_path) as process:
        async with asyncio.timeout(50):
            while status.get("messages", 0) < 1:
                assert process.returncode is None, log_path.read_text(errors="replace")[-3000:]
                await asyncio.sleep(0.2)
                try:
                    status = (await get(port, "/caseload-status/"))[1]
                except (OSError, ValueError):
                    continue
    assert (status["applied"], status["skipped"]) == (0, 1), (
        f"the probe's state was not recovered: {status}\n"
        + log_path.read_text(errors="replace")[-3000:]
    )


async def test_recovery_asks_the_broker_where_a_changelog_ends_before_anything_was_fetched(
    setup: Setup,
) -> None:
    """The same race, made certain: the worker's consumer in a transaction (as under
    ``exactly_once``) has fetched nothing from the changelog yet. Faust's own answer was
    ``None`` (recovery read the end as -1 and restored nothing); the broker's is the end."""
    app = build_app(setup.settings)
    await create_topics(setup.kafka, internal_topics(app))
    changelog = app.cases.changelog_topic.get_topic_name()
    probe = apply(None, History().opened("probe", datetime.now(UTC)))
    assert probe is not None
    await seed_changelog(setup.kafka.bootstrap_servers, changelog, [(0, probe.state.to_json())])
    consumer = app.consumer
    consumer.in_transaction = True
    thread = consumer._thread  # type: ignore[attr-defined]  # on ThreadDelegateConsumer only
    assert isinstance(thread, AIOKafkaConsumerThread)
    reader = AIOKafkaConsumer(
        bootstrap_servers=setup.kafka.bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        partition = TopicPartition(changelog, 0)
        reader.assign([partition])
        reader.pause(partition)  # nothing is fetched
        await reader.position(partition)  # where it reads from: asks the broker, fetches nothing
        thread._consumer = reader
        ends = await thread._highwaters([TP(changelog, 0)])
    finally:
        await reader.stop()
    assert dict(ends) == {TP(changelog, 0): 1}
