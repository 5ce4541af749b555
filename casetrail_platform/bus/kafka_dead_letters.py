"""Reading a consumer group's dead-letter topic and putting its letters back (``casetrail dlq``).

A replay publishes each dead letter's original record (key, value and CloudEvents headers as
they were) again to the topic it was read from, in the dead-letter topic's order, then
commits how far it got under the consumer group ``<group>.replay`` on the dead-letter topic.
So a second replay sends only letters dead-lettered since; a replay cut short sends some
again, which changes nothing: every consumer applies an event once (by event id or by its
tracking). Every group of the topic sees a replayed record; the groups that had applied it
already skip it. A replayed record is marked (``events.dead_letters.REPLAYED``): it comes after
later events of its case, and an ordering guard must not take it for where its stream starts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from casetrail_platform.bus.deadletter import DeadLetter, parse_dead_letter
from casetrail_platform.bus.kafka_clients import close_quietly, new_producer, topic_partitions
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.message import BusMessage, as_headers
from events.dead_letters import REPLAYED
from events.topics import dead_letter_topic

REPLAY_GROUP_SUFFIX = ".replay"
_READ_PATIENCE = 60.0


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as it sits on ``<group>.dlq``; ``letter`` is ``None`` if the record is not a
    dead letter at all (someone else wrote to the topic)."""

    record: BusMessage
    letter: DeadLetter | None
    replayed: bool
    """Whether a replay has already put it back."""


def replay_group(group: str) -> str:
    return f"{dead_letter_topic(group)}{REPLAY_GROUP_SUFFIX}"


async def list_dead_letters(settings: KafkaSettings, group: str) -> list[StoredDeadLetter]:
    """Every record of the group's dead-letter topic (none if the topic does not exist)."""
    topic = dead_letter_topic(group)
    consumer = _consumer(settings, replay_group(group))
    try:
        await consumer.start()  # in the try: one that failed to start is closed too
        partitions = await topic_partitions(settings, topic, "dlq-admin")
        if not partitions:
            return []
        replayed_up_to = {tp: (await consumer.committed(tp)) or 0 for tp in partitions}
        records = await _read_to_end(consumer, partitions, {})
    finally:
        await close_quietly(consumer, settings.request_timeout_ms / 1000)
    return [
        StoredDeadLetter(
            record,
            _parse(record),
            record.offset < replayed_up_to[TopicPartition(topic, record.partition)],
        )
        for record in records
    ]


async def replay_dead_letters(settings: KafkaSettings, group: str) -> list[DeadLetter]:
    """Publish every letter not replayed yet back to its original topic; return them."""
    topic = dead_letter_topic(group)
    consumer = _consumer(settings, replay_group(group))
    producer = new_producer(settings, f"{settings.client_id}-dlq-replay")
    try:
        await consumer.start()  # in the try: one that failed to start is closed too
        partitions = await topic_partitions(settings, topic, "dlq-admin")
        if not partitions:
            return []
        start = {tp: (await consumer.committed(tp)) or 0 for tp in partitions}
        records = await _read_to_end(consumer, partitions, start)
        letters = [(record, _parse(record)) for record in records]
        await producer.start()
        replayed: list[DeadLetter] = []
        for _, letter in letters:
            if letter is None:
                continue  # not ours to put anywhere; it stays listed
            original = letter.message
            await producer.send_and_wait(
                original.topic,
                value=original.value,
                key=original.key,
                headers=[*original.headers, (REPLAYED, b"1")],
            )
            replayed.append(letter)
        done: dict[TopicPartition, int] = {}
        for record, _ in letters:
            done[TopicPartition(topic, record.partition)] = record.offset + 1
        if done:
            await consumer.commit(done)
        return replayed
    finally:
        timeout = settings.request_timeout_ms / 1000
        await close_quietly(producer, timeout)
        await close_quietly(consumer, timeout)


async def dead_letter_topics(settings: KafkaSettings) -> list[str]:
    """The dead-letter topics on the broker, by name."""
    consumer = _consumer(settings, None)
    try:
        await consumer.start()  # in the try: one that failed to start is closed too
        topics: set[str] = await consumer.topics()
    finally:
        await close_quietly(consumer, settings.request_timeout_ms / 1000)
    return sorted(t for t in topics if t.endswith(".dlq"))


def _consumer(settings: KafkaSettings, group: str | None) -> Any:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-dlq",
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=settings.request_timeout_ms,
        **settings.security.client_options(),
    )


async def _read_to_end(
    consumer: Any, partitions: list[TopicPartition], start: dict[TopicPartition, int]
) -> list[BusMessage]:
    """The records from ``start`` (default: the beginning) up to the current end."""
    consumer.assign(partitions)
    for tp in partitions:
        if tp in start:
            consumer.seek(tp, start[tp])
        else:
            await consumer.seek_to_beginning(tp)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    found: list[BusMessage] = []
    async with asyncio.timeout(_READ_PATIENCE):
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            polled = await consumer.getmany(timeout_ms=200)
            for tp, records in polled.items():
                found.extend(_message(r) for r in records if r.offset < ends[tp])
    return sorted(found, key=lambda m: (m.partition, m.offset))


def _message(record: Any) -> BusMessage:
    headers = as_headers(record.headers)
    return BusMessage(
        record.topic, record.partition, record.offset, record.key, record.value, headers
    )


def _parse(record: BusMessage) -> DeadLetter | None:
    try:
        return parse_dead_letter(record.key, record.value, record.headers)
    except ValueError:
        return None
