"""Faust's Kafka consumer, asking the broker where each changelog ends before recovery, and
reading again the records of a partition its fetch skipped.

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

Faust takes a jump in the offsets it delivers from a partition for a gap in the log (the
markers and rolled-back records of transactions, which a ``read_committed`` fetch never
returns) and commits past it. But Faust's own fetch can skip records that are there: when a
worker starts, its recovery resumes the source partitions and seeks them to their committed
offsets while the fetcher runs, and a record fetched around the seek was neither processed nor
read again (``DEVLOG`` showed the records after it read twice). The offset after the jump was
committed all the same, and the record was lost for good: one contact in a worker's day,
after a kill -9, in about one run in eight of the test on a busy machine. So a jump is first
read again from the last offset delivered (``getmany``); only a jump the broker answers again
is a gap. The changelogs, read by recovery, are left to Faust.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import cast

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as KafkaConsumer
from faust.types import TP, Message

log = logging.getLogger(__name__)


class EndOffsetsConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread whose highwaters are the broker's answer, whatever the
    processing guarantee."""

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        ends = await self._ensure_consumer().end_offsets(partitions)
        return cast(Mapping[TP, int], ends)


class EndOffsetsConsumer(KafkaConsumer):
    """Faust's aiokafka consumer with ``EndOffsetsConsumerThread``, which reads a skipped
    record again rather than let Faust commit past it (the module's docstring)."""

    _jumps_read_again: dict[TP, tuple[int, int]] | None = None

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return EndOffsetsConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109  # Faust's signature
        """Faust's batch, less the records of a partition from its first jump past the offset
        last delivered; that partition is then read again from there."""
        read_again: dict[TP, int] = {}
        # Not the changelogs: recovery keeps its own offsets, takes a record only once, and a
        # changelog holds a marker per transaction of its history (a fetch more each).
        changelogs = self.app.tables.changelog_topics
        async for tp, message in super().getmany(timeout):
            if tp in read_again:
                continue  # comes again after the seek below
            delivered = None if tp.topic in changelogs else self._read_offset.get(tp)
            if delivered is not None and self._first_jump(tp, delivered, message.offset):
                read_again[tp] = delivered
                continue
            yield tp, message
        for tp, offset in read_again.items():
            # Debug only: every transaction's marker in the worker facts is such a jump once.
            log.debug(
                "caseload: %s/%d jumped past offset %d; reading it again from there",
                tp.topic,
                tp.partition,
                offset,
            )
            # The raw seek: Faust's own would also move its read offset, and the record
            # delivered last would then be dropped when it comes again.
            await self._seek(tp, offset)

    def _first_jump(self, tp: TP, delivered: int, offset: int) -> bool:
        """Whether ``offset`` skips a record after ``delivered`` for the first time; the same
        jump once read again is a gap in the log (``delivered`` is the offset delivered last,
        or after a seek the one to read next: reading again from it is safe in both cases)."""
        if offset <= delivered + 1:
            return False
        jump = (delivered, offset)
        if self.jumps_read_again.get(tp) == jump:
            del self.jumps_read_again[tp]
            return False
        self.jumps_read_again[tp] = jump
        return True

    @property
    def jumps_read_again(self) -> dict[TP, tuple[int, int]]:
        """Per partition, the jump last read again (made on first use: Faust builds its
        consumer before it starts)."""
        if self._jumps_read_again is None:
            self._jumps_read_again = {}
        return self._jumps_read_again
