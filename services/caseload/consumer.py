"""Faust's Kafka consumer, asking the broker where each changelog ends before recovery.

Before the tables are rebuilt, Faust's recovery reads where each changelog partition ends (its
highwater) and replays the changelog up to there. Under ``exactly_once`` Faust (0.15) took
that end from aiokafka's ``last_stable_offset``, which is only known once a fetch response for
the partition has come back; with the first fetch still on its way (more often the larger the
changelog) it was ``None``, recovery read the end as -1, restored nothing, logged "Recovery
complete" and went on from the committed offsets: a restarted worker started with empty tables
and every caseload, case state and contact count before the restart was lost. ``at_least_once``
asked the broker (``end_offsets``) and recovered every time.

So this consumer always asks the broker. Under ``exactly_once`` the consumer reads
``read_committed``, and the broker then answers the last stable offset, the end recovery needs
(records of a transaction still open are not read yet), without waiting for any fetch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as KafkaConsumer
from faust.types import TP


class EndOffsetsConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread whose highwaters are the broker's answer, whatever the
    processing guarantee."""

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        ends = await self._ensure_consumer().end_offsets(partitions)
        return cast(Mapping[TP, int], ends)


class EndOffsetsConsumer(KafkaConsumer):
    """Faust's aiokafka consumer with ``EndOffsetsConsumerThread``."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return EndOffsetsConsumerThread(self, loop=self.loop, beacon=self.beacon)
