"""How far a Kafka consumer group has got in one key's partition (``EventSubscriber.caught_up``).

One client per group, opened at the first question and kept: it never subscribes nor joins the
group (a consumer with the group's id only to read its committed offsets), so the group's
members are not rebalanced by it. Each question costs one ``ListOffsets`` request for the
partition's end, then one ``OffsetFetch`` per look at the group's commit, none when this
process's members have applied past what it waits for (``AppliedOffsets``); a question on a
key's records of some types finds where they are in the group's ``PartitionTrail``. The topic's
partitions are read again once ``PARTITIONS_TTL`` has passed: partitions added to the topic
move some keys to a new partition (the publisher's murmur2 over more partitions), so a key is
waited for on its partition under every partition count this client has seen, where its
earlier and its later records are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from casetrail_platform.bus.kafka_clients import close_quietly, describe, topic_partitions
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.kafka_trail import PartitionTrail

log = logging.getLogger(__name__)

LOOK_EVERY = 0.02
"""Seconds between looks at the group's committed offset while it is short of the end."""
PARTITIONS_TTL = 30.0
"""Seconds the topic's partitions are taken as read before the next question reads them again
(one admin request): a publisher learns of added partitions with its metadata, within
minutes, so a barrier asked later looks at the new ones well before records go there."""


class AppliedOffsets:
    """How far this process's members of one group have applied each partition (the offsets
    they commit next, told before the commit: their handler has returned). Only ever a lower
    bound of the group's progress: a partition another process's member holds stays at what
    this one last applied, and its commit is read from the broker."""

    def __init__(self) -> None:
        self._offsets: dict[int, int] = {}
        self._changed = asyncio.Event()

    def advance(self, offsets: Mapping[int, int]) -> None:
        for partition, offset in offsets.items():
            if offset > self._offsets.get(partition, 0):
                self._offsets[partition] = offset
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def of(self, partition: int) -> int:
        return self._offsets.get(partition, 0)

    def next_change(self) -> asyncio.Event:
        """Set at the next ``advance``."""
        return self._changed


class GroupProgress:
    def __init__(self, settings: KafkaSettings, topic: str, group: str) -> None:
        self._settings = settings
        self._topic = topic
        self._group = group
        self._consumer: Any = None
        self._partitioner = DefaultPartitioner()
        self._lock = asyncio.Lock()
        self._trail = PartitionTrail(settings, topic, group)
        self._counts: list[int] = []
        """Every partition count of the topic this client has read, the latest last."""
        self._read_at = -PARTITIONS_TTL

    async def caught_up(
        self,
        key: str,
        patience: float,
        applied: AppliedOffsets | None = None,
        types: frozenset[str] | None = None,
    ) -> bool:
        applied = applied or AppliedOffsets()
        try:
            async with asyncio.timeout(patience):
                consumer = await self._connected()
                partitions = await self._partitions_of(key.encode())
                ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
                waiting: dict[TopicPartition, int] = {}
                for partition, end in ends.items():
                    here = applied.of(partition.partition)
                    if types is not None and here < end:
                        # From what this process's members applied first: when the key's last
                        # record is below it, the group's commit need not be asked at all.
                        past = await self._past_last(partition, here, end, key, types)
                        if past is None:
                            # None: the group never committed on it (nothing to wait for if empty).
                            start = max(here, await consumer.committed(partition) or 0)
                            past = await self._past_last(partition, start, end, key, types)
                        end = end if past is None else past
                    waiting[partition] = end
                look = True
                while True:
                    changed = applied.next_change()
                    waiting = {
                        p: end for p, end in waiting.items() if applied.of(p.partition) < end
                    }
                    if look:
                        waiting = {
                            p: end
                            for p, end in waiting.items()
                            if (await consumer.committed(p) or 0) < end
                        }
                    if not waiting:
                        return True
                    # Woken by this process's members: no need to ask the broker again yet.
                    look = not await _sooner(changed, LOOK_EVERY)
        except TimeoutError:
            return False
        except KafkaError as error:
            log.warning(
                "group %s: cannot tell how far it has got (%s)", self._group, describe(error)
            )
            await self.close()  # a fresh client at the next question
            return False

    async def _past_last(
        self, partition: TopicPartition, start: int, end: int, key: str, types: frozenset[str]
    ) -> int | None:
        return await self._trail.past_last(
            partition.partition, start, end, key.encode(), types, self._counts[-1]
        )

    async def _partitions_of(self, key: bytes) -> list[TopicPartition]:
        """The Java client's partition for ``key`` (murmur2), as the publisher chooses it, under
        each partition count seen: after partitions were added, its earlier records stay where
        the fewer partitions put them."""
        if not self._counts or time.monotonic() - self._read_at >= PARTITIONS_TTL:
            partitions = await topic_partitions(self._settings, self._topic, "progress")
            if not partitions:
                raise KafkaError(f"topic {self._topic!r} does not exist")
            self._read_at = time.monotonic()
            if not self._counts or self._counts[-1] != len(partitions):
                self._counts.append(len(partitions))
        chosen = set()
        for count in self._counts:
            every = list(range(count))
            chosen.add(self._partitioner(key, every, every))
        return [TopicPartition(self._topic, partition) for partition in sorted(chosen)]

    async def _connected(self) -> Any:
        async with self._lock:
            if self._consumer is None:
                settings = self._settings
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=settings.bootstrap_servers,
                    client_id=f"{settings.client_id}-{self._group}-progress",
                    group_id=self._group,
                    enable_auto_commit=False,
                    request_timeout_ms=settings.request_timeout_ms,
                    **settings.security.client_options(),
                )
                try:
                    await consumer.start()
                except BaseException:
                    await close_quietly(consumer, settings.request_timeout_ms / 1000)
                    raise
                self._consumer = consumer
            return self._consumer

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await close_quietly(consumer, self._settings.request_timeout_ms / 1000)
        await self._trail.close()


async def _sooner(changed: asyncio.Event, seconds: float) -> bool:
    """Whether ``changed`` was set before ``seconds`` passed (waiting until one or the other)."""
    try:
        async with asyncio.timeout(seconds):
            await changed.wait()
    except TimeoutError:
        return False
    return True
