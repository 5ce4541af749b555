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
good (kill -9 of the worker left a case out of its worker's caseload). A commit therefore first
flushes the buffer (``producer.DeliveringProducer``: Faust's own flush could return while a
record it took was still on its way), under the app's ``processing`` lock, which the case-event
agent holds while it processes one event: an event's table change and facts all commit in one
transaction (its offset possibly in the next one, so after a crash it is read again and is a
repeat). The worker-fact agent needs no lock: it changes its tables without awaiting anything,
so no commit can start in the middle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import ClassVar

from faust import current_event
from faust.transport.consumer import TransactionManager
from faust.transport.drivers.aiokafka import Transport as KafkaTransport
from faust.types import TP, ConsumerT, HeadersArg, ProducerT, RecordMetadata, TransactionManagerT

from services.caseload.consumer import EndOffsetsConsumer
from services.caseload.producer import DeliveringProducer


class SourcePartitionTransactions(TransactionManager):
    """Faust's transaction manager, routing a send to the transaction of the partition of the
    event being processed (Faust's own routing when no event is being processed)."""

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
            transactional_id=self.transactional_id_of(event.message.topic, event.message.partition),
        )

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Faust's commit, once every record buffered so far is in the transactions and no
        case event is half processed (see the module's docstring)."""
        processing: asyncio.Lock = self.app.processing  # type: ignore[attr-defined]  # CaseloadApp
        async with processing:
            await self.app.producer.flush()
            return await super().commit(offsets, start_new_transaction=start_new_transaction)

    def transactional_id_of(self, topic: str, partition: int) -> str:
        """The transactional id Faust gives the producer of ``topic``'s ``partition`` (the
        format its ``commit`` uses)."""
        group = self.app.assignor.group_for_topic(topic)
        return f"{self.app.conf.id}-{group}-{partition}"


class SourcePartitionTransport(KafkaTransport):
    """Faust's Kafka transport with ``SourcePartitionTransactions``, a producer whose
    ``flush`` waits for every record buffered before it (``DeliveringProducer``) and a
    consumer that asks the broker where the changelogs end before recovery
    (``EndOffsetsConsumer``)."""

    TransactionManager: ClassVar[type[TransactionManagerT]] = SourcePartitionTransactions
    Producer: ClassVar[type[ProducerT]] = DeliveringProducer
    Consumer: ClassVar[type[ConsumerT]] = EndOffsetsConsumer
