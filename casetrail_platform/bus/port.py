"""The event bus ports: publishing recorded events and consuming them in a consumer group.

Guarantees every adapter gives (checked by ``tests/contract/test_bus_contract.py``):

* ``publish`` returns only once the bus has durably accepted every record; if it raises,
  the caller must assume none was and publish them all again (duplicates are allowed,
  loss is not). ``enqueue`` is the same split in two, so that a caller can hand over the
  next records while earlier ones are still on their way.
* Records are keyed by their subject (the case id): records of one case keep their
  order for every consumer, across ``publish`` and ``enqueue`` calls alike.
* A consumer group sees every record at least once. Its handler gets the records of each
  partition in order: a ``Handler`` one record at a time, a ``BatchHandler`` in batches of
  consecutive records of one partition (at most what one poll returned). A record's offset
  is committed only after the handler returned for it (for its batch), so a consumer that
  stops or dies mid-way gets the uncommitted records again. Handlers must therefore be
  idempotent (dedupe by ``event_id``, or by stream sequence).
* A group may ask for some event types only: records of other types are skipped undecoded
  (committed, not dead-lettered).
* A record that cannot be decoded, whose type is unknown, or whose handler fails for good
  goes to the group's dead-letter queue with the reason, and consumption goes on: one bad
  record never stops a consumer nor blocks its partition.
* A batch whose handler meets an outage of its own storage
  (``casetrail_platform.bus.errors.is_outage``: a database restarting or failing over) is retried
  whole for as long as the outage lasts, outside the retry policy: the consumer pauses, and the
  event is never dead-lettered for it.
* A batch whose handler waits for a group to catch up (``BarrierNotReachedError``: a barrier,
  ``caught_up``, not reached yet) is retried whole, with backoff up to its ceiling, for as long
  as that takes: outside the retry policy's attempts, never dead-lettered for it.
* A batch whose handler raises a retriable error is retried whole, with backoff. One that
  fails otherwise (or runs out of retries) is handed over again one record at a time, so
  that only the record at fault is dead-lettered; a ``BatchHandler`` must therefore apply
  a batch all or nothing (one transaction), or tolerate seeing its records again.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from events.envelope import RecordedEvent

if TYPE_CHECKING:
    from casetrail_platform.bus.ordering import SequenceGuard

Handler = Callable[[RecordedEvent], Awaitable[None]]
"""Called once per delivered record. Raise ``RetriableHandlerError`` to have it retried."""


@runtime_checkable
class BatchHandler(Protocol):
    """A handler that takes consecutive records of one partition at once (e.g. to apply them
    in one transaction). An object with ``handle_batch`` is fed through it even if it is
    also callable; a batch of one is how a single record is retried or isolated."""

    async def handle_batch(self, records: Sequence[RecordedEvent]) -> None: ...


AssignmentListener = Callable[[frozenset[int]], None]
"""Told the partitions a group member owns after each rebalance (for health and tests)."""

Acknowledgement = asyncio.Future[None]
"""Completes once the bus acknowledged every record of an ``enqueue`` call; fails with
``PublishError`` if some record may not have been accepted."""


class Refill(Protocol):
    """An outbox relay's refill of a bus that is not ``durable``, as the relay tells the bus of
    it (``EventPublisher.republishing``). Until it has ``ended``, the bus does not hold all
    that the store held when the relay started, and its barriers (``caught_up``) wait: for
    everything, or, once the relay has told what its store held (``store_held``), for the
    case asked about only."""

    def store_held(self, last_positions: Mapping[str, Mapping[str, int]]) -> None:
        """What the store held as the relay started: per bus key (a record's subject, the case
        id), per event type, the last position holding a record of them. A barrier for a key
        then waits until the relay has ``published`` up to the last of them (of the types it
        is asked about), not for the whole store: the access records of other cases, say."""

    def published(self, position: int) -> None:
        """Everything of the store up to ``position`` is on the bus (or parked)."""

    def ended(self) -> None:
        """Everything the store held when the relay started is on the bus (or parked), or the
        relay stopped (the store's next relay tells the bus anew)."""


def already_acknowledged() -> Acknowledgement:
    """An acknowledgement that has completed (for records the bus has already accepted)."""
    acknowledged: Acknowledgement = asyncio.get_running_loop().create_future()
    acknowledged.set_result(None)
    return acknowledged


class EventPublisher(ABC):
    @property
    def durable(self) -> bool:
        """Whether published records survive a restart of this process.

        An outbox relay in front of a non-durable bus re-publishes from the start of the
        store on every start instead of from its saved checkpoint.
        """
        return True

    def republishing(self) -> Refill | None:
        """Told by an outbox relay as it is made, before it publishes anything: for a bus
        that is not ``durable``, which it will refill from the start of its store. Returns
        what the relay tells of its refill (``Refill``; ``None``: nothing to tell, a durable
        bus keeps what was published before). Until every relay so told has ended its refill,
        such a bus does not hold all that was recorded yet, and ``EventSubscriber.caught_up``
        waits for them too (for the case asked about, once a relay has told what its store
        held)."""
        return None

    @abstractmethod
    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        """Publish ``records`` in order; return once all are durably acknowledged.

        Raises ``PublishError`` if any record may not have been accepted.
        """

    async def enqueue(self, records: Sequence[RecordedEvent]) -> Acknowledgement:
        """Hand ``records`` to the bus in order, behind those of earlier calls, and return
        without waiting for the bus to acknowledge them: await the result for that.

        Once one acknowledgement fails, those of later calls may complete or fail too, but
        nothing may be taken as published after the failed one, and later calls may be
        refused until ``resume``. Raises ``PublishError`` at
        once if the records cannot even be handed over. This default publishes before
        returning, for buses that acknowledge at once.
        """
        await self.publish(records)
        return already_acknowledged()

    async def resume(self) -> None:
        """The caller starts publishing again from its last acknowledged record, giving up
        on every acknowledgement still pending. After a failed acknowledgement a publisher
        may refuse (``PublishError``) every ``enqueue`` until this is called, so that
        records handed over behind a failure, before the caller noticed it, can never
        overtake the failed ones. This default has nothing to reset."""
        return None


class EventSubscriber(ABC):
    @abstractmethod
    async def run(
        self,
        group: str,
        handler: Handler | BatchHandler,
        stop: asyncio.Event | None = None,
        *,
        on_assignment: AssignmentListener | None = None,
        event_types: frozenset[str] | None = None,
        ordering: SequenceGuard | None = None,
    ) -> None:
        """Consume as a member of consumer ``group`` until ``stop`` is set.

        Setting ``stop`` is a graceful stop: the batch in hand is finished and committed.
        Cancelling the task abandons the batch in hand uncommitted (it is redelivered).
        Several ``run`` calls with the same group share its partitions.

        ``event_types``: the only event types the handler is given (``None``: every type).
        Records of other types (by their ``ce_type`` header) are not even decoded: they are
        committed past as handled, and are never dead letters of this group.

        ``ordering``: a guard that withholds a case's records arriving before an earlier one
        of their stream until it comes (``casetrail_platform.bus.ordering``); withheld records stay
        uncommitted. Its ``status()`` reports gaps.
        """

    @abstractmethod
    async def caught_up(
        self, group: str, key: str, *, patience: float, types: frozenset[str] | None = None
    ) -> bool:
        """Whether consumer ``group`` has handled every record of ``key``'s partition (the
        partition a record keyed ``key``, a case id, goes to) that was on the bus when this was
        called, waiting up to ``patience`` seconds for it: the partition's end is read once,
        then the group's committed offset is watched until it reaches it.

        ``False`` if it did not in time, or if the bus could not be asked (it is down). A
        group commits only after its handler returned (a ``BatchHandler``'s transaction
        committed), so ``True`` means the handler applied those records, or dead-lettered one
        it gave up on. A record the ordering guard withholds keeps its partition short of the
        end until the missing one comes.

        ``types``: only the records keyed ``key`` of these event types (``ce_type``) are waited
        for, the last of them on the bus when asked and every record before it; the others
        after the group's position are looked at, not waited for (on Kafka, read once from
        the partition, unless there are more than ``kafka_trail.PEEK_LIMIT``: then the whole
        partition is waited for).

        On a bus that is not ``durable`` (rebuilt from the stores at each start), the end is
        read once every relay refilling it has published what its store held of ``key`` (of
        ``types``) when it started (``EventPublisher.republishing``; all its store held until
        it has told what that is; or stopped), within the same ``patience``: so the end counts
        everything of the case recorded before the start, whatever the relays' pace.
        """

    async def close(self) -> None:
        """Let go of connections ``caught_up`` opened (the bus's own; nothing by default)."""
        return None
