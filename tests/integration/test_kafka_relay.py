"""Outbox relay -> real Kafka -> consumer group: nothing acknowledged is lost, even when the
relay dies at the worst moment or the broker goes away mid-stream."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from casetrail_platform.bus.errors import PublishError
from casetrail_platform.bus.kafka import KafkaEventPublisher, KafkaEventSubscriber
from casetrail_platform.bus.retry import Backoff
from casetrail_platform.bus.topics import TopicSettings, create_topics
from casetrail_platform.checkpoints import CheckpointStore
from casetrail_platform.outbox import OutboxRelay
from casetrail_platform.store.sqlite import SqliteEventStore
from casetrail_platform.store.sqlite_checkpoints import SqliteCheckpointStore
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from tests.contract.bus_conftest import (
    case_history,
    delete_topics,
    eventually,
    kafka_test_settings,
    recorded,
    running,
)
from tests.integration.relaying import CaseProjection, PrivateBroker, append_round
from tests.support.kafka_reading import read_topic
from tests.support.sample_events import note, sample_registry
from tests.support.servers import server_missing

pytestmark = pytest.mark.kafka


class DiesAfterPublishing(CheckpointStore):
    """Checkpoints of a relay process that is killed right after the bus acknowledged."""

    def __init__(self, inner: CheckpointStore) -> None:
        self.inner = inner
        self.armed = True

    async def load(self, name: str) -> int:
        return await self.inner.load(name)

    async def save(self, name: str, position: int) -> None:
        if self.armed:
            self.armed = False
            raise RuntimeError("relay killed between publish and checkpoint")
        await self.inner.save(name, position)


@pytest.fixture
def registry() -> EventRegistry:
    return sample_registry()


@pytest.fixture
async def store(tmp_path: Path, registry: EventRegistry) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "events.db", registry)
    yield opened
    await opened.close()


async def test_a_relay_killed_before_its_checkpoint_sends_again_and_consumers_shrug(
    store: SqliteEventStore, registry: EventRegistry
) -> None:
    settings = kafka_test_settings()
    topics = TopicSettings(case_events_topic=f"test.relay.{os.urandom(6).hex()}", partitions=3)
    group = f"test.relay-consumer.{os.urandom(4).hex()}"
    try:
        await create_topics(settings, topics.new_topics([group]))
    except Exception as error:
        server_missing("Kafka", error)
    checkpoints = DiesAfterPublishing(SqliteCheckpointStore(store))
    try:
        async with KafkaEventPublisher(settings, topics.case_events_topic) as publisher:
            stored = await append_round(store, ["c-1", "c-2", "c-3"])
            stored += await append_round(store, ["c-1", "c-2", "c-3"])
            with pytest.raises(RuntimeError, match="killed"):
                await OutboxRelay(store, publisher, checkpoints, "relay").publish_pending()
            assert await checkpoints.load("relay") == 0

            restarted = OutboxRelay(store, publisher, checkpoints, "relay")
            assert await restarted.publish_pending() == len(stored)
            assert await checkpoints.load("relay") == stored[-1].position

        on_topic = await read_topic(settings, topics.case_events_topic, topics.partitions)
        assert len(on_topic) == 2 * len(stored)

        projection = CaseProjection()
        subscriber = KafkaEventSubscriber(
            settings, registry, topic=topics.case_events_topic, topics=topics
        )
        async with running(subscriber, group, projection):
            await eventually(lambda: projection.deliveries == 2 * len(stored), "both copies")
        assert projection.applied == {event.event_id: event for event in stored}
        assert projection.out_of_order == []
    finally:
        await delete_topics(settings, [topics.case_events_topic, f"{group}.dlq"])


async def test_a_broker_restart_mid_stream_loses_nothing_and_keeps_case_order(
    private_broker: PrivateBroker, store: SqliteEventStore, registry: EventRegistry
) -> None:
    settings = replace(
        kafka_test_settings(),
        bootstrap_servers=private_broker.bootstrap,
        request_timeout_ms=3_000,
    )
    topics = TopicSettings(case_events_topic="test.restart", partitions=3)
    await create_topics(settings, topics.new_topics())
    cases = [f"case-{n}" for n in range(8)]
    publisher = KafkaEventPublisher(settings, topics.case_events_topic)
    relay = OutboxRelay(
        store,
        publisher,
        SqliteCheckpointStore(store),
        "relay",
        batch_size=20,
        backoff=Backoff(initial=0.1, maximum=1.0),
        idle_timeout=0.1,
    )
    subscriber = KafkaEventSubscriber(
        settings, registry, topic=topics.case_events_topic, topics=topics
    )
    projection = CaseProjection()
    stop_relay = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop_relay))
    try:
        async with running(subscriber, "test.restart-consumer", projection) as consumer:
            before: list[RecordedEvent] = []
            for _ in range(4):
                before += await append_round(store, cases)
            await eventually(lambda: projection.has(before), "the events before the outage")

            await private_broker.stop()
            during: list[RecordedEvent] = []
            for _ in range(4):
                during += await append_round(store, cases)  # the service keeps working
            status = await relay.status()
            assert status.lag == len(during)
            assert status.published_position == before[-1].position

            await private_broker.start()
            after: list[RecordedEvent] = []
            for _ in range(4):
                after += await append_round(store, cases)
            everything = before + during + after
            await eventually(lambda: projection.has(everything), "every event after the restart")
            assert not consumer.task.done()
    finally:
        stop_relay.set()
        await relaying
        await publisher.stop()
    assert projection.out_of_order == []
    assert projection.versions == dict.fromkeys((f"case-{c}" for c in cases), 12)
    assert set(projection.applied) == {event.event_id for event in everything}
    assert (await relay.status()).lag == 0


async def test_pipelined_publishes_keep_case_order_on_the_partition_send_would_choose() -> None:
    settings = kafka_test_settings()
    topics = TopicSettings(case_events_topic=f"test.partitions.{os.urandom(6).hex()}", partitions=5)
    try:
        await create_topics(settings, topics.new_topics())
    except Exception as error:
        server_missing("Kafka", error)
    topic = topics.case_events_topic
    cases = [f"case-{n}" for n in range(40)]
    events = case_history(cases, per_case=3)
    try:
        async with KafkaEventPublisher(settings, topic) as publisher:
            acknowledgements = [
                await publisher.enqueue(events[start : start + 7])
                for start in range(0, len(events), 7)
            ]
            await asyncio.gather(*acknowledgements)
        on_topic = await read_topic(settings, topic, topics.partitions)

        from aiokafka import AIOKafkaProducer

        probe = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await probe.start()
        try:  # where the per-record producer API puts each key
            chosen = {
                case_id: (
                    await probe.send_and_wait(topic, b"probe", key=case_id.encode())
                ).partition
                for case_id in cases
            }
        finally:
            await probe.stop()
    finally:
        await delete_topics(settings, [topic])

    assert len(on_topic) == len(events)
    sequences: dict[str, list[int]] = {}
    for message in on_topic:  # partition by partition, in offset order
        case_id = (message.key or b"").decode()
        assert message.partition == chosen[case_id]
        sequences.setdefault(case_id, []).append(int(message.header("ce_sequence") or b"0"))
    assert sequences == {case_id: [1, 2, 3] for case_id in cases}


async def test_a_batch_the_broker_refuses_fails_its_publish_and_the_next_starts_afresh() -> None:
    from aiokafka.admin import NewTopic

    settings = kafka_test_settings()
    topic = f"test.refusing.{os.urandom(6).hex()}"
    small_messages_only = NewTopic(
        topic, num_partitions=1, replication_factor=1, topic_configs={"max.message.bytes": "4096"}
    )
    try:
        await create_topics(settings, [small_messages_only])
    except Exception as error:
        server_missing("Kafka", error)
    before, after = recorded("c-1", 1, 1), recorded("c-1", 3, 3)
    too_big = recorded("c-1", 2, 2, text="word " * 2000)
    try:
        async with KafkaEventPublisher(settings, topic) as publisher:
            await publisher.publish([before])
            refused = await publisher.enqueue([too_big])
            with pytest.raises(PublishError, match="did not acknowledge"):
                await refused
            with pytest.raises(PublishError, match="publish again from it"):
                await publisher.publish([after])  # nothing overtakes the failed one...
            await publisher.resume()  # ...until the caller starts again, as the relay does
            await publisher.publish([after])
        on_topic = await read_topic(settings, topic, 1)
    finally:
        await delete_topics(settings, [topic])
    assert [message.header("ce_id") for message in on_topic] == [
        str(event.event_id).encode() for event in (before, after)
    ]


async def test_a_retry_refused_again_does_not_fail_the_next_publish(
    store: SqliteEventStore,
) -> None:
    # A parked case's retry that the broker refused again left the publisher halted (a failed
    # acknowledgement refuses every later call until resume), so the relay's round went on to
    # publish the other cases' new events into that refusal and failed, for nothing.
    from aiokafka.admin import NewTopic

    from casetrail_platform.checkpoints import InMemoryCheckpointStore
    from casetrail_platform.store.sqlite_parking import SqliteParkingLot

    settings = kafka_test_settings()
    topic = f"test.retry-refused.{os.urandom(6).hex()}"
    small_messages_only = NewTopic(
        topic, num_partitions=1, replication_factor=1, topic_configs={"max.message.bytes": "4096"}
    )
    try:
        await create_topics(settings, [small_messages_only])
    except Exception as error:
        server_missing("Kafka", error)
    parking = SqliteParkingLot(store)

    async def add(case_id: str, text: str) -> None:
        stream = f"case-{case_id}"
        version = await store.stream_version(stream)
        await store.append(stream, [note(case_id, text)], version)

    try:
        async with KafkaEventPublisher(settings, topic) as publisher:
            relay = OutboxRelay(
                store,
                publisher,
                InMemoryCheckpointStore(),
                "relay",
                parking=parking,
                retry_check_every=0.0,
            )
            await add("a", "word " * 2000)
            with pytest.raises(PublishError):
                await relay.publish_pending()  # refused: the next round isolates and parks it
            await relay.publish_pending()
            assert (await relay.status()).parked == 1

            assert await parking.request_retry("relay", "a") == 1  # the topic still refuses
            await add("b", "fine")
            await relay.publish_pending()  # the retry fails; b goes out all the same
        on_topic = await read_topic(settings, topic, 1)
    finally:
        await delete_topics(settings, [topic])
    assert [message.header("ce_subject") for message in on_topic] == [b"b"]
    assert (await relay.status()).parked == 1
