"""Issue 13 on the real broker: once a batch of a partition fails, nothing later of that
partition reaches the log until the relay publishes again from the failed batch on, so a
case's earlier events never land after its later ones."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiokafka.admin import NewTopic

from events.bus.errors import PublishError
from events.bus.kafka import KafkaEventPublisher
from events.bus.message import BusMessage
from events.bus.topics import create_topics
from tests.contract.bus_conftest import delete_topics, kafka_test_settings, read_topic, recorded
from tests.support.servers import server_missing

pytestmark = pytest.mark.kafka


def sequences(on_topic: list[BusMessage]) -> list[int]:
    return [int(message.header("ce_sequence") or b"0") for message in on_topic]


async def test_a_later_batch_is_not_written_while_an_earlier_one_of_its_partition_failed() -> None:
    settings = kafka_test_settings()
    topic = f"test.lanes.{os.urandom(6).hex()}"
    small_records_only = NewTopic(
        topic, num_partitions=1, replication_factor=1, topic_configs={"max.message.bytes": "4096"}
    )
    try:
        await create_topics(settings, [small_records_only])
    except Exception as error:
        server_missing("Kafka", error)
    refused = recorded("c-1", 1, 1, text="word " * 2000)
    later = [recorded("c-1", sequence, sequence) for sequence in (2, 3, 4)]
    try:
        async with KafkaEventPublisher(settings, topic) as publisher:
            # Several batches of one partition in flight, as a pipelining relay hands them over.
            acknowledgements = [await publisher.enqueue([refused])] + [
                await publisher.enqueue([event]) for event in later
            ]
            outcomes = await asyncio.gather(*acknowledgements, return_exceptions=True)
        on_topic = await read_topic(settings, topic, 1)
    finally:
        await delete_topics(settings, [topic])
    assert all(isinstance(outcome, PublishError) for outcome in outcomes), outcomes
    # Before the fix the broker had events 2-4 of the case while event 1 was refused; a relay
    # retrying from event 1 then wrote 2-4 again, after them, on every attempt.
    assert sequences(on_topic) == []
