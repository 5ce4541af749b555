"""A foreign record that fits the case-event topic (1 MiB) may not fit its dead letter, which
adds the ``casetrail_dlq_*`` headers (up to about 2.3 KB): every write of the letter failed
MessageSizeTooLargeError, was retried for ever and nothing was committed, so the partition
stalled for good. A dead-letter topic the subscriber creates now takes any case-event record's
letter; one that still refuses it (created before, or by someone else) gets the letter with
the value cut, marked ``casetrail_dlq_truncated``, and the group moves on. ``dlq replay``
never puts such a letter back as if it were whole."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

from casetrail_platform.bus.kafka import KafkaEventSubscriber
from casetrail_platform.bus.kafka_consumer import TRUNCATED_VALUE_BYTES
from casetrail_platform.bus.kafka_dead_letters import list_dead_letters
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings, create_topics
from cli.dlq import describe
from events.cloudevents import to_kafka_binary
from events.dead_letters import REASON, TRUNCATED
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
from tests.support.cli import casetrail_exit
from tests.support.kafka_reading import read_topic
from tests.support.sample_events import sample_registry
from tests.support.servers import server_missing

pytestmark = pytest.mark.kafka

FOREIGN = b"\xff" * (1_048_576 - 120)
"""Not UTF-8, so undecodable; with its key and one header it just fits the case-event topic."""
BEFORE, AFTER = recorded("c-1", 1, 1), recorded("c-2", 1, 2)


@pytest.fixture
async def names() -> AsyncIterator[tuple[KafkaSettings, TopicSettings, str]]:
    settings = kafka_test_settings()
    run = os.urandom(6).hex()
    topics = TopicSettings(case_events_topic=f"test.big-letter-{run}", partitions=1)
    group = f"test.big-letter-{run}.timeline"
    try:
        await create_topics(settings, topics.new_topics())
    except Exception as error:
        server_missing("Kafka", error)
    try:
        yield settings, topics, group
    finally:
        await delete_topics(settings, [topics.case_events_topic, dead_letter_topic(group)])


HEADERS_HEAVY = [("ce_type", b"x"), ("junk", b"\xff" * (1_048_576 - 200))]
"""A foreign record carrying its bulk in a header: cutting its value alone never fits."""


async def publish_foreign_between(
    settings: KafkaSettings,
    topic: str,
    foreign: bytes = FOREIGN,
    foreign_headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for event in (BEFORE, None, AFTER):
            if event is None:
                await producer.send_and_wait(
                    topic, foreign, b"c-9", headers=foreign_headers or [("ce_type", b"x")]
                )
            else:
                key, headers, value = to_kafka_binary(event)
                await producer.send_and_wait(topic, value, key, headers=headers)
    finally:
        await producer.stop()


async def handled_past_the_foreign_record(
    settings: KafkaSettings, topics: TopicSettings, group: str
) -> None:
    subscriber = KafkaEventSubscriber(
        settings, sample_registry(), topic=topics.case_events_topic, retry=FAST_RETRY, topics=topics
    )
    recorder = Recorder()
    try:
        async with running(subscriber, group, recorder):
            await eventually(lambda: recorder.has_all([BEFORE, AFTER]), "the record after it")
    finally:
        await subscriber.close()


async def test_the_dead_letter_of_a_record_filling_the_topic_is_written_whole(
    names: tuple[KafkaSettings, TopicSettings, str],
) -> None:
    settings, topics, group = names
    await publish_foreign_between(settings, topics.case_events_topic)

    await handled_past_the_foreign_record(settings, topics, group)

    [letter] = await read_topic(settings, dead_letter_topic(group), topics.dead_letter_partitions)
    assert letter.value == FOREIGN
    assert dict(letter.headers)[REASON].startswith(b"undecodable: ")
    assert TRUNCATED not in dict(letter.headers)


async def test_a_dead_letter_topic_refusing_the_letter_gets_it_cut_and_never_replayed(
    names: tuple[KafkaSettings, TopicSettings, str], capsys: pytest.CaptureFixture[str]
) -> None:
    settings, topics, group = names
    letters = dead_letter_topic(group)
    # As created before dead-letter topics were given room: the broker's default bound.
    await create_topics(settings, [NewTopic(letters, topics.dead_letter_partitions, 1)])
    await publish_foreign_between(settings, topics.case_events_topic)

    await handled_past_the_foreign_record(settings, topics, group)

    [letter] = await read_topic(settings, letters, topics.dead_letter_partitions)
    assert letter.value == FOREIGN[:TRUNCATED_VALUE_BYTES]
    assert dict(letter.headers)[TRUNCATED] == str(len(FOREIGN)).encode()
    assert dict(letter.headers)[REASON].startswith(b"undecodable: ")

    [stored] = await list_dead_letters(settings, group)
    assert f"[truncated from {len(FOREIGN)} bytes, never replayed]" in describe(stored)
    replay = ("dlq", "replay", group, "--bootstrap", str(settings.bootstrap_servers))
    assert await asyncio.to_thread(casetrail_exit, *replay) == 1
    where = f"{topics.case_events_topic}/0@1"
    assert f"{where} not replayed: truncated" in capsys.readouterr().err
    on_topic = await read_topic(settings, topics.case_events_topic, topics.partitions)
    assert len(on_topic) == 3  # nothing put back


async def test_a_letter_too_large_for_its_headers_is_cut_too(
    names: tuple[KafkaSettings, TopicSettings, str],
) -> None:
    """Only the value was ever cut: a record of one byte and a 1 MiB header had its letter
    refused on every try, and its partition stalled for good."""
    settings, topics, group = names
    letters = dead_letter_topic(group)
    await create_topics(settings, [NewTopic(letters, topics.dead_letter_partitions, 1)])
    await publish_foreign_between(settings, topics.case_events_topic, b"x", HEADERS_HEAVY)

    await handled_past_the_foreign_record(settings, topics, group)

    [letter] = await read_topic(settings, letters, topics.dead_letter_partitions)
    headers = dict(letter.headers)
    assert letter.value == b"x"
    assert headers["ce_type"] == b"x"
    assert "junk" not in headers
    assert headers[TRUNCATED] == b"1"
    assert headers[REASON].startswith(b"undecodable: ")
