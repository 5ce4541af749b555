"""Reading Kafka topics back in tests, as an outside consumer would: from the first record to
the end each partition had when the read began, without joining a consumer group."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.message import BusMessage, as_headers
from tests.support.servers import kafka_bootstrap


async def partitions_of(topics: Iterable[str] | None = None) -> list[Any]:
    """The partitions of ``topics`` (every topic but Kafka's own ``__*`` ones when ``None``)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap())
    await admin.start()
    try:
        if topics is None:
            topics = [t for t in await admin.list_topics() if not t.startswith("__")]
        described = await admin.describe_topics(sorted(topics))
    finally:
        await admin.close()
    return [
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        for partition in topic["partitions"]
    ]


async def records_to_end(
    partitions: list[Any], *, bootstrap: str | None = None, patience: float = 180.0
) -> list[Any]:
    """Every record of ``partitions`` up to the ends they had when this began, in partition
    then offset order (aiokafka ``ConsumerRecord``s)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap or kafka_bootstrap(),
        enable_auto_commit=False,
        # Where a partition's position is reset to if the seek below is lost (a record once
        # came back missing with the default, "latest").
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[Any] = []
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp for tp, end in ends.items() if end > 0}
        # One deadline for the whole read, not one per poll: on a loaded machine the broker's
        # first answers may take seconds (CI once got nothing in a 2 s poll).
        async with asyncio.timeout(patience):
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=2000, max_records=5000)
                for tp, records in batch.items():
                    found += [record for record in records if record.offset < ends[tp]]
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return sorted(found, key=lambda record: (record.topic, record.partition, record.offset))


async def read_topic(
    settings: KafkaSettings, topic: str, partition_count: int, *, patience: float = 90.0
) -> list[BusMessage]:
    """Every message on ``topic`` up to its current end, without joining any group."""
    from aiokafka import TopicPartition

    partitions = [TopicPartition(topic, p) for p in range(partition_count)]
    records = await records_to_end(
        partitions, bootstrap=settings.bootstrap_servers, patience=patience
    )
    return [
        BusMessage(r.topic, r.partition, r.offset, r.key, r.value, as_headers(r.headers))
        for r in records
    ]
