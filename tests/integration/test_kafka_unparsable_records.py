"""A record whose header name is not UTF-8 cannot be parsed by aiokafka: ``getmany`` raised
UnicodeDecodeError, the subscriber ended for good (logged "background task failed", health
still SERVING), nothing was committed, and every restart died on the same offset; the records
of the poll before it were never handled either. Now the member reads that partition itself,
handles the records around the bad one, dead-letters it as undecodable and moves on. This
mirrors the null header value (``tests/unit/test_kafka_null_headers.py``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.producer import message_accumulator
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from casetrail_platform.bus.kafka import KafkaEventSubscriber
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings, create_topics
from events.cloudevents import to_kafka_binary
from events.dead_letters import OFFSET, REASON
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

pytestmark = pytest.mark.kafka

NOT_UTF8 = b"x-\xff\xfe"


class _NameNotUtf8(str):
    """A header name that the pure-Python batch builder writes as bytes that are not UTF-8
    (no client lets one be written otherwise; other producers may)."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return NOT_UTF8


@pytest.fixture
async def names() -> AsyncIterator[tuple[KafkaSettings, TopicSettings, str]]:
    settings = kafka_test_settings()
    run = os.urandom(6).hex()
    topics = TopicSettings(case_events_topic=f"test.unparsable-{run}", partitions=1)
    group = f"test.unparsable-{run}.timeline"
    await create_topics(settings, topics.new_topics())
    try:
        yield settings, topics, group
    finally:
        await delete_topics(settings, [topics.case_events_topic, dead_letter_topic(group)])


async def publish_batches(
    settings: KafkaSettings, topic: str, batches: list[list[tuple[RecordedEvent, bool]]]
) -> None:
    """Each batch as one record batch; an event marked ``True`` gets a header named in bytes
    that are not UTF-8."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for events in batches:
            batch = producer.create_batch()
            for event, odd in events:
                key, headers, value = to_kafka_binary(event)
                extra = [(_NameNotUtf8("x"), b"1")] if odd else []
                batch.append(key=key, value=value, timestamp=None, headers=[*headers, *extra])
            await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


async def committed(settings: KafkaSettings, topic: str, group: str) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(topic, 0))
        return offset
    finally:
        await consumer.stop()


async def test_a_record_aiokafka_cannot_parse_is_dead_lettered_and_its_neighbours_handled(
    names: tuple[KafkaSettings, TopicSettings, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, topics, group = names
    topic = topics.case_events_topic
    monkeypatch.setattr(
        message_accumulator, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy
    )
    good = [recorded(f"c-{n}", 1, n) for n in range(1, 5)]
    odd = [recorded("c-8", 1, 8), recorded("c-9", 1, 9)]
    await publish_batches(
        settings,
        topic,
        [
            [(good[0], False), (odd[0], True), (good[1], False)],  # one batch: offsets 0-2
            [(odd[1], True)],  # a batch of its own: 3
            [(good[2], False), (good[3], False)],  # 4-5
        ],
    )
    subscriber = KafkaEventSubscriber(
        settings, sample_registry(), topic=topic, retry=FAST_RETRY, topics=topics
    )
    recorder = Recorder()
    try:
        async with running(subscriber, group, recorder) as member:
            await eventually(lambda: recorder.has_all(good), "the records around the odd ones")
            assert not member.task.done()
    finally:
        await subscriber.close()

    assert [e.event_id for e in recorder.deliveries] == [e.event_id for e in good]
    letters = await read_topic(settings, dead_letter_topic(group), topics.dead_letter_partitions)
    assert sorted(dict(letter.headers)[OFFSET] for letter in letters) == [b"1", b"3"]
    for letter in letters:
        reason = dict(letter.headers)[REASON].decode()
        assert reason.startswith("undecodable: ")
        assert "is not UTF-8" in reason
    assert await committed(settings, topic, group) == 6
