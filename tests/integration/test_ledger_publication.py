"""Signed checkpoints reach the Kafka topic that other parties keep, and read back verifiable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic

from casetrail_platform.bus.topics import create_topics
from casetrail_platform.ledger import merkle
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
