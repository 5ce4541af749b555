"""A holder of more cases than one Kafka record could list, on the real broker: the worker goes on
counting, every changelog record stays small, and a new process gets the whole caseload back.

A worker's whole caseload was one value of the ``caseloads`` table, rewritten to its changelog
at every change. Past about 17,000 open cases under one holder (the unassigned ones first) the
record outgrew the producer's largest request (1,000,000 bytes): its send failed
``MessageSizeTooLargeError``, the process ended, and every worker started after it read the
same event again and failed on the same record."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from casetrail_platform.bus.topics import create_topics
from services.caseload import queries
from services.caseload.domain import UNASSIGNED, Holds
from services.caseload.processor import CaseloadApp, FactRecord, build_app
from services.caseload.topics import internal_topics
from tests.integration.caseload import Setup, publish
from tests.support.case_history import History

pytestmark = pytest.mark.kafka

SEEDED = 17_500
"""Cases told held by nobody straight on the worker-fact topic (as ``track-cases`` would):
past the old limit with the services' 32-hex case ids, far quicker than as case events."""
OPENED = 100
"""Cases opened through the whole topology on top of them."""
LARGEST_RECORD = 300
WAIT_SECONDS = 40.0


@contextlib.asynccontextmanager
async def started(app: CaseloadApp) -> AsyncIterator[CaseloadApp]:
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def until(check: Callable[[], bool], what: str, app: CaseloadApp) -> None:
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            # Polling: the tables have no change notification to wait on.
            while not check():
                assert not app.should_stop, f"the app stopped: {app.crash_reason!r}"
                await asyncio.sleep(0.2)
    except TimeoutError:
        held = len(queries.unassigned(app))
        pytest.fail(f"gave up waiting for {what}: {held} unassigned, {app.counters}")


async def tell_unassigned(bootstrap: str, topic: str, case_ids: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        sent = [
            await producer.send(
                topic,
                FactRecord.of(Holds(UNASSIGNED, case_id, None)).dumps(serializer="json"),
                key=json.dumps(UNASSIGNED).encode(),  # as the worker-facts topic serialises it
            )
            for case_id in case_ids
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def largest_record(bootstrap: str, topic: str, partition_count: int) -> tuple[int, int]:
    """How many records ``topic`` holds and the size of the largest (key and value)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        count = largest = 0
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    count += 1
                    largest = max(largest, len(record.key or b"") + len(record.value or b""))
        return count, largest
    finally:
        await consumer.stop()


async def test_a_holder_past_one_records_worth_of_cases_is_kept_and_recovered(
    setup: Setup,
) -> None:
    app = build_app(setup.settings)
    await create_topics(setup.kafka, internal_topics(app))
    bootstrap = setup.kafka.bootstrap_servers
    facts_topic = f"{setup.settings.app_id}-worker-facts"
    await tell_unassigned(bootstrap, facts_topic, [uuid4().hex for _ in range(SEEDED)])
    history = History()
    at = datetime.now(UTC) - timedelta(hours=1)
    await publish(
        setup.kafka, setup.topic, [history.opened(uuid4().hex, at) for _ in range(OPENED)]
    )
    everything = SEEDED + OPENED

    async with started(app):
        await until(lambda: len(queries.unassigned(app)) == everything, "every case", app)
        assert app.counters.applied == OPENED
    changelog = app.held_cases.changelog_topic.get_topic_name()
    count, largest = await largest_record(bootstrap, changelog, setup.settings.partitions)
    assert count == everything
    assert largest <= LARGEST_RECORD

    # A new process gets them back from the changelog, and goes on counting.
    restarted = build_app(setup.settings)
    async with started(restarted):
        await until(lambda: len(queries.unassigned(restarted)) == everything, "recovery", restarted)
        assert restarted.counters.applied == 0
        await publish(setup.kafka, setup.topic, [history.opened("one-more", at)])
        await until(
            lambda: len(queries.unassigned(restarted)) == everything + 1, "one more", restarted
        )
