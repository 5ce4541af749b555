"""Issue 13 on the real broker: once a batch of a partition fails, nothing later of that
partition reaches the log until the relay publishes again from the failed batch on, so a
case's earlier events never land after its later ones."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from casetrail_platform.bus.errors import PublishError
from casetrail_platform.bus.kafka import KafkaEventPublisher, KafkaEventSubscriber
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.message import BusMessage
from casetrail_platform.bus.retry import Backoff
from casetrail_platform.bus.topics import TopicSettings, create_topics
from casetrail_platform.outbox import OutboxRelay
from casetrail_platform.projections.port import Document, DocumentTransaction, Projection
from casetrail_platform.projections.runner import BusProjectionHandler, rebuild
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from casetrail_platform.store.sqlite_checkpoints import SqliteCheckpointStore
from casetrail_platform.store.sqlite_parking import SqliteParkingLot
from events.envelope import RecordedEvent
from tests.contract.bus_conftest import (
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
from tests.support.waiting import eventually as wait_for

pytestmark = pytest.mark.kafka


def sequences(on_topic: list[BusMessage]) -> list[int]:
    return [int(message.header("ce_sequence") or b"0") for message in on_topic]


async def test_a_later_batch_is_not_written_while_an_earlier_one_of_its_partition_failed() -> None:
    settings = kafka_test_settings()
    topic = f"test.lanes.{os.urandom(6).hex()}"
    small_records_only = NewTopic(
        topic, num_partitions=1, replication_factor=1, topic_configs={"max.message.bytes": "4096"}
    )
    try:
        await create_topics(settings, [small_records_only])
    except Exception as error:
        server_missing("Kafka", error)
    refused = recorded("c-1", 1, 1, text="word " * 2000)
    later = [recorded("c-1", sequence, sequence) for sequence in (2, 3, 4)]
    try:
        async with KafkaEventPublisher(settings, topic) as publisher:
            # Several batches of one partition in flight, as a pipelining relay hands them over.
            acknowledgements = [await publisher.enqueue([refused])] + [
                await publisher.enqueue([event]) for event in later
            ]
            outcomes = await asyncio.gather(*acknowledgements, return_exceptions=True)
        on_topic = await read_topic(settings, topic, 1)
    finally:
        await delete_topics(settings, [topic])
    assert all(isinstance(outcome, PublishError) for outcome in outcomes), outcomes
    # Before the fix the broker had events 2-4 of the case while event 1 was refused; a relay
    # retrying from event 1 then wrote 2-4 again, after them, on every attempt.
    assert sequences(on_topic) == []


async def raise_topic_limit(settings: KafkaSettings, topic: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)})]
        )
    finally:
        await admin.close()


async def test_a_record_the_broker_refuses_is_parked_and_the_rest_flows_in_case_order(
    tmp_path: Path,
) -> None:
    """Issue 8, item 7, on the real broker: the relay parks the refused record and its case's
    later ones, publishes every other case, and after the topic's limit is raised an
    operator's retry puts the parked case on the log in order."""
    settings = kafka_test_settings()
    topic = f"test.parking.{os.urandom(6).hex()}"
    group = f"test.parking-consumer.{os.urandom(4).hex()}"
    small_records_only = NewTopic(
        topic, num_partitions=3, replication_factor=1, topic_configs={"max.message.bytes": "4096"}
    )
    try:
        await create_topics(settings, [small_records_only])
    except Exception as error:
        server_missing("Kafka", error)
    registry = sample_registry()
    store = await SqliteEventStore.open(tmp_path / "events.db", registry)
    parking = SqliteParkingLot(store)
    cases = [f"case-{n}" for n in range(6)]
    try:
        for _ in range(3):
            await append_round(store, cases)
        version = await store.stream_version("case-case-2")
        refused = await store.append("case-case-2", [note("case-2", "word " * 2000)], version)
        for _ in range(3):
            await append_round(store, cases)
        async with KafkaEventPublisher(settings, topic) as publisher:
            relay = OutboxRelay(
                store,
                publisher,
                SqliteCheckpointStore(store),
                "relay",
                batch_size=4,  # several batches in flight, as under load
                parking=parking,
                retry_check_every=0.0,
            )
            for _ in range(3):
                with contextlib.suppress(PublishError):
                    await relay.publish_pending()
            status = await relay.status()
            assert (status.lag, status.parked) == (0, 4)
            assert "MessageSizeTooLargeError" in (status.parked_reason or "")
            parked = await parking.parked("relay")
            assert parked[0].event_id == refused[0].event_id
            assert {record.key for record in parked} == {"case-2"}

            projection = CaseProjection()
            subscriber = KafkaEventSubscriber(settings, registry, topic=topic)
            async with running(subscriber, group, projection):
                everything_else = [e for e in await store.read_all() if e.subject != "case-2"]
                await eventually(lambda: projection.has(everything_else), "the other cases")
                assert projection.versions["case-case-2"] == 3  # up to the refused one

                await raise_topic_limit(settings, topic, 1024 * 1024)
                assert await parking.request_retry("relay", "case-2") == 4
                await relay.publish_pending()
                assert (await relay.status()).parked == 0
                stored = await store.read_all()
                await eventually(lambda: projection.has(stored), "the parked case")
            assert projection.out_of_order == []
            assert projection.versions == dict.fromkeys((f"case-{c}" for c in cases), 6) | {
                "case-case-2": 7
            }
    finally:
        await store.close()
        await delete_topics(settings, [topic, f"{group}.dlq"])


class NotesInOrder(Projection):
    """Keeps each case's notes as a list, in the order applied: a case's events applied out
    of order give a different document than the rebuild from the store."""

    name = "notes-in-order"
    collections = ("notes",)

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        document = await transaction.get("notes", recorded.subject) or {"sequences": []}
        document["sequences"].append(recorded.sequence)
        await transaction.put("notes", recorded.subject, document)


async def documents(read_models: SqliteReadModelStore) -> dict[str, Document]:
    return {key: document async for key, document in read_models.scan("notes")}


async def test_a_broker_restart_with_batches_in_flight_leaves_projections_as_rebuilt(
    private_broker: PrivateBroker, tmp_path: Path
) -> None:
    settings = replace(
        kafka_test_settings(),
        bootstrap_servers=private_broker.bootstrap,
        request_timeout_ms=3_000,
    )
    topics = TopicSettings(case_events_topic="test.restart-order", partitions=3)
    await create_topics(settings, topics.new_topics())
    registry = sample_registry()
    store = await SqliteEventStore.open(tmp_path / "events.db", registry)
    fed = SqliteReadModelStore(tmp_path / "fed.db")
    rebuilt = SqliteReadModelStore(tmp_path / "rebuilt.db")
    cases = [f"case-{n}" for n in range(12)]
    publisher = KafkaEventPublisher(settings, topics.case_events_topic)
    relay = OutboxRelay(
        store,
        publisher,
        SqliteCheckpointStore(store),
        "relay",
        batch_size=10,  # many small batches in flight when the broker goes
        backoff=Backoff(initial=0.1, maximum=1.0),
        idle_timeout=0.1,
    )
    subscriber = KafkaEventSubscriber(
        settings, registry, topic=topics.case_events_topic, topics=topics
    )
    order = CaseProjection()
    notes = NotesInOrder()
    stop_relay = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop_relay))

    async def load(rounds: int) -> None:
        for _ in range(rounds):
            await append_round(store, cases)
            await asyncio.sleep(0.01)

    try:
        async with (
            running(subscriber, "test.restart-order.sequence", order),
            running(
                subscriber,
                "test.restart-order.notes",
                BusProjectionHandler(fed, notes, service="test"),
            ),
        ):
            await load(3)
            loading = asyncio.create_task(load(12))
            await asyncio.sleep(0.05)  # appends and publishes under way
            await private_broker.stop()
            await loading
            await private_broker.start()
            await load(3)
            stored = await store.read_all()
            await eventually(lambda: order.has(stored), "every event after the restart")
            await rebuild(store, rebuilt, notes)
            expected = await documents(rebuilt)

            async def fed_as_rebuilt() -> bool | None:
                return await documents(fed) == expected or None

            await wait_for(fed_as_rebuilt, "the bus-fed projection equal to the rebuilt one")
    finally:
        stop_relay.set()
        await relaying
        await publisher.stop()
        await fed.close()
        await rebuilt.close()
        await store.close()
    assert order.out_of_order == []
    assert order.versions == dict.fromkeys((f"case-{c}" for c in cases), 18)
