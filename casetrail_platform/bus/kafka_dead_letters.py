"""Reading a consumer group's dead-letter topic and putting its letters back (``casetrail dlq``).

A replay publishes each dead letter's original record (key, value and CloudEvents headers as
they were) again to the topic it was read from, in the dead-letter topic's order, and commits
past each one once the broker has acknowledged it, under the consumer group
``<group>.replay`` on the dead-letter topic. So a second replay sends only letters not sent
before; a replay cut short sends at most the letter in flight again, which changes nothing:
every consumer applies an event once (by event id or by its tracking). A letter the broker
refuses (its topic gone, too large, not ours to write) stops the replay there, the letters
before it done. A record that cannot be read as a dead letter (someone else wrote it, or a
newer version's reason code) is never committed past: its partition's replay stops before it,
so it stays listed as not replayed rather than passing for one. Every group of the topic sees
a replayed record; the groups that had applied it already skip it. A replayed record is marked
(``events.dead_letters.REPLAYED``): it comes after later events of its case, and an ordering
guard must not take it for where its stream starts. A letter holding only the first bytes of its
record's value (``DeadLetter.truncated_from``) is never put back: the replay passes over it and
names it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

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
    problem: str = ""
    """Why ``letter`` is ``None`` (``parse_dead_letter``'s words: headers named, no values)."""


@dataclass(frozen=True, slots=True)
class Replay:
    """What ``replay_dead_letters`` did: the letters put back, those it stopped at, and the
    broker's refusal that ended it, if one did."""

    replayed: list[DeadLetter]
    unreadable: list[StoredDeadLetter]
    """The first record of each partition that is no dead letter this version can read: its
    partition's replay stopped before it (``waiting`` counts the records after it)."""
    waiting: int
    refused: tuple[DeadLetter, str] | None = None
    """The letter the broker refused, and why (the replay stopped there)."""
    truncated: tuple[DeadLetter, ...] = ()
    """Letters passed over: they hold only the first bytes of their record's value."""


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
        _stored(record, record.offset < replayed_up_to[TopicPartition(topic, record.partition)])
        for record in records
    ]


async def replay_dead_letters(settings: KafkaSettings, group: str) -> Replay:
    """Publish every letter not replayed yet back to its original topic, committing past each
    one the broker acknowledged (see the module's text for where it stops)."""
    topic = dead_letter_topic(group)
    consumer = _consumer(settings, replay_group(group))
    producer = new_producer(settings, f"{settings.client_id}-dlq-replay")
    try:
        await consumer.start()  # in the try: one that failed to start is closed too
        partitions = await topic_partitions(settings, topic, "dlq-admin")
        if not partitions:
            return Replay([], [], 0)
        start = {tp: (await consumer.committed(tp)) or 0 for tp in partitions}
        records = await _read_to_end(consumer, partitions, start)
        await producer.start()
        return await _put_back(consumer, producer, [_stored(r, False) for r in records])
    finally:
        timeout = settings.request_timeout_ms / 1000
        await close_quietly(producer, timeout)
        await close_quietly(consumer, timeout)


async def _put_back(consumer: Any, producer: Any, records: list[StoredDeadLetter]) -> Replay:
    replayed: list[DeadLetter] = []
    truncated: list[DeadLetter] = []
    unreadable: list[StoredDeadLetter] = []
    stopped: set[int] = set()  # partitions whose replay stopped at an unreadable record
    waiting = 0
    for stored in records:  # in each partition's order
        record, letter = stored.record, stored.letter
        if record.partition in stopped:
            waiting += 1
            continue
        if letter is None:
            unreadable.append(stored)
            stopped.add(record.partition)
            continue
        original = letter.message
        if letter.truncated_from is None:
            try:
                await producer.send_and_wait(
                    original.topic,
                    value=original.value,
                    key=original.key,
                    headers=[*original.headers, (REPLAYED, b"1")],
                )
            except KafkaError as error:
                refused = (letter, _refusal(error))
                return Replay(replayed, unreadable, waiting, refused, tuple(truncated))
            replayed.append(letter)
        else:
            # Its value cut short, the record would be applied (or dead-lettered) as if whole.
            truncated.append(letter)
        # Past it at once: a later letter refused must not leave this one to be sent again.
        await consumer.commit({TopicPartition(record.topic, record.partition): record.offset + 1})
    return Replay(replayed, unreadable, waiting, truncated=tuple(truncated))


def _refusal(error: KafkaError) -> str:
    """The broker's refusal in a line: its error's name and words (they name topics and
    limits, never a record's value)."""
    words = str(error).strip().splitlines()
    return f"{type(error).__name__}: {words[0]}" if words else type(error).__name__


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


def _stored(record: BusMessage, replayed: bool) -> StoredDeadLetter:
    try:
        letter = parse_dead_letter(record.key, record.value, record.headers)
    except ValueError as error:
        return StoredDeadLetter(record, None, replayed, str(error))
    return StoredDeadLetter(record, letter, replayed)
