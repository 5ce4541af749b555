"""Case events reach casetrail's consumers whatever codec the broker stores them in: a topic
(or an agency's broker default) with ``compression.type`` zstd, lz4 or snappy recompresses
every record, and aiokafka reads those codecs only with ``cramjam`` installed. Without it every
consumer of the case events failed on the first record (``UnsupportedCodecError``: libraries
for zstd compression codec not found), and so did the caseload processor."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from casetrail_platform.bus.kafka import KafkaEventPublisher, KafkaEventSubscriber
from casetrail_platform.bus.topics import TopicSettings
from tests.contract.bus_conftest import (
    Recorder,
    delete_topics,
    eventually,
    kafka_test_settings,
    recorded,
    running,
)
from tests.support.sample_events import sample_registry

pytestmark = pytest.mark.kafka

CODECS = ["gzip", "snappy", "lz4", "zstd"]


@pytest.fixture
async def compressed_topic(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A case-event topic whose broker recompresses every record with the codec."""
    codec: str = request.param
    topic = f"casetrail.compressed-{codec}.{uuid.uuid4().hex[:8]}"
    settings = kafka_test_settings()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"compression.type": codec})]
        )
    finally:
        await admin.close()
    try:
        yield topic
    finally:
        await delete_topics(settings, [topic])


@pytest.mark.parametrize("compressed_topic", CODECS, indirect=True)
async def test_a_topic_stored_in_any_codec_is_read(compressed_topic: str) -> None:
    settings = kafka_test_settings()
    topics = TopicSettings(case_events_topic=compressed_topic, partitions=1)
    publisher = KafkaEventPublisher(settings, compressed_topic)
    await publisher.start()
    events = [recorded("c-1", 1, 1), recorded("c-1", 2, 2)]
    try:
        await publisher.publish(events)
    finally:
        await publisher.stop()
    recorder = Recorder()
    subscriber = KafkaEventSubscriber(
        settings, sample_registry(), topic=compressed_topic, topics=topics
    )
    async with running(subscriber, f"test.compressed.{compressed_topic}", recorder):
        await eventually(lambda: recorder.has_all(events), "both events")
    assert [event.event_id for event in recorder.deliveries] == [e.event_id for e in events]
