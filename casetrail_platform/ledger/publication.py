"""Signed checkpoints on Kafka, so that other parties (auditors, other agencies) can keep them.

Topic ``casetrail.ledger-checkpoints`` (``casetrail_platform.bus.topics``): one partition, so every
checkpoint of every log is in one total order; key = the log's origin; value = the signed note
as UTF-8 text (``content-type: text/plain; charset=utf-8``). Kept forever, like case events.
The records' contract is ``events.checkpoint_notes`` (published in ``events/asyncapi.yaml``).

The topic is also the log's own high-water mark (``newest``): a database rolled back while a
service was down cannot take back what it published there. It is read with partitions
assigned by hand (no consumer group: the services' Kafka users need Read on the topic only),
from the end (as it was on start) backwards a page at a time, up to the page before the first
that holds a note of the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from casetrail_platform.bus.kafka_clients import close_quietly, new_producer
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.ledger.note import Checkpoint, Verifier, newest_verified
from casetrail_platform.ledger.port import CheckpointRecord, StoredCheckpoint
from events import checkpoint_notes
from events.cloudevents import KAFKA_CONTENT_TYPE_HEADER
from events.topics import LEDGER_CHECKPOINTS_TOPIC

READ_PAGE = 1000
"""Records read per step backwards: a log signs every minute at most, and every log's notes
share the partition, so a running log's newest note is in the last page or two."""
READ_TIMEOUT = 30.0
"""Seconds ``newest`` may wait for the broker (to connect, or to read one page) before it
gives up (and the ledger, which has not signed yet, tries again later)."""
PUBLISH_TIMEOUT = 30.0
"""Seconds ``publish`` may wait for the broker to take a note. Without a bound, a send during
a broker outage waited for the whole outage (measured: over 150 s, whatever the producer's
request timeout), holding the ledger's round: no ``CheckpointNotPublished``, so its health
stayed SERVING while nothing could be signed. Given up, the note stays pending and is
published again next round (a copy the producer still delivers later is harmless: the mark
is the largest verified note)."""

TIMEOUTS_KEPT = 3
"""Sends in a row given up after ``publish_timeout`` on one producer before it is replaced: a
producer whose background sender stopped (its task ended without an error, which aiokafka then
never reports) queues every later note and delivers none, so its sends time out for good even
once the broker is back. Kept through the first timeouts, as a broker outage wants; replaced
after these, it costs at most that many rounds."""

T = TypeVar("T")


class KafkaCheckpointPublisher(CheckpointRecord):
    def __init__(
        self,
        settings: KafkaSettings,
        topic: str = LEDGER_CHECKPOINTS_TOPIC,
        *,
        read_timeout: float = READ_TIMEOUT,
        publish_timeout: float = PUBLISH_TIMEOUT,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._read_timeout = read_timeout
        self._publish_timeout = publish_timeout
        self._producer: Any = None
        self._timeouts = 0
        """Sends in a row on ``_producer`` given up after ``publish_timeout``."""
        self._lock = asyncio.Lock()

    async def publish(self, checkpoint: StoredCheckpoint) -> None:
        """A producer is kept across notes, but not past a failed send: the idempotent
        producer numbers each batch when it first sends it, and a batch then failed for good
        (refused by the broker: too large, not authorized; or given up without a leader)
        leaves a gap the broker never saw, so every later note on that producer was refused
        as out of order and the mark stuck for good. A fresh producer starts a new sequence.
        A send given up after ``publish_timeout`` keeps the producer: its batch is still
        queued and retried under its own number (nothing skipped), it goes out once the
        broker is back, and closing a producer with a batch undelivered would wait for the
        broker (the fault test publishes the next note on the same producer), though not
        past ``TIMEOUTS_KEPT`` of them in a row."""
        async with self._lock:
            try:
                await asyncio.wait_for(self._send(checkpoint), self._publish_timeout)
            except TimeoutError:
                self._timeouts += 1
                if self._timeouts >= TIMEOUTS_KEPT:
                    await self._discard()
                raise TimeoutError(
                    f"{self._topic} did not take the note within {self._publish_timeout:g} s"
                ) from None
            except Exception:
                await self._discard()
                raise
            self._timeouts = 0

    async def _send(self, checkpoint: StoredCheckpoint) -> None:
        if self._producer is None:
            producer = new_producer(self._settings, f"{self._settings.client_id}-ledger")
            try:
                await producer.start()
            except BaseException:
                await close_quietly(producer, 5.0)  # else its connections stay open
                raise
            self._producer = producer
        origin = checkpoint.note.split("\n", 1)[0]
        await self._producer.send_and_wait(
            self._topic,
            key=origin.encode(),
            value=checkpoint.note.encode(),
            headers=[(KAFKA_CONTENT_TYPE_HEADER, checkpoint_notes.CONTENT_TYPE.encode())],
        )

    async def newest(self, verifier: Verifier) -> Checkpoint | None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap_servers,
            client_id=f"{self._settings.client_id}-ledger-mark",
            enable_auto_commit=False,
            request_timeout_ms=self._settings.request_timeout_ms,
            **self._settings.security.client_options(),
        )
        try:
            # One partition by design (topics as code; ensure_topics refuses another count).
            partition = TopicPartition(self._topic, 0)
            first, end = await self._within(self._open(consumer, partition), verifier)
            return await self._newest_in(consumer, partition, first, end, verifier)
        finally:
            await close_quietly(consumer, 5.0)

    async def _within(self, step: Awaitable[T], verifier: Verifier) -> T:
        """``step`` (connecting, or reading one page) or ``TimeoutError``: each step is
        bounded, not the whole read, which a log with no note yet (a new key) makes a read of
        the whole topic as it was on start."""
        try:
            return await asyncio.wait_for(step, self._read_timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{verifier.name}: {self._topic} not read within {self._read_timeout:g} s"
            ) from None

    async def _open(self, consumer: Any, partition: TopicPartition) -> tuple[int, int]:
        """Connects; the partition's first and end offsets."""
        await consumer.start()
        if self._topic not in await consumer.topics():
            # Created with the others at start-up (ensure_topics): missing is an outage.
            raise LookupError(f"topic {self._topic} does not exist")
        consumer.assign([partition])
        first = (await consumer.beginning_offsets([partition]))[partition]
        end = (await consumer.end_offsets([partition]))[partition]
        return first, end

    async def _newest_in(
        self,
        consumer: Any,
        partition: TopicPartition,
        first: int,
        end: int,
        verifier: Verifier,
    ) -> Checkpoint | None:
        key = verifier.name.encode()
        newest: Checkpoint | None = None
        while end > first:
            start = max(first, end - READ_PAGE)
            notes = await self._within(self._page(consumer, partition, start, end, key), verifier)
            found = newest_verified(notes, verifier)
            if newest is not None:
                # Replicas may publish out of order, across a page's edge too: the largest in
                # the page of the newest note and the one before it, not simply the last.
                return newest if found is None or found.size <= newest.size else found
            newest = found
            end = start
        return newest

    @staticmethod
    async def _page(
        consumer: Any, partition: TopicPartition, start: int, end: int, key: bytes
    ) -> list[str]:
        """The notes keyed ``key`` at offsets ``start`` to ``end`` (excluded)."""
        consumer.seek(partition, start)
        notes: list[str] = []
        while await consumer.position(partition) < end:
            batch = await consumer.getmany(partition, timeout_ms=1000)
            notes.extend(
                record.value.decode("utf-8", "replace")
                for record in batch.get(partition, [])
                if record.offset < end and record.key == key and record.value is not None
            )
        return notes

    async def stop(self) -> None:
        await self._discard()

    async def _discard(self) -> None:
        self._timeouts = 0
        producer, self._producer = self._producer, None
        if producer is not None:
            await close_quietly(producer, 5.0)
