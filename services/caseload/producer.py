"""Faust's Kafka producer, with a ``flush`` that returns once every record buffered before it
was delivered.

Tables write their changelog records through the producer's buffer (``send_soon``); Faust
flushes it before it commits offsets (``at_least_once``), and ``transactions`` does before a
transaction commits (``exactly_once``). Faust's own ``flush`` stops once the buffer's queue is
empty, or when no record left it for 0.1 s, while the buffer's sender may still hold the last
record it took: aiokafka keeps that send waiting while the record's partition has a full batch
in flight. The record then went into the next transaction (or reached aiokafka only after the
offsets committed), after its event's offset had committed, and kill -9 in between lost it: the
likely cause of one contact missing from a worker's day, once in several CI runs of the kill -9
test. A record whose send failed was only logged, and the offsets committed past it all the
same.

So this producer keeps the records of its buffer not yet delivered, and its ``flush`` waits for
the ones buffered before it started (later ones wait for the next: a busy stream cannot hold a
commit off), then raises if one failed, so that nothing is committed past it. It also commits a
transaction that has records but no offsets (``commit_records``, for ``transactions``), raising
when that fails.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from faust.transport.drivers.aiokafka import Producer as KafkaProducer
from faust.types import FutureMessage

DELIVERY_LIMIT_SECONDS = 60.0
"""How long ``flush`` waits for the buffered records: a sender stuck that long (its task ended
by an error Faust has logged) fails the commit instead of holding it forever."""


class RecordsNotDelivered(RuntimeError):
    """Records buffered before a commit were not delivered: the commit must not happen."""


class DeliveringProducer(KafkaProducer):
    """Faust's aiokafka producer whose ``flush`` waits for every record buffered before it."""

    _undelivered: set[FutureMessage] | None = None

    @property
    def undelivered(self) -> set[FutureMessage]:
        """The buffered records not delivered yet (each leaves when delivered or failed)."""
        # Made on first use: Faust builds its producer before it starts.
        if self._undelivered is None:
            self._undelivered = set()
        return self._undelivered

    def send_soon(self, fut: FutureMessage) -> None:
        undelivered = self.undelivered
        undelivered.add(fut)
        fut.add_done_callback(undelivered.discard)
        super().send_soon(fut)

    async def flush(self) -> None:
        """Faust's flush, then the wait for every record buffered before this call."""
        buffered = list(self.undelivered)
        await super().flush()
        if not buffered:
            return
        _, pending = await asyncio.wait(buffered, timeout=DELIVERY_LIMIT_SECONDS)
        if pending:
            raise RecordsNotDelivered(
                f"{len(pending)} buffered records not delivered within"
                f" {DELIVERY_LIMIT_SECONDS:.0f} s: committing past them would lose them"
            )
        failed = [fut for fut in buffered if fut.cancelled() or fut.exception() is not None]
        if failed:
            first = None if failed[0].cancelled() else failed[0].exception()
            raise RecordsNotDelivered(
                f"{len(failed)} buffered records were not sent (the first: {first!r}):"
                " committing past them would lose them"
            ) from first

    async def commit_records(self, transactional_id: str, *, start_new_transaction: bool) -> None:
        """Commit the open transaction of ``transactional_id`` with no offsets (and begin the
        next one), raising if that fails: Faust's ``commit_transaction`` only logs a failure,
        and the records would be rolled back unseen. Nothing to do once its producer stopped
        (its partition was revoked)."""
        lock = self._trn_locks.get(transactional_id)
        if lock is None:  # never begun here
            return
        async with lock:
            producer: AIOKafkaProducer | None = self._transaction_producers.get(transactional_id)
            if producer is None:
                return
            await producer.commit_transaction()
            if start_new_transaction:
                await producer.begin_transaction()
