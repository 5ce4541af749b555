"""A Kafka group member that cannot write a dead letter (its ``<group>.dlq`` refusing it)
retries the write for as long as it takes and commits nothing meanwhile: it is held back as
by a failing handler, and ``casetrail_consumer_stalled_seconds`` must say so (the alert
CasetrailConsumerStalled). The embedded bus keeps its dead letters in a list that cannot fail."""

from __future__ import annotations

import os

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from casetrail_platform.bus.kafka import KafkaEventPublisher, KafkaEventSubscriber
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings, create_topics
from casetrail_platform.telemetry.metrics import process_metrics
from events.topics import dead_letter_topic
from tests.contract.bus_conftest import (
    FAST_RETRY,
    Recorder,
    delete_topics,
    eventually,
    kafka_test_settings,
    recorded,
    running,
)
from tests.support.kafka_reading import read_topic
from tests.support.sample_events import sample_registry
from tests.support.servers import server_missing

pytestmark = pytest.mark.kafka

POISON = b"not an event " * 300
"""Undecodable, so dead-lettered; larger than the dead-letter topic takes."""


def stalled_seconds(group: str) -> float:
    value = process_metrics().registry.get_sample_value(
        "casetrail_consumer_stalled_seconds", {"group": group}
    )
    return value or 0.0


async def set_record_limit(settings: KafkaSettings, topic: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)})]
        )
    finally:
        await admin.close()


async def test_a_member_retrying_a_dead_letter_write_shows_as_stalled() -> None:
    settings = kafka_test_settings()
    run = os.urandom(6).hex()
    topic, group = f"test.dlq-stall-{run}", f"test.dlq-stall-{run}.timeline"
    letters = dead_letter_topic(group)
    topics = TopicSettings(case_events_topic=topic, partitions=1)
    refusing = NewTopic(
        letters,
        num_partitions=topics.dead_letter_partitions,
        replication_factor=1,
        topic_configs={"max.message.bytes": "1024"},
    )
    try:
        await create_topics(settings, [*topics.new_topics(), refusing])
    except Exception as error:
        server_missing("Kafka", error)
    publisher = KafkaEventPublisher(settings, topic)
    subscriber = KafkaEventSubscriber(
        settings, sample_registry(), topic=topic, retry=FAST_RETRY, topics=topics
    )
    try:
        await publisher.start()
        raw = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await raw.start()
        try:
            await raw.send_and_wait(topic, value=POISON, key=b"c-1")
        finally:
            await raw.stop()
        after = recorded("c-1", 1, 1)
        await publisher.publish([after])
        recorder = Recorder()
        async with running(subscriber, group, recorder):
            # Before: 0 throughout, the member writing its dead letter again every second.
            await eventually(lambda: stalled_seconds(group) > 1.0, "the stall shown")
            assert not recorder.deliveries
            await set_record_limit(settings, letters, 1024 * 1024)
            await eventually(lambda: recorder.has_all([after]), "the record after it")
            assert stalled_seconds(group) == 0.0
        [letter] = await read_topic(settings, letters, topics.dead_letter_partitions)
        assert letter.value == POISON
    finally:
        await publisher.stop()
        await subscriber.close()
        await delete_topics(settings, [topic, letters])
