"""Exactly-once across the repartition step: a record sent while an event is processed joins
the transaction of the partition that event came from.

Faust (0.15) keeps one transactional producer per assigned partition and commits a producer's
transaction only when offsets consumed from *its* partition are committed. Its own ``send``
picks the producer by the *destination* partition, though. A worker fact sent while a case
event from partition 0 is processed, to the worker-facts partition 2, therefore went into
partition 2's transaction; when nothing else was consumed from partition 2 that transaction was
never committed, the broker aborted it after ``transaction.timeout.ms`` and the fact was lost,
while the case event's offset (partition 0's transaction) was committed without it. (That is
how a worker's caseload stayed empty in the end-to-end test whenever the case and the worker
hashed to different partitions.) Sending in the source partition's transaction makes the table
changes, the facts and the consumed offset commit or abort together, which is what
``exactly_once`` promises.

Faust also commits a transaction without flushing its producer's buffer first (it does flush
before a commit without transactions). Tables write their changelog through that buffer
(``send_soon``), so a table change could go into the *next* transaction while the offset of the
event that made it committed in this one: a crash before the next commit lost the change for
good (kill -9 of the worker left a case out of its worker's caseload). A commit therefore
first waits until every buffered record is in a transaction, under the app's ``processing``
lock, which both agents hold while they process one event: an event's table changes and facts
all commit in one transaction (its offset possibly in the next one, so after a crash it is read
again and is a repeat).

Faust's own ``flush`` is not that wait. It stops once the buffer's queue is empty, or when no
record left it for 0.1 s, while the buffer's sender may still hold the last record it took:
aiokafka keeps it waiting while that partition's batch is full and in flight. The record then
went into the next transaction, after its event's offset had committed in this one, and kill -9
in between lost it: the likely cause of one contact missing from a worker's day, once in several
CI runs of the kill -9 test.
So the transaction manager counts the sends it has begun and not finished (``HandOvers``), and
a commit waits until the buffer is empty and no send is under way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import ClassVar

from faust import current_event
from faust.transport.consumer import TransactionManager
from faust.transport.drivers.aiokafka import Transport as KafkaTransport
from faust.types import TP, HeadersArg, RecordMetadata, TransactionManagerT


class HandOvers:
    """Records whose send has begun and not yet put them into a producer's transaction."""

    def __init__(self) -> None:
        self.under_way = 0
        self._finished = asyncio.Event()

    @contextmanager
    def one(self) -> Iterator[None]:
        self.under_way += 1
        try:
            yield
        finally:
            self.under_way -= 1
            self._finished.set()

    async def settled(self, buffered: Callable[[], int]) -> None:
        """Return once ``buffered()`` records wait in the buffer and no send is under way.

        Every buffered record is sent through ``one`` (the buffer's sender calls the transaction
        manager), so each wait ends when a send finishes."""
        while buffered() or self.under_way:
            self._finished.clear()
            await self._finished.wait()


class SourcePartitionTransactions(TransactionManager):
    """Faust's transaction manager, routing a send to the transaction of the partition of the
    event being processed (Faust's own routing when no event is being processed)."""

    _hand_overs: HandOvers | None = None

    @property
    def hand_overs(self) -> HandOvers:
        # Made on first use: Faust builds this service before the event loop runs.
        if self._hand_overs is None:
            self._hand_overs = HandOvers()
        return self._hand_overs

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: HeadersArg | None,
        *,
        transactional_id: str | None = None,
    ) -> Awaitable[RecordMetadata]:
        with self.hand_overs.one():
            event = current_event()
            if event is None:
                return await super().send(topic, key, value, partition, timestamp, headers)
            return await self.producer.send(
                topic,
                key,
                value,
                self.consumer.key_partition(topic, key, partition),
                timestamp,
                headers,
                transactional_id=self.transactional_id_of(
                    event.message.topic, event.message.partition
                ),
            )

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Faust's commit, once every record buffered so far is in the transactions and no
        event is half processed (see the module's docstring)."""
        processing: asyncio.Lock = self.app.processing  # type: ignore[attr-defined]  # CaseloadApp
        async with processing:
            buffer = self.app.producer.buffer
            await self.hand_overs.settled(lambda: buffer.size)
            await self.app.producer.flush()
            return await super().commit(offsets, start_new_transaction=start_new_transaction)

    def transactional_id_of(self, topic: str, partition: int) -> str:
        """The transactional id Faust gives the producer of ``topic``'s ``partition`` (the
        format its ``commit`` uses)."""
        group = self.app.assignor.group_for_topic(topic)
        return f"{self.app.conf.id}-{group}-{partition}"


class SourcePartitionTransport(KafkaTransport):
    """Faust's Kafka transport with ``SourcePartitionTransactions``."""

    TransactionManager: ClassVar[type[TransactionManagerT]] = SourcePartitionTransactions
