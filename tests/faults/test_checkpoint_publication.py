"""The ledger's checkpoint record across a Kafka broker outage: a publication while the broker
is down gives up within its bound (so the ledger reports CheckpointNotPublished and its health
NOT_SERVING, instead of waiting out the outage), and the same note is taken once it is back,
by the same record object (no new process, no operator)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest
from aiokafka.admin import NewTopic

from casetrail_platform.bus.topics import create_topics
from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import Checkpoint, origin_of
from casetrail_platform.ledger.port import StoredCheckpoint
from casetrail_platform.ledger.publication import TIMEOUTS_KEPT, KafkaCheckpointPublisher
from tests.contract.bus_conftest import delete_topics, kafka_test_settings
from tests.faults.servers import server_down

BOUND = 5.0


async def test_a_publication_during_a_broker_outage_gives_up_and_succeeds_after(
    tmp_path: Path,
) -> None:
    settings = kafka_test_settings()
    topic = f"test.ledger-checkpoints.{os.urandom(5).hex()}"
    await create_topics(settings, [NewTopic(topic, 1, 1)])
    signer = FileSigner(origin_of("test-agency", "faults"), tmp_path / "ledger.key")
    record = KafkaCheckpointPublisher(settings, topic, read_timeout=20.0, publish_timeout=BOUND)

    async def note(size: int) -> StoredCheckpoint:
        checkpoint = Checkpoint(signer.name, size, merkle.EMPTY_ROOT)
        return StoredCheckpoint(size, await signer.sign_checkpoint(checkpoint))

    pending = await note(2)
    try:
        await record.publish(await note(1))
        async with server_down("kafka"):
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="did not take the note"):
                # The old code waited for the whole outage: bounded here by the test only.
                await asyncio.wait_for(record.publish(pending), 60)
            assert time.monotonic() - started < BOUND + 5
        for _ in range(20):  # as the ledger's rounds do, every few seconds
            try:
                await record.publish(pending)
                break
            except TimeoutError:
                await asyncio.sleep(1)
        else:
            raise AssertionError("the record never took the note after the broker came back")
        reader = KafkaCheckpointPublisher(settings, topic, read_timeout=20.0)
        newest = await reader.newest(await signer.verifier())
        assert newest is not None
        assert newest.size == 2
    finally:
        await record.stop()
        await delete_topics(settings, [topic])


async def test_a_producer_whose_sender_stopped_is_replaced(tmp_path: Path) -> None:
    """aiokafka's background sender, once stopped without an error (its task cancelled),
    leaves a producer that queues every note and delivers none: each send timed out, and a
    timeout kept the producer, so the record never published again. After ``TIMEOUTS_KEPT``
    timeouts in a row it is replaced."""
    settings = kafka_test_settings()
    topic = f"test.ledger-checkpoints.{os.urandom(5).hex()}"
    await create_topics(settings, [NewTopic(topic, 1, 1)])
    signer = FileSigner(origin_of("test-agency", "faults"), tmp_path / "ledger.key")
    record = KafkaCheckpointPublisher(settings, topic, read_timeout=20.0, publish_timeout=1.0)

    async def note(size: int) -> StoredCheckpoint:
        checkpoint = Checkpoint(signer.name, size, merkle.EMPTY_ROOT)
        return StoredCheckpoint(size, await signer.sign_checkpoint(checkpoint))

    try:
        await record.publish(await note(1))
        # The producer's own task (aiokafka's internals: no public way to stop it alone).
        sender = record._producer._sender.sender_task
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        timeouts = 0
        for size in range(2, 2 + TIMEOUTS_KEPT + 2):
            try:
                await record.publish(await note(size))
                break
            except TimeoutError:
                timeouts += 1
        else:
            raise AssertionError(f"{timeouts} timeouts in a row: the producer was kept")
        assert timeouts == TIMEOUTS_KEPT
        reader = KafkaCheckpointPublisher(settings, topic, read_timeout=20.0)
        newest = await reader.newest(await signer.verifier())
        assert newest is not None
        assert newest.size == 2 + TIMEOUTS_KEPT
    finally:
        await record.stop()
        await delete_topics(settings, [topic])
