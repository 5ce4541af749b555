"""When the barrier's reader of a topic's records fails (``kafka_trail.PartitionTrail``), the
questions waiting on it fail at once instead of waiting out their patience, and the next
question reads with a fresh reader."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from casetrail_platform.bus import kafka_trail
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.kafka_trail import PartitionTrail


class Reader(AIOKafkaConsumer):  # type: ignore[misc]
    """A reader of a topic whose partitions hold one record each, none of the types asked for;
    the first one opened fails at its first read."""

    opened: list[Reader] = []

    def __init__(self, **options: Any) -> None:
        self.fails = not Reader.opened
        self.stopped = False
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        Reader.opened.append(self)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(partitions, 0)

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    async def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(0.01)
        if self.fails:
            raise KafkaConnectionError("connection to the broker lost")
        for partition in set(self.positions) - self.paused:
            self.positions[partition] = max(self.positions[partition], 1)
        return {}


async def test_a_failed_reader_fails_its_waiting_questions_and_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_trail, "AIOKafkaConsumer", Reader)
    Reader.opened.clear()
    trail = PartitionTrail(KafkaSettings(bootstrap_servers="127.0.0.1:1"), "t", "g")
    try:
        with pytest.raises(KafkaError, match="no longer read"):
            await asyncio.wait_for(trail.past_last(0, 0, 1, b"c-1", frozenset({"x"}), 1), 2.0)
        first = Reader.opened[0]
        assert first.stopped

        past = await asyncio.wait_for(trail.past_last(0, 0, 1, b"c-1", frozenset({"x"}), 1), 2.0)
        assert past == 0  # read to the end: no record of the key's wanted types
        assert len(Reader.opened) == 2
        assert not Reader.opened[1].stopped
    finally:
        await trail.close()
    assert Reader.opened[1].stopped
