"""A record with a header sent without a value (null, which Kafka allows) on the real broker:
the group handles the records around it, dead-letters it if it needs that header, and goes on.
Before, converting the poll raised ``TypeError`` (``bytes(None)``) and the member crashed on
the same offset for ever."""

from __future__ import annotations

import os

import pytest
from aiokafka import AIOKafkaProducer

from casetrail_platform.bus.kafka import KafkaEventSubscriber
from casetrail_platform.bus.topics import TopicSettings, create_topics
from events.cloudevents import to_kafka_binary
from events.dead_letters import REASON
from events.envelope import RecordedEvent
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


def _headers(event: RecordedEvent, null: str) -> list[tuple[str, bytes | None]]:
    """``event``'s headers, ``null`` (added if new) without value."""
    headers: list[tuple[str, bytes | None]] = [
        (n, None if n == null else v) for n, v in to_kafka_binary(event).headers
    ]
    if null not in dict(headers):
        headers.append((null, None))
    return headers


async def test_a_record_with_a_null_header_never_stops_its_group() -> None:
    settings = kafka_test_settings()
    run = os.urandom(6).hex()
    topic, group = f"test.null-header-{run}", f"test.null-header-{run}.timeline"
    letters = dead_letter_topic(group)
    topics = TopicSettings(case_events_topic=topic, partitions=1)
    try:
        await create_topics(settings, topics.new_topics())
    except Exception as error:
        server_missing("Kafka", error)
    subscriber = KafkaEventSubscriber(
        settings, sample_registry(), topic=topic, retry=FAST_RETRY, topics=topics
    )
    events = [recorded("c-1", 1, 1), recorded("c-2", 1, 2), recorded("c-3", 1, 3)]
    poison = recorded("c-4", 1, 4)
    try:
        raw = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await raw.start()
        try:
            for event, null in [
                (events[0], "x-trace"),  # a header the event does not need
                (poison, "ce_id"),  # one it does
                (events[1], None),
                (events[2], None),
            ]:
                binary = to_kafka_binary(event)
                headers = binary.headers if null is None else _headers(event, null)
                await raw.send_and_wait(topic, binary.value, binary.key, headers=headers)
        finally:
            await raw.stop()
        recorder = Recorder()
        async with running(subscriber, group, recorder):
            await eventually(lambda: recorder.has_all(events), "the records around the poison")
        assert poison.event_id not in recorder.projection
        [letter] = await read_topic(settings, letters, topics.dead_letter_partitions)
        assert letter.value == poison.data
        assert dict(letter.headers)[REASON].startswith(b"undecodable: ")
    finally:
        await subscriber.close()
        await delete_topics(settings, [topic, letters])
