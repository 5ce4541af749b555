"""Where each key's records of each type are in a topic's partitions, read by a consumer of no
group (``GroupProgress._past_last``: a barrier waits for a key's last records of some types, not
for the whole partition).

A partition is read from the first question about it on, as its records arrive, and for
``TRAIL_SECONDS`` after the last question: the next question then finds the records up to the
end it just read (``ListOffsets``) already read, or arriving in the fetch already waiting at the
broker, instead of seeking and fetching them itself. One reader per group serves every question:
they only wait for it to have read far enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from casetrail_platform.bus.kafka_clients import close_quietly, describe
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.message import TYPE_HEADER, BusMessage, as_headers

log = logging.getLogger(__name__)

PEEK_LIMIT = 5_000
"""Most records between where a question starts and the end read to find those of a key and
types; with more, ``past_last`` declines (the caller waits for the whole partition, or asks
again from the group's commit). Not 500: a view that fell that far behind (16 writers,
bench/RESULTS.md "A worker's command at the case-view barrier") then made the worker's command
wait for all of it, past FACTS_WAIT_SECONDS."""
TRAIL_SECONDS = 5.0
"""Seconds a partition goes on being read after its last question: questions come in runs (a
worker's calls), and between runs the reader stops (no fetches while nobody asks)."""
FETCH_WAIT_MS = 50
"""The reader's longest wait at the broker for new records (``fetch_max_wait_ms``). Its one
fetch in flight holds a partition just added to the reading until it returns, so not the
client's 500 ms; new records end the wait at once however long it is."""
READ_WAIT_MS = 1_000
"""The reading task's longest wait for records before it looks whether it should go on."""


class Seen:
    """What the reader has read of one partition: how far, and one past the last record of each
    key and type it met (the group's position only grows, so those below it are forgotten once
    there are many)."""

    KEEP = 10_000

    def __init__(self) -> None:
        self.scanned = 0
        self._past: dict[tuple[bytes | None, bytes | None], int] = {}

    def note(self, messages: Iterable[BusMessage]) -> None:
        for message in messages:
            self._past[(message.key, message.header(TYPE_HEADER))] = message.offset + 1

    def past(self, key: bytes, event_type: str) -> int:
        return self._past.get((key, event_type.encode()), 0)

    def forget_before(self, position: int) -> None:
        if len(self._past) > self.KEEP:
            self._past = {k: past for k, past in self._past.items() if past > position}


class PartitionTrail:
    """The group's reader of the topic's records: each partition asked about is read from where
    the question needs, as records arrive, until ``TRAIL_SECONDS`` after its last question."""

    def __init__(self, settings: KafkaSettings, topic: str, group: str) -> None:
        self._settings = settings
        self._topic = topic
        self._group = group
        self._reader: Any = None
        self._opening = asyncio.Lock()
        self._seen: dict[int, Seen] = {}
        self._followed: dict[int, asyncio.TimerHandle] = {}
        """The partitions being read (resumed), each with the timer that ends its reading."""
        self._waiting: Counter[int] = Counter()
        """Questions waiting on each partition: its reading does not end under them."""
        self._reading: asyncio.Task[None] | None = None
        self._moved = asyncio.Event()
        """Set (and replaced) each time the reader has read on."""

    def seen(self, partition: int) -> Seen:
        return self._seen.setdefault(partition, Seen())

    async def past_last(
        self,
        partition: int,
        start: int,
        end: int,
        key: bytes,
        types: frozenset[str],
        count: int,
    ) -> int | None:
        """One past the last record of ``[start, end)`` of ``partition`` keyed ``key`` of one
        of ``types`` (``start`` if none; perhaps one met past ``end``, read meanwhile); None if
        more than ``PEEK_LIMIT`` records are left to read for it. ``start``: where the group
        has surely applied to; ``count``: the topic's partition count as last read."""
        if end <= start:
            return start
        seen = self.seen(partition)
        begin = max(seen.scanned, start)
        if end - begin > PEEK_LIMIT:
            return None
        if begin < end or partition in self._followed:
            await self._read_to(partition, begin, end, count)
        seen.forget_before(start)
        return max([start] + [seen.past(key, event_type) for event_type in types])

    async def _read_to(self, partition: int, begin: int, end: int, count: int) -> None:
        """Return once ``partition`` is read from ``begin`` (or from further on, if read so far
        already) to ``end``; it goes on being read for ``TRAIL_SECONDS``."""
        reader = await self._opened(count)
        seen = self.seen(partition)
        self._follow(reader, partition, begin)
        self._waiting[partition] += 1
        try:
            while seen.scanned < end:
                if partition not in self._followed:
                    raise KafkaError(f"partition {partition} is no longer read")
                moved = self._moved
                await moved.wait()
        finally:
            self._waiting[partition] -= 1

    def _follow(self, reader: Any, partition: int, begin: int) -> None:
        """Read ``partition`` from ``begin`` if it is not read that far yet, as records arrive,
        until ``TRAIL_SECONDS`` from now."""
        seen = self.seen(partition)
        topic_partition = TopicPartition(self._topic, partition)
        ending = self._followed.get(partition)
        if ending is None or seen.scanned < begin:
            # Everything below ``begin`` the group has applied: no need to read it.
            seen.scanned = max(seen.scanned, begin)
            reader.seek(topic_partition, seen.scanned)
            reader.resume(topic_partition)
        if ending is not None:
            ending.cancel()
        self._followed[partition] = asyncio.get_running_loop().call_later(
            TRAIL_SECONDS, self._unfollow, partition
        )
        if self._reading is None:
            self._reading = asyncio.create_task(self._read(reader))

    def _unfollow(self, partition: int) -> None:
        if self._waiting[partition]:
            self._followed[partition] = asyncio.get_running_loop().call_later(
                TRAIL_SECONDS, self._unfollow, partition
            )
            return
        del self._followed[partition]
        if self._reader is not None:
            self._reader.pause(TopicPartition(self._topic, partition))

    async def _read(self, reader: Any) -> None:
        """Note the records of every partition read, as they arrive, while any is."""
        try:
            while self._followed and self._reader is reader:
                fetched = await reader.getmany(timeout_ms=READ_WAIT_MS)
                if self._reader is not reader:
                    return
                for topic_partition, records in fetched.items():
                    self.seen(topic_partition.partition).note(_headed(r) for r in records)
                for partition in list(self._followed):
                    seen = self.seen(partition)
                    position = await reader.position(TopicPartition(self._topic, partition))
                    seen.scanned = max(seen.scanned, position)
                self._tell()
        except Exception as error:  # whatever stops it, its waiters must know
            log.warning(
                "group %s: cannot read the topic's records (%s)", self._group, describe(error)
            )
            if self._reader is reader:
                self._reader = None  # a fresh reader at the next question
                self._stop_following()
            self._stopped_reading()
            await close_quietly(reader, self._settings.request_timeout_ms / 1000)
        finally:
            self._stopped_reading()

    def _stopped_reading(self) -> None:
        # Before anything awaits: a question meanwhile starts a reading task of its own.
        if self._reading is asyncio.current_task():
            self._reading = None

    def _tell(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def _stop_following(self) -> None:
        for ending in self._followed.values():
            ending.cancel()
        self._followed.clear()
        self._tell()  # its waiters find their partition no longer read

    async def _opened(self, count: int) -> Any:
        """The reader (opened at the first question, kept), assigned the topic's ``count``
        partitions, those not being read paused."""
        async with self._opening:
            partitions = [TopicPartition(self._topic, p) for p in range(count)]
            reader = self._reader
            if reader is not None and reader.assignment() != set(partitions):
                # Partitions were added: assigning anew forgets the positions of those read.
                reader.assign(partitions)
                reader.pause(*(p for p in partitions if p.partition not in self._followed))
                for partition in self._followed:
                    reader.seek(
                        TopicPartition(self._topic, partition), self.seen(partition).scanned
                    )
            if reader is None:
                settings = self._settings
                reader = AIOKafkaConsumer(
                    bootstrap_servers=settings.bootstrap_servers,
                    client_id=f"{settings.client_id}-{self._group}-peek",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    fetch_max_wait_ms=FETCH_WAIT_MS,
                    request_timeout_ms=settings.request_timeout_ms,
                    **settings.security.client_options(),
                )
                try:
                    await reader.start()
                    # Every partition, paused: a question resumes those it needs.
                    reader.assign(partitions)
                    reader.pause(*partitions)
                except BaseException:
                    await close_quietly(reader, settings.request_timeout_ms / 1000)
                    raise
                self._reader = reader
            return reader

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        self._stop_following()
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        if reader is not None:
            await close_quietly(reader, self._settings.request_timeout_ms / 1000)


def _headed(record: Any) -> BusMessage:
    """A consumer record's key and headers (its value is not looked at)."""
    headers = as_headers(record.headers)
    return BusMessage(record.topic, record.partition, record.offset, record.key, None, headers)
