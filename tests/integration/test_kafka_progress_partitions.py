"""The transfer barrier's Kafka side (GroupProgress, ``EventSubscriber.caught_up``) after
partitions were added to the topic: a key the publisher now puts on a new partition is waited
for there (it read the partitions once, so it looked at the old one and said caught up)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from casetrail_platform.bus import kafka_progress
from casetrail_platform.bus.kafka_progress import GroupProgress
from tests.contract.bus_conftest import WAIT_LIMIT, kafka_test_settings

pytestmark = pytest.mark.kafka


def _key_moved_to_a_new_partition(count: int) -> tuple[str, int]:
    """A key on partition 0 of one partition and on another of ``count``, and that one."""
    partitioner = DefaultPartitioner()
    every = list(range(count))
    for n in range(1000):
        key = f"case-{n}"
        partition = partitioner(key.encode(), every, every)
        if partition != 0:
            return key, partition
    raise AssertionError("no key moves")


async def test_caught_up_waits_on_a_partition_added_after_its_first_question(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_progress, "PARTITIONS_TTL", 0.0)
    settings = kafka_test_settings()
    topic = f"test.progress.{uuid.uuid4().hex[:12]}"
    group = f"test.group.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    progress = GroupProgress(settings, topic, group)
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
        key, partition = _key_moved_to_a_new_partition(4)
        assert await progress.caught_up(key, patience=WAIT_LIMIT)

        await admin.create_partitions({topic: NewPartitions(total_count=4)})
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"event", key=key.encode(), partition=partition)
        finally:
            await producer.stop()
        # On the new partition, not handled by the group: not caught up.
        assert not await progress.caught_up(key, patience=1.0)

        committer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
        )
        await committer.start()
        try:
            moved = TopicPartition(topic, partition)
            committer.assign([moved])
            await committer.commit({moved: 1})
        finally:
            await committer.stop()
        assert await progress.caught_up(key, patience=WAIT_LIMIT)
    finally:
        await progress.close()
        await admin.delete_topics([topic])
        await admin.close()
