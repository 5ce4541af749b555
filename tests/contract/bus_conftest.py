"""Harnesses that let one bus contract suite run against every adapter.

Each harness owns a fresh topic (uuid-suffixed) so tests never see each other's messages,
and hands out unique consumer-group names.
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from casetrail_platform.bus.deadletter import DeadLetter, parse_dead_letter
from casetrail_platform.bus.inprocess import InProcessBus
from casetrail_platform.bus.kafka import KafkaEventPublisher, KafkaEventSubscriber
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.message import BusMessage
from casetrail_platform.bus.port import BatchHandler, EventPublisher, EventSubscriber, Handler
from casetrail_platform.bus.retry import Backoff, RetryPolicy
from casetrail_platform.bus.topics import TopicSettings, create_topics, dead_letter_topic
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from tests.support.kafka_reading import read_topic
from tests.support.sample_events import CaseTouched, note
from tests.support.servers import kafka_bootstrap, server_missing

WAIT_LIMIT = 90.0
"""Guard against a hung test only (never an assertion about speed)."""

FAST_RETRY = RetryPolicy(Backoff(initial=0.01, maximum=0.05), max_attempts=5)


def recorded(case_id: str, sequence: int, position: int, text: str = "visit") -> RecordedEvent:
    """A recorded note, as an event store would hand it to the relay."""
    new = note(case_id, f"{text} {sequence}")
    return RecordedEvent(
        event_id=new.event_id,
        stream=f"case-{case_id}",
        sequence=sequence,
        position=position,
        recorded_at=datetime.now(UTC),
        event=new.event,
        metadata=new.metadata,
    )


def touched(case_id: str, sequence: int, position: int) -> RecordedEvent:
    """A ``CaseTouched`` on the same case (a type a filtered group does not want)."""
    note_event = recorded(case_id, sequence, position)
    return RecordedEvent(
        event_id=uuid4(),
        stream=note_event.stream,
        sequence=sequence,
        position=position,
        recorded_at=note_event.recorded_at,
        event=CaseTouched(case_id=case_id),
        metadata=note_event.metadata,
    )


def case_history(cases: Sequence[str], per_case: int) -> list[RecordedEvent]:
    """``per_case`` events for each case, interleaved across cases like real traffic."""
    events: list[RecordedEvent] = []
    for sequence in range(1, per_case + 1):
        for case_id in cases:
            events.append(recorded(case_id, sequence, len(events) + 1))
    return events


_members: set[asyncio.Task[None]] = set()
"""Members started by ``running``: a wait fails at once if one of them crashed."""


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait until ``check()`` holds; fail (naming ``what``) if it never does."""
    try:
        async with asyncio.timeout(WAIT_LIMIT):
            # Polling: the checks look at plain test state that has no event to wait on.
            while not check():
                for task in _members:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        pytest.fail(f"a group member crashed: {task.exception()!r}")
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {what}")


@dataclass
class Recorder:
    """A handler with an idempotent projection keyed by event id, as real consumers have."""

    deliveries: list[RecordedEvent] = field(default_factory=list)
    projection: dict[UUID, RecordedEvent] = field(default_factory=dict)

    async def __call__(self, event: RecordedEvent) -> None:
        self.deliveries.append(event)
        self.projection.setdefault(event.event_id, event)

    def has_all(self, events: Sequence[RecordedEvent]) -> bool:
        return all(event.event_id in self.projection for event in events)


@dataclass
class BatchRecorder:
    """A batch handler that applies a batch all or nothing, as a read-model transaction does.

    ``check`` (overridden by tests) raises to fail a batch; then nothing of it is applied.
    """

    calls: list[list[RecordedEvent]] = field(default_factory=list)
    applied: dict[UUID, int] = field(default_factory=dict)
    """How many times each event was applied (in a batch that went through)."""
    order: list[RecordedEvent] = field(default_factory=list)
    """Events in the order they were first applied."""

    async def handle_batch(self, records: Sequence[RecordedEvent]) -> None:
        self.calls.append(list(records))
        self.check(records)
        for record in records:
            if record.event_id not in self.applied:
                self.order.append(record)
            self.applied[record.event_id] = self.applied.get(record.event_id, 0) + 1

    def check(self, records: Sequence[RecordedEvent]) -> None:
        return None

    def has_all(self, events: Sequence[RecordedEvent]) -> bool:
        return all(event.event_id in self.applied for event in events)

    def ids_of_calls(self) -> list[list[UUID]]:
        return [[record.event_id for record in call] for call in self.calls]


@dataclass
class Running:
    task: asyncio.Task[None]
    stop: asyncio.Event
    assignments: list[frozenset[int]]

    @property
    def assignment(self) -> frozenset[int]:
        return self.assignments[-1] if self.assignments else frozenset()


@asynccontextmanager
async def running(
    subscriber: EventSubscriber, group: str, handler: Handler | BatchHandler
) -> AsyncIterator[Running]:
    """Run a group member in the background; stop it gracefully on exit."""
    stop = asyncio.Event()
    assignments: list[frozenset[int]] = []
    task = asyncio.create_task(
        subscriber.run(group, handler, stop, on_assignment=assignments.append)
    )
    member = Running(task, stop, assignments)
    _members.add(task)
    try:
        yield member
    finally:
        _members.discard(task)
        stop.set()
        if not member.task.done():
            async with asyncio.timeout(WAIT_LIMIT):
                await asyncio.wait({member.task})
        if not member.task.cancelled():
            failure = member.task.exception()
            if failure is not None:
                raise failure


async def cancel(member: Running) -> None:
    """Kill a member abruptly: whatever it holds is left uncommitted."""
    member.task.cancel()
    await asyncio.wait({member.task})


class BusHarness(ABC):
    name: str
    partitions = 3

    def __init__(self, registry: EventRegistry) -> None:
        self.registry = registry
        self.topic = f"test.bus.{uuid.uuid4().hex[:12]}"
        self.groups: list[str] = []

    def group(self, name: str = "group") -> str:
        group = f"test.{name}.{uuid.uuid4().hex[:8]}"
        self.groups.append(group)
        return group

    @property
    @abstractmethod
    def publisher(self) -> EventPublisher: ...

    @abstractmethod
    def subscriber(self, retry: RetryPolicy = FAST_RETRY) -> EventSubscriber: ...

    @abstractmethod
    async def publish_raw(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None: ...

    @abstractmethod
    async def messages(self) -> list[BusMessage]:
        """Everything on the harness's topic."""

    @abstractmethod
    async def dead_letters(self, group: str) -> list[DeadLetter]:
        """Everything in ``group``'s dead-letter queue right now."""

    async def close(self) -> None:
        return None


class InProcessHarness(BusHarness):
    name = "inprocess"

    def __init__(self, registry: EventRegistry) -> None:
        super().__init__(registry)
        self.bus = InProcessBus(partitions=self.partitions)
        self._publisher = self.bus.publisher(self.topic)

    @property
    def publisher(self) -> EventPublisher:
        return self._publisher

    def subscriber(self, retry: RetryPolicy = FAST_RETRY) -> EventSubscriber:
        return self.bus.subscriber(self.registry, self.topic, retry)

    async def publish_raw(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        self.bus.append(self.topic, key, value, headers)

    async def messages(self) -> list[BusMessage]:
        return self.bus.messages(self.topic)

    async def dead_letters(self, group: str) -> list[DeadLetter]:
        return self.bus.dead_letters(group)


def kafka_test_settings() -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap(),
        client_id="casetrail-test",
        poll_timeout_ms=100,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
        request_timeout_ms=10_000,
        reconnect_backoff=Backoff(initial=0.1, maximum=1.0),
    )


class KafkaHarness(BusHarness):
    name = "kafka"

    def __init__(self, registry: EventRegistry) -> None:
        super().__init__(registry)
        self.settings = kafka_test_settings()
        self.topics = TopicSettings(case_events_topic=self.topic, partitions=self.partitions)
        self._publisher = KafkaEventPublisher(self.settings, self.topic)

    async def open(self) -> None:
        await create_topics(self.settings, self.topics.new_topics())
        await self._publisher.start()

    @property
    def publisher(self) -> EventPublisher:
        return self._publisher

    def subscriber(self, retry: RetryPolicy = FAST_RETRY) -> EventSubscriber:
        return KafkaEventSubscriber(
            self.settings, self.registry, topic=self.topic, retry=retry, topics=self.topics
        )

    async def publish_raw(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(self.topic, value=value, key=key, headers=list(headers))
        finally:
            await producer.stop()

    async def messages(self) -> list[BusMessage]:
        return await read_topic(self.settings, self.topic, self.partitions)

    async def dead_letters(self, group: str) -> list[DeadLetter]:
        topic = dead_letter_topic(group)
        await create_topics(self.settings, self.topics.new_topics([group])[1:])
        return [
            parse_dead_letter(message.key, message.value, message.headers)
            for message in await read_topic(
                self.settings, topic, self.topics.dead_letter_partitions
            )
        ]

    async def close(self) -> None:
        await self._publisher.stop()
        await delete_topics(
            self.settings, [self.topic, *(dead_letter_topic(g) for g in self.groups)]
        )


async def delete_topics(settings: KafkaSettings, topics: Sequence[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await admin.start()
        await admin.delete_topics(list(topics))
    except Exception:  # cleanup only: a leftover test topic harms nothing
        pass
    finally:
        await admin.close()


async def open_harness(kind: str, registry: EventRegistry) -> BusHarness:
    if kind == "inprocess":
        return InProcessHarness(registry)
    harness = KafkaHarness(registry)
    try:
        await harness.open()
    except Exception as error:
        await harness.close()
        server_missing("Kafka", error)
    return harness


def first_seen_order(deliveries: Sequence[RecordedEvent]) -> list[RecordedEvent]:
    seen: set[UUID] = set()
    order: list[RecordedEvent] = []
    for event in deliveries:
        if event.event_id not in seen:
            seen.add(event.event_id)
            order.append(event)
    return order
