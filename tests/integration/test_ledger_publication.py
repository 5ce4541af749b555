"""Signed checkpoints reach the Kafka topic that other parties keep, and read back verifiable;
the log finds its own newest one there (its high-water mark) in bounded time."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import create_topics
from casetrail_platform.ledger import merkle, publication
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import Checkpoint, open_checkpoint, origin_of
from casetrail_platform.ledger.port import StoredCheckpoint
from casetrail_platform.ledger.publication import KafkaCheckpointPublisher
from tests.contract.bus_conftest import delete_topics, kafka_test_settings
from tests.support.servers import server_missing

pytestmark = pytest.mark.kafka


async def test_checkpoints_are_published_in_order_keyed_by_origin(tmp_path: Path) -> None:
    settings = kafka_test_settings()
    topic = f"test.ledger-checkpoints.{os.urandom(5).hex()}"
    try:
        await create_topics(settings, [NewTopic(topic, 1, 1)])
    except Exception as error:
        server_missing("Kafka", error)
    signer = FileSigner(origin_of("test-agency", "intake"), tmp_path / "intake.key")
    notes = [
        await signer.sign_checkpoint(Checkpoint(signer.name, size, merkle.EMPTY_ROOT))
        for size in (3, 7, 12)
    ]
    publisher = KafkaCheckpointPublisher(settings, topic)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest"
    )
    try:
        for size, note in zip((3, 7, 12), notes, strict=True):
            await publisher.publish(StoredCheckpoint(size, note))
        await consumer.start()
        received: list[Any] = []
        while len(received) < 3:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, "checkpoints never arrived"
            received.extend(record for records in batch.values() for record in records)
        assert [record.key for record in received] == [signer.name.encode()] * 3
        verifier = await signer.verifier()
        sizes = [open_checkpoint(record.value.decode(), verifier).size for record in received]
        assert sizes == [3, 7, 12]
    finally:
        await consumer.stop()
        await publisher.stop()
        await delete_topics(settings, [topic])


async def test_the_newest_checkpoint_of_the_log_is_found_under_its_key_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of 4 records: the log's notes lie pages back behind other logs' and keys' notes.
    monkeypatch.setattr(publication, "READ_PAGE", 4)
    settings = kafka_test_settings()
    topic = f"test.ledger-checkpoints.{os.urandom(5).hex()}"
    try:
        await create_topics(settings, [NewTopic(topic, 1, 1)])
    except Exception as error:
        server_missing("Kafka", error)
    origin = origin_of("test-agency", "intake")
    signer = FileSigner(origin, tmp_path / "intake.key")
    same_name = FileSigner(origin, tmp_path / "another-run.key")  # another run, same agency
    other_log = FileSigner(origin_of("test-agency", "planning"), tmp_path / "planning.key")
    verifier = await signer.verifier()
    publisher = KafkaCheckpointPublisher(settings, topic, read_timeout=20.0)
    try:
        assert await publisher.newest(verifier) is None  # an empty topic: no mark
        # Replicas may publish out of order: 12 after 14, across a page's edge.
        for by, size in [(signer, 3), (signer, 14), (signer, 12), (same_name, 50)]:
            await publisher.publish(await signed(by, size))
        for size in range(1, 10):
            await publisher.publish(await signed(other_log, size))
            await publisher.publish(await signed(same_name, 100 + size))
        newest = await publisher.newest(verifier)
        assert newest == Checkpoint(origin, 14, merkle.EMPTY_ROOT)
        assert await publisher.newest(await same_name.verifier()) == Checkpoint(
            origin, 109, merkle.EMPTY_ROOT
        )
    finally:
        await publisher.stop()
        await delete_topics(settings, [topic])


async def signed(signer: FileSigner, size: int) -> StoredCheckpoint:
    note = await signer.sign_checkpoint(Checkpoint(signer.name, size, merkle.EMPTY_ROOT))
    return StoredCheckpoint(size, note)


async def test_a_missing_topic_or_an_unreachable_broker_is_an_error_not_no_mark(
    tmp_path: Path,
) -> None:
    signer = FileSigner(origin_of("test-agency", "intake"), tmp_path / "intake.key")
    verifier = await signer.verifier()
    settings = kafka_test_settings()
    missing = KafkaCheckpointPublisher(
        settings, f"test.no-such-topic.{os.urandom(5).hex()}", read_timeout=20.0
    )
    try:
        with pytest.raises(LookupError, match="does not exist"):
            await missing.newest(verifier)
    except TimeoutError as error:
        server_missing("Kafka", error)
    # Nothing listens on port 1: refused at once.
    refused = KafkaSettings(bootstrap_servers="127.0.0.1:1", request_timeout_ms=1000)
    with pytest.raises(KafkaConnectionError):
        await KafkaCheckpointPublisher(refused, read_timeout=5.0).newest(verifier)


async def test_a_broker_that_never_answers_is_given_up_on_after_the_read_timeout(
    tmp_path: Path,
) -> None:
    signer = FileSigner(origin_of("test-agency", "intake"), tmp_path / "intake.key")
    connections: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # accepted, read from by no one, never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=60_000)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        with pytest.raises(TimeoutError, match="not read within 1 s"):
            await KafkaCheckpointPublisher(settings, read_timeout=1.0).newest(
                await signer.verifier()
            )
        assert loop.time() - began < 30  # bounded: not the client's own minute-long wait
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_refused_note_does_not_stop_later_notes_from_being_published(
    tmp_path: Path,
) -> None:
    """A send the broker refused for good (here a note over the topic's size limit) is a
    failed send: the idempotent producer counted its sequence numbers, the broker did not, so
    every later note on that producer was refused as out of order (the mark stuck, the ledger
    NOT_SERVING for good). A fresh producer after any failure publishes the next note."""
    settings = kafka_test_settings()
    topic = f"test.ledger-checkpoints.{os.urandom(5).hex()}"
    try:
        await create_topics(
            settings, [NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "4096"})]
        )
    except Exception as error:
        server_missing("Kafka", error)
    signer = FileSigner(origin_of("test-agency", "intake"), tmp_path / "intake.key")
    publisher = KafkaCheckpointPublisher(settings, topic, read_timeout=20.0, publish_timeout=20.0)
    try:
        await publisher.publish(await signed(signer, 1))
        oversized = await signed(signer, 2)
        with pytest.raises(MessageSizeTooLargeError):
            await publisher.publish(StoredCheckpoint(2, oversized.note + "\n" * 8192))
        await publisher.publish(await signed(signer, 3))
        newest = await publisher.newest(await signer.verifier())
        assert newest == Checkpoint(signer.name, 3, merkle.EMPTY_ROOT)
    finally:
        await publisher.stop()
        await delete_topics(settings, [topic])
