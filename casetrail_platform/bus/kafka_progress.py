"""How far a Kafka consumer group has got in one key's partition (``EventSubscriber.caught_up``).

One client per group, opened at the first question and kept: it never subscribes nor joins the
group (a consumer with the group's id only to read its committed offsets), so the group's
members are not rebalanced by it. Each question costs one ``ListOffsets`` request for the
partition's end, then one ``OffsetFetch`` per look at the group's commit. The topic's
partitions are read again once ``PARTITIONS_TTL`` has passed: partitions added to the topic
move some keys to a new partition (the publisher's murmur2 over more partitions), so a key is
waited for on its partition under every partition count this client has seen, where its
earlier and its later records are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from casetrail_platform.bus.kafka_clients import close_quietly, describe, topic_partitions
from casetrail_platform.bus.kafka_settings import KafkaSettings

log = logging.getLogger(__name__)

LOOK_EVERY = 0.02
"""Seconds between looks at the group's committed offset while it is short of the end."""

PARTITIONS_TTL = 30.0
"""Seconds the topic's partitions are taken as read before the next question reads them again
(one admin request): a publisher learns of added partitions with its metadata, within
minutes, so a barrier asked later looks at the new ones well before records go there."""


class GroupProgress:
    def __init__(self, settings: KafkaSettings, topic: str, group: str) -> None:
        self._settings = settings
        self._topic = topic
        self._group = group
        self._consumer: Any = None
        self._partitioner = DefaultPartitioner()
        self._lock = asyncio.Lock()
        self._counts: list[int] = []
        """Every partition count of the topic this client has read, the latest last."""
        self._read_at = -PARTITIONS_TTL

    async def caught_up(self, key: str, patience: float) -> bool:
        try:
            async with asyncio.timeout(patience):
                consumer = await self._connected()
                partitions = await self._partitions_of(key.encode())
                ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
                waiting = list(partitions)
                while True:
                    # None: the group never committed on it (nothing to wait for if empty).
                    waiting = [
                        partition
                        for partition in waiting
                        if (await consumer.committed(partition) or 0) < ends[partition]
                    ]
                    if not waiting:
                        return True
                    await asyncio.sleep(LOOK_EVERY)
        except TimeoutError:
            return False
        except KafkaError as error:
            log.warning(
                "group %s: cannot tell how far it has got (%s)", self._group, describe(error)
            )
            await self.close()  # a fresh client at the next question
            return False

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
