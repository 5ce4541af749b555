"""The Kafka adapter of the event bus (aiokafka).

Publisher: idempotent producer with ``acks=all``, so an acknowledged record is on every
in-sync replica and a retried send never duplicates or reorders within a partition; calls
may be pipelined (``enqueue``) without losing that order.
Subscriber: one consumer per ``run`` with manual commits after handling, plus an
idempotent producer for the group's dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

from aiokafka.errors import (
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner

from casetrail_platform.bus.encoding import bus_records
from casetrail_platform.bus.errors import PublishError
from casetrail_platform.bus.kafka_clients import close_quietly, describe, new_producer, transient
from casetrail_platform.bus.kafka_consumer import KafkaGroupMember
from casetrail_platform.bus.kafka_progress import AppliedOffsets, GroupProgress
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.ordering import SequenceGuard
from casetrail_platform.bus.port import (
    Acknowledgement,
    AssignmentListener,
    BatchHandler,
    EventPublisher,
    EventSubscriber,
    Handler,
    already_acknowledged,
)
from casetrail_platform.bus.retry import RetryPolicy, never_set, sleep_unless_stopped
from casetrail_platform.bus.topics import TopicSettings, ensure_dead_letter_topics
from events.cloudevents import KafkaRecord
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from events.topics import DEFAULT_CASE_EVENTS_TOPIC, check_topic_name, dead_letter_topic

log = logging.getLogger(__name__)


class KafkaEventPublisher(EventPublisher):
    """Use as ``async with KafkaEventPublisher(settings) as publisher`` or start()/stop().

    ``start`` connects and raises if the broker is unreachable. After a failed publish the
    producer is dropped and ``publish`` connects a fresh one, so a broker restart heals
    without restarting the service.

    An idempotent producer never gives up on a record once it knows the partition's leader
    (a timeout could reorder or duplicate), so while a known broker is down ``publish``
    simply waits until it is back; cancel it to give up (the relay does on stop, and
    reports how long a publish has been waiting). A broker unknown or unreachable at
    connect time fails fast with ``PublishError`` instead.

    Records go out in record batches built here, one open batch per partition, chosen by
    the Java client's partitioner (murmur2 of the key) exactly as a per-record ``send``
    would: far less work per record than ``send``, and the same partition for every case.

    Each partition is a lane (``_Lanes``): its batches reach the producer one at a time, the
    next only once the broker acknowledged the one before. aiokafka sends one batch per
    partition at a time anyway, but it fails a queued batch on its own (e.g. after
    ``request_timeout_ms`` without a known leader) and then sends the batches queued behind
    it once the leader is back; the relay, rewinding to the failed one, would put a case's
    earlier events on the log after its later ones. A failed batch instead fails every later
    batch of its lane unsent, so nothing of a partition is written after a failure until the
    relay publishes again from the failed batch on (issue 13).
    """

    def __init__(self, settings: KafkaSettings, topic: str = DEFAULT_CASE_EVENTS_TOPIC) -> None:
        check_topic_name(topic)
        self._settings = settings
        self._topic = topic
        self._producer: Any = None
        self._failed: Any = None
        """A producer that failed to deliver a batch: replaced before the next publish."""
        self._stopped = False
        self._lock = asyncio.Lock()
        self._partitions = _Partitions()
        self._lanes = _Lanes()
        self._halted = False
        """An acknowledgement failed: nothing more is taken until ``resume``."""

    async def start(self) -> None:
        async with self._lock:
            self._stopped = False
            if self._producer is None:
                await self._connect()

    async def stop(self) -> None:
        async with self._lock:
            self._stopped = True
            await self._discard()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        await (await self.enqueue(records))

    async def enqueue(self, records: Sequence[RecordedEvent]) -> Acknowledgement:
        if not records:
            return already_acknowledged()
        encoded = bus_records(records)
        async with self._lock:
            if self._stopped:
                raise PublishError("the Kafka publisher is stopped")
            if self._halted:
                # The caller has not noticed the failure yet: records handed over now would
                # go to a fresh producer, ahead of the failed ones it will publish again.
                raise PublishError(
                    f"an earlier publish on {self._topic!r} failed; publish again from it"
                )
            if self._producer is not None and self._producer is self._failed:
                # Records queued behind the failure may still be in it: closing it settles
                # them before anything is published again, so nothing overtakes them.
                await self._discard()
            try:
                producer = self._producer or await self._connect()
                sent = await self._send(producer, encoded)
            except Exception as error:
                await self._discard()
                raise self._failure(len(records), error) from error
        return self._acknowledgement(producer, sent, len(records))

    async def _send(self, producer: Any, encoded: list[KafkaRecord]) -> list[asyncio.Future[Any]]:
        """Queue ``encoded`` in the producer; one future per record batch.

        A partition's batches reach the producer in order, one at a time, and none after one
        that failed (``_Lanes``), so records keep their order per key, also across calls.
        """
        choose = self._partitions.chooser(await producer.partitions_for(self._topic))
        lanes, topic = self._lanes, self._topic
        open_batches: dict[int, Any] = {}
        sent: list[asyncio.Future[Any]] = []
        try:
            for key, headers, value in encoded:
                partition = choose(key)
                batch = open_batches.get(partition)
                if batch is None:
                    batch = open_batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    # Full: queue it and start another (a first record always fits).
                    sent.append(await lanes.hand_over(producer, topic, partition, batch))
                    batch = open_batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
            for partition, batch in open_batches.items():
                batch.close()  # nothing more is coming for now: no point lingering
                sent.append(await lanes.hand_over(producer, topic, partition, batch))
        except BaseException:
            for future in sent:
                future.add_done_callback(_observe)
            raise
        return sent

    def _acknowledgement(
        self, producer: Any, sent: list[asyncio.Future[Any]], count: int
    ) -> Acknowledgement:
        """Completes once every batch in ``sent`` is acknowledged, fails at the first that
        is not (and marks ``producer`` for replacement)."""
        acknowledgement: Acknowledgement = asyncio.get_running_loop().create_future()
        waiting = len(sent)

        def settle(batch: asyncio.Future[Any]) -> None:
            nonlocal waiting
            waiting -= 1
            if acknowledgement.done():
                return
            failure = (
                asyncio.CancelledError("send cancelled") if batch.cancelled() else batch.exception()
            )
            if failure is not None:
                self._failed = producer
                self._halted = True
                acknowledgement.set_exception(self._failure(count, failure))
            elif not waiting:
                acknowledgement.set_result(None)

        for batch in sent:
            batch.add_done_callback(settle)
        if not sent:
            acknowledgement.set_result(None)
        return acknowledgement

    async def resume(self) -> None:
        self._halted = False

    def _failure(self, count: int, error: BaseException) -> PublishError:
        return PublishError(
            f"Kafka did not acknowledge all {count} records on {self._topic!r}: {describe(error)}",
            refused=isinstance(error, _REFUSED_FOR_GOOD),
        )

    async def _connect(self) -> Any:
        producer = new_producer(self._settings, f"{self._settings.client_id}-publisher")
        try:
            await producer.start()
        except BaseException:
            await close_quietly(producer, self._settings.request_timeout_ms / 1000)
            raise
        self._producer = producer
        return producer

    async def _discard(self) -> None:
        producer, self._producer = self._producer, None
        # Batches still waiting in a lane were meant for this producer: they fail unsent.
        self._lanes = _Lanes()
        if producer is not None:
            if self._failed is producer:
                self._failed = None
            await close_quietly(producer, self._settings.request_timeout_ms / 1000)


_REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTimestampError)
"""Broker answers about the records themselves, which the same records will always get (a
batch too large is split by the relay, one record at a time, before anything is parked)."""


class EarlierBatchFailed(Exception):
    """A batch was not sent because an earlier batch of its partition failed."""


class _Lanes:
    """One lane per partition: a batch reaches the producer only once the one before it in
    its lane was acknowledged, and never if that one failed (see ``KafkaEventPublisher``).

    Most of the time the lane is free (its last batch is acknowledged) and the batch is
    handed over at once; otherwise a small task hands it over when its turn comes.
    """

    def __init__(self) -> None:
        self._tails: dict[int, asyncio.Future[Any]] = {}

    async def hand_over(
        self, producer: Any, topic: str, partition: int, batch: Any
    ) -> asyncio.Future[Any]:
        """Queue ``batch`` behind its lane; the result completes once the broker acknowledged
        it, or fails (with ``EarlierBatchFailed`` if it was never sent)."""
        tail = self._tails.get(partition)
        delivery: asyncio.Future[Any]
        if tail is None or (tail.done() and _succeeded(tail)):
            delivery = await producer.send_batch(batch, topic, partition=partition)
        else:
            delivery = asyncio.ensure_future(_after(tail, producer, topic, partition, batch))
        self._tails[partition] = delivery
        return delivery


async def _after(
    earlier: asyncio.Future[Any], producer: Any, topic: str, partition: int, batch: Any
) -> Any:
    try:
        await asyncio.shield(earlier)
    except asyncio.CancelledError as error:
        if not earlier.cancelled():
            raise  # this hand-over itself was cancelled
        raise EarlierBatchFailed(_EARLIER_FAILED.format(partition=partition)) from error
    except Exception as error:
        raise EarlierBatchFailed(_EARLIER_FAILED.format(partition=partition)) from error
    return await (await producer.send_batch(batch, topic, partition=partition))


_EARLIER_FAILED = "not sent: an earlier batch of partition {partition} failed"


def _succeeded(future: asyncio.Future[Any]) -> bool:
    return not future.cancelled() and future.exception() is None


class _Partitions:
    """The Java client's choice of partition per key, remembered (murmur2 is pure Python)."""

    _MAX_REMEMBERED = 100_000

    def __init__(self) -> None:
        self._all: list[int] = []
        self._by_key: dict[bytes, int] = {}
        self._partitioner = DefaultPartitioner()

    def chooser(self, partitions: Iterable[int]) -> Callable[[bytes], int]:
        current = sorted(partitions)
        if current != self._all or len(self._by_key) > self._MAX_REMEMBERED:
            self._all, self._by_key = current, {}
        by_key, partitioner = self._by_key, self._partitioner

        def choose(key: bytes) -> int:
            partition = by_key.get(key)
            if partition is None:
                partition = by_key[key] = partitioner(key, current, current)
            return partition

        return choose


def _observe(future: asyncio.Future[Any]) -> None:
    # A send that fails after another already did must not log "exception never retrieved".
    if not future.cancelled():
        future.exception()


class KafkaEventSubscriber(EventSubscriber):
    """Consumes the case-event topic in consumer groups; see ``EventSubscriber``.

    A broker outage never ends ``run``: the consumer (or, if it cannot even start, the
    whole member) is retried with backoff until the broker is back. Only a non-retriable
    client error (e.g. an authorization failure) escapes.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        registry: EventRegistry,
        *,
        topic: str = DEFAULT_CASE_EVENTS_TOPIC,
        retry: RetryPolicy | None = None,
        topics: TopicSettings | None = None,
        create_dead_letter_topic: bool = True,
    ) -> None:
        check_topic_name(topic)
        self._settings = settings
        self._registry = registry
        self._topic = topic
        self._retry = retry or RetryPolicy()
        self._topics = topics or TopicSettings(case_events_topic=topic)
        self._create_dead_letter_topic = create_dead_letter_topic
        self._progress: dict[str, GroupProgress] = {}
        self._applied: dict[str, AppliedOffsets] = {}
        """Per group, how far this subscriber's members applied (``caught_up`` looks first)."""

    async def caught_up(
        self, group: str, key: str, *, patience: float, types: frozenset[str] | None = None
    ) -> bool:
        progress = self._progress.get(group)
        if progress is None:
            progress = self._progress[group] = GroupProgress(self._settings, self._topic, group)
        return await progress.caught_up(key, patience, self._applied_by(group), types)

    def _applied_by(self, group: str) -> AppliedOffsets:
        applied = self._applied.get(group)
        if applied is None:
            applied = self._applied[group] = AppliedOffsets()
        return applied

    async def close(self) -> None:
        for progress in self._progress.values():
            await progress.close()

    async def run(
        self,
        group: str,
        handler: Handler | BatchHandler,
        stop: asyncio.Event | None = None,
        *,
        on_assignment: AssignmentListener | None = None,
        event_types: frozenset[str] | None = None,
        ordering: SequenceGuard | None = None,
    ) -> None:
        stop = stop or never_set()
        dead_letter_topic(group)  # a bad group name fails here, not after connecting
        backoff = self._settings.reconnect_backoff
        clock = asyncio.get_running_loop().time
        failures = 0
        while not stop.is_set():
            consuming_since: float | None = None
            member = KafkaGroupMember(
                settings=self._settings,
                topic=self._topic,
                group=group,
                handler=handler,
                registry=self._registry,
                retry=self._retry,
                stop=stop,
                on_assignment=on_assignment,
                event_types=event_types,
                ordering=ordering,
                on_applied=self._applied_by(group).advance,
            )
            try:
                if self._create_dead_letter_topic:
                    await ensure_dead_letter_topics(self._settings, self._topics, [group])
                await member.start()
                consuming_since = clock()
                await member.consume()
            except Exception as error:
                if not transient(error):
                    raise
                # Starting is no recovery: a member failing straight after it (a coordinator
                # that takes the join, then fails every fetch) would be retried at the first
                # delay for ever. One that consumed for as long as the longest delay was.
                if consuming_since is not None and clock() - consuming_since >= backoff.maximum:
                    failures = 0
                failures += 1
                delay = backoff.delay(failures)
                log.warning(
                    "group %s: Kafka unavailable (%s), retrying in %.1fs",
                    group,
                    describe(error),
                    delay,
                )
                await sleep_unless_stopped(delay, stop)
            finally:
                await member.close()
