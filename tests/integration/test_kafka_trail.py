"""The barrier's reader of a topic's records (``casetrail_platform/bus/kafka_trail.py``) against a
real broker: a partition asked about goes on being read as its records arrive, so the next
question finds them read; it stops being read ``TRAIL_SECONDS`` after its last question, but
never under a question still waiting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from casetrail_platform.bus import kafka_trail
from casetrail_platform.bus.kafka_trail import PartitionTrail
from casetrail_platform.bus.message import TYPE_HEADER
from tests.contract.bus_conftest import WAIT_LIMIT, eventually, kafka_test_settings
from tests.support.servers import server_missing

pytestmark = pytest.mark.kafka

ASSIGNED = "casetrail.case.assigned"
WANTED = frozenset({ASSIGNED})

Publish = Callable[[str], Awaitable[int]]
"""Publishes a record of the type on the topic's one partition; returns its offset."""


@asynccontextmanager
async def _one_partition() -> AsyncIterator[tuple[PartitionTrail, Publish]]:
    settings = kafka_test_settings()
    topic = f"test.trail.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)])
    except Exception as error:
        await admin.close()
        server_missing("Kafka", error)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    trail = PartitionTrail(settings, topic, f"test.group.{uuid.uuid4().hex[:8]}")

    async def publish(event_type: str) -> int:
        sent = await producer.send_and_wait(
            topic, b"event", key=b"c-1", partition=0, headers=[(TYPE_HEADER, event_type.encode())]
        )
        return int(sent.offset)

    try:
        yield trail, publish
    finally:
        await trail.close()
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()


async def test_a_partition_asked_about_is_read_as_records_arrive_until_its_trail_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_trail, "TRAIL_SECONDS", 2.0)
    async with _one_partition() as (trail, publish):
        await publish(ASSIGNED)
        assert await trail.past_last(0, 0, 1, b"c-1", WANTED, count=1) == 1

        # Nobody asks, yet the next records are read as they arrive.
        await publish("casetrail.contact.logged")
        last = await publish(ASSIGNED)
        await eventually(lambda: trail.seen(0).scanned == last + 1, "the records read")
        assert trail.seen(0).past(b"c-1", ASSIGNED) == last + 1

        # Two seconds after the last question the partition is no longer read...
        await asyncio.sleep(3.0)
        unread = await publish(ASSIGNED)
        await asyncio.sleep(0.5)
        assert trail.seen(0).scanned == unread
        # ...until the next question, which reads on from where it stopped.
        assert await trail.past_last(0, 0, unread + 1, b"c-1", WANTED, count=1) == unread + 1


async def test_a_question_still_waiting_keeps_its_partition_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_trail, "TRAIL_SECONDS", 0.2)
    async with _one_partition() as (trail, publish):
        await publish("casetrail.contact.logged")
        # Asked to read to one record past what is on the partition: it waits for it.
        waiting = asyncio.ensure_future(trail.past_last(0, 0, 2, b"c-1", WANTED, count=1))
        done, _ = await asyncio.wait([waiting], timeout=0.8)
        assert not done, "answered before the partition was read to the end asked for"
        await publish(ASSIGNED)
        assert await asyncio.wait_for(waiting, WAIT_LIMIT) == 2
