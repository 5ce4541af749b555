"""The Kafka adapter of the event bus (aiokafka).

Publisher: idempotent producer with ``acks=all``, so an acknowledged record is on every
in-sync replica and a retried send never duplicates or reorders within a partition.
Subscriber: one consumer per ``run`` with manual commits after handling, plus an
idempotent producer for the group's dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from events.bus.errors import PublishError
from events.bus.kafka_clients import close_quietly, describe, new_producer, transient
from events.bus.kafka_consumer import KafkaGroupMember
from events.bus.kafka_settings import KafkaSettings
from events.bus.names import DEFAULT_CASE_EVENTS_TOPIC, check_topic_name, dead_letter_topic
from events.bus.port import AssignmentListener, EventPublisher, EventSubscriber, Handler
from events.bus.retry import RetryPolicy, never_set, sleep_unless_stopped
from events.bus.topics import TopicSettings, ensure_dead_letter_topics
from events.cloudevents import to_kafka_binary
from events.envelope import RecordedEvent
from events.registry import EventRegistry

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
    """

    def __init__(self, settings: KafkaSettings, topic: str = DEFAULT_CASE_EVENTS_TOPIC) -> None:
        check_topic_name(topic)
        self._settings = settings
        self._topic = topic
        self._producer: Any = None
        self._stopped = False
        self._lock = asyncio.Lock()

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
        if not records:
            return
        encoded = [to_kafka_binary(record) for record in records]
        async with self._lock:
            if self._stopped:
                raise PublishError("the Kafka publisher is stopped")
            try:
                producer = self._producer or await self._connect()
                sends: list[asyncio.Future[Any]] = []
                try:
                    for record in encoded:
                        sends.append(
                            await producer.send(
                                self._topic,
                                value=record.value,
                                key=record.key,
                                headers=list(record.headers),
                            )
                        )
                finally:
                    for send in sends:
                        send.add_done_callback(_observe)
                if sends:
                    await asyncio.wait(sends)
                for send in sends:
                    failure = send.exception()
                    if failure is not None:
                        raise failure
            except Exception as error:
                await self._discard()
                raise PublishError(
                    f"Kafka did not acknowledge all {len(records)} records on"
                    f" {self._topic!r}: {describe(error)}"
                ) from error

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
        if producer is not None:
            await close_quietly(producer, self._settings.request_timeout_ms / 1000)


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

    async def run(
        self,
        group: str,
        handler: Handler,
        stop: asyncio.Event | None = None,
        *,
        on_assignment: AssignmentListener | None = None,
    ) -> None:
        stop = stop or never_set()
        dead_letter_topic(group)  # a bad group name fails here, not after connecting
        failures = 0
        while not stop.is_set():
            member = KafkaGroupMember(
                settings=self._settings,
                topic=self._topic,
                group=group,
                handler=handler,
                registry=self._registry,
                retry=self._retry,
                stop=stop,
                on_assignment=on_assignment,
            )
            try:
                if self._create_dead_letter_topic:
                    await ensure_dead_letter_topics(self._settings, self._topics, [group])
                await member.start()
                failures = 0
                await member.consume()
            except Exception as error:
                if not transient(error):
                    raise
                failures += 1
                delay = self._settings.reconnect_backoff.delay(failures)
                log.warning(
                    "group %s: Kafka unavailable (%s), retrying in %.1fs",
                    group,
                    describe(error),
                    delay,
                )
                await sleep_unless_stopped(delay, stop)
            finally:
                await member.close()
