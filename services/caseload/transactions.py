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

Faust commits only the transactions of the partitions whose offsets it commits. A record sent
to any other producer's transaction (a changelog record Faust's own routing placed by its
destination partition, or a fact of an event whose offset waits for the next commit) stayed in
an open transaction until the broker rolled it back after ``transaction.timeout.ms`` (60 s):
the views lagged that long behind it, and a record rolled back came back only if its event
was read again. So a commit also commits every transaction that received a record since the
previous commit; a record committed before its event's offset only makes that event a repeat
after a crash, which the folds absorb.
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
    event being processed (Faust's own routing when no event is being processed), and
    committing every transaction that received a record (see the module's docstring)."""

    _sent_since_commit: set[str] | None = None

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
        destination = self.consumer.key_partition(topic, key, partition)
        event = current_event()
        if event is not None:
            transactional_id = self.transactional_id_of(
                event.message.topic, event.message.partition
            )
        elif destination is not None:  # Faust's own routing
            transactional_id = self.transactional_id_of(topic, destination)
        else:  # no partition yet: Faust sends it outside every transaction
            transactional_id = None
        sending = await self.producer.send(
            topic,
            key,
            value,
            destination,
            timestamp,
            headers,
            transactional_id=transactional_id,
        )
        if transactional_id is not None:  # taken into its open transaction
            self.sent_since_commit.add(transactional_id)
        return sending

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Faust's commit, once every record buffered so far is in the transactions and no
        case event is half processed (see the module's docstring)."""
        processing: asyncio.Lock = self.app.processing  # type: ignore[attr-defined]  # CaseloadApp
        async with processing:
            await self.app.producer.flush()
            # Swapped, not cleared after: a record sent while these commit is in the set the
            # next commit takes.
            sent, self._sent_since_commit = self.sent_since_commit, set()
            committed = await super().commit(offsets, start_new_transaction=start_new_transaction)
            await self._commit_without_offsets(
                sent - {self.transactional_id_of(tp.topic, tp.partition) for tp in offsets},
                start_new_transaction=start_new_transaction,
            )
            return committed

    @property
    def sent_since_commit(self) -> set[str]:
        """The transactional ids that received a record since the previous commit."""
        # Made on first use: Faust builds its transaction manager before it starts.
        if self._sent_since_commit is None:
            self._sent_since_commit = set()
        return self._sent_since_commit

    async def _commit_without_offsets(
        self, transactional_ids: set[str], *, start_new_transaction: bool
    ) -> None:
        """Commit (and begin again) the open transactions of ``transactional_ids``, which
        received records but have no offsets to commit this time."""
        producer: DeliveringProducer = self.producer  # type: ignore[assignment]  # the transport's
        for transactional_id in sorted(transactional_ids):
            await producer.commit_records(
                transactional_id, start_new_transaction=start_new_transaction
            )

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP]
    ) -> None:
        """Faust's, after forgetting the records sent to the transactions of ``revoked``
        partitions: their producers stop, and the partitions' new owner aborts what they left
        open (their events' offsets were not committed either)."""
        self.sent_since_commit.difference_update(
            self.transactional_id_of(tp.topic, tp.partition) for tp in revoked
        )
        await super().on_rebalance(assigned, revoked, newly_assigned)

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
