"""A Kafka group member commits records it only passes by (types it does not want) later and
together, never loses them from its offsets, and leaves nothing of them uncommitted when it
stops or hands a partition over: with a real broker, the group's commit read as another
process's barrier reads it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from casetrail_platform.bus import kafka_consumer
from casetrail_platform.bus.kafka_consumer import KafkaGroupMember
from casetrail_platform.bus.kafka_progress import AppliedOffsets
from tests.contract.bus_conftest import (
    FAST_RETRY,
    KafkaHarness,
    Recorder,
    eventually,
    open_harness,
    recorded,
    touched,
)
from tests.support.sample_events import NoteWritten, sample_registry

pytestmark = pytest.mark.kafka

CASE = "c-1"


@dataclass
class Member:
    member: KafkaGroupMember
    stop: asyncio.Event
    task: asyncio.Task[None]
    applied: AppliedOffsets
    commits: list[Mapping[TopicPartition, int]] = field(default_factory=list)


@pytest.fixture
async def bus() -> AsyncIterator[KafkaHarness]:
    harness = await open_harness("kafka", sample_registry())
    assert isinstance(harness, KafkaHarness)
    try:
        yield harness
    finally:
        await harness.close()


async def start(bus: KafkaHarness, group: str, handler: Recorder) -> Member:
    stop = asyncio.Event()
    applied = AppliedOffsets()
    member = KafkaGroupMember(
        settings=bus.settings,
        topic=bus.topic,
        group=group,
        handler=handler,
        registry=bus.registry,
        retry=FAST_RETRY,
        stop=stop,
        on_assignment=None,
        event_types=frozenset({NoteWritten.event_type}),
        on_applied=applied.advance,
    )
    await member.start()
    running = Member(member, stop, asyncio.create_task(member.consume()), applied)
    commit = member._commit

    async def counted(offsets: dict[TopicPartition, int]) -> None:
        running.commits.append(dict(offsets))
        await commit(offsets)

    member._commit = counted  # type: ignore[method-assign]
    return running


async def stop(running: Member) -> None:
    running.stop.set()
    await running.task
    await running.member.close()


def case_partition(bus: KafkaHarness) -> int:
    every = list(range(bus.partitions))
    return int(DefaultPartitioner()(CASE.encode(), every, every))


def applied(running: Member, bus: KafkaHarness) -> int:
    return running.applied.of(case_partition(bus))


async def committed(bus: KafkaHarness, group: str) -> int:
    """The group's commit on the case's partition, as a client of no member asks it."""
    reader = AIOKafkaConsumer(bootstrap_servers=bus.settings.bootstrap_servers, group_id=group)
    await reader.start()
    try:
        return await reader.committed(TopicPartition(bus.topic, case_partition(bus))) or 0
    finally:
        await reader.stop()


async def test_records_passed_by_wait_for_the_next_handed_over_and_for_the_stop(
    bus: KafkaHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_consumer, "PASSED_COMMIT_EVERY", 3600.0)
    group = bus.group()
    handler = Recorder()
    running = await start(bus, group, handler)
    try:
        first = recorded(CASE, 1, 1)
        await bus.publisher.publish([first])
        await eventually(lambda: handler.has_all([first]), "the first note")
        await eventually(lambda: len(running.commits) == 1, "its commit")

        # Each passed by in a poll of its own: told at once, committed by none of them.
        for sequence in range(2, 7):
            await bus.publisher.publish([touched(CASE, sequence, sequence)])
            await eventually(
                lambda: applied(running, bus) == sequence,  # noqa: B023
                "the record passed by",
            )
        assert len(running.commits) == 1
        assert await committed(bus, group) == 1

        note = recorded(CASE, 7, 7)
        await bus.publisher.publish([note])
        await eventually(lambda: handler.has_all([note]), "the next note")
        await eventually(lambda: len(running.commits) == 2, "one commit for all of them")
        assert list(running.commits[1].values()) == [7]

        await bus.publisher.publish([touched(CASE, 8, 8), touched(CASE, 9, 9)])
        await eventually(lambda: applied(running, bus) == 9, "the last two")
        assert await committed(bus, group) == 7
    finally:
        await stop(running)
    assert await committed(bus, group) == 9  # the stop committed what was passed by


async def test_records_passed_by_are_committed_within_the_bound_when_nothing_else_comes(
    bus: KafkaHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_consumer, "PASSED_COMMIT_EVERY", 0.2)
    group = bus.group()
    running = await start(bus, group, Recorder())
    try:
        await bus.publisher.publish([touched(CASE, n, n) for n in range(1, 4)])
        await eventually(lambda: any(running.commits), "a commit of the passed-by records")
        assert await committed(bus, group) == 3
    finally:
        await stop(running)
    assert len(running.commits) == 1
