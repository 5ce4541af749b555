"""A consumer fetches with a long wait and answers at the first byte once its topic is quiet,
and goes back to batching fetches when records flow: on aiokafka as pinned, with a real broker."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic

from casetrail_platform.bus.fetch_pacing import FetchPacing
from casetrail_platform.bus.topics import create_topics
from tests.contract.bus_conftest import delete_topics, kafka_test_settings
from tests.support.servers import server_missing

pytestmark = pytest.mark.kafka


async def test_a_quiet_consumer_waits_longer_and_a_flowing_one_batches_again() -> None:
    settings = kafka_test_settings()
    topic = f"casetrail.test-pacing-{uuid.uuid4().hex[:8]}"
    try:
        await create_topics(settings, [NewTopic(topic, 1, 1)])
    except Exception as error:
        server_missing("Kafka", error)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        fetch_min_bytes=settings.fetch_min_bytes,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    await producer.start()
    try:
        pacing = FetchPacing(consumer, settings)
        assert pacing.adjustable  # the pinned aiokafka builds fetches from these attributes
        fetcher = consumer._fetcher

        waited_out = settings.poll_timeout_ms
        pacing.polled(len(await consumer.getmany(timeout_ms=waited_out)), waited_out)
        assert pacing.quiet
        quiet = (1, settings.quiet_fetch_wait_ms)
        assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == quiet

        await producer.send_and_wait(topic, b"one")
        received: list[Any] = []
        while not received:
            polled = await consumer.getmany(timeout_ms=1_000)
            received = [record for records in polled.values() for record in records]
        pacing.polled(len(received), 1_000)
        assert [record.value for record in received] == [b"one"]
        assert not pacing.quiet
        flowing = (settings.fetch_min_bytes, settings.fetch_max_wait_ms)
        assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == flowing
    finally:
        await producer.stop()
        await consumer.stop()
        await delete_topics(settings, [topic])


def test_without_the_fetcher_attributes_the_started_settings_stay() -> None:
    class Unknown:
        _fetcher = object()

    pacing = FetchPacing(Unknown(), kafka_test_settings())
    assert not pacing.adjustable
    pacing.polled(0, 10_000)
    assert not pacing.quiet
