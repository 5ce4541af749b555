"""The event bus ports: publishing recorded events and consuming them in a consumer group.

Guarantees every adapter gives (checked by ``tests/contract/test_bus_contract.py``):

* ``publish`` returns only once the bus has durably accepted every record; if it raises,
  the caller must assume none was and publish them all again (duplicates are allowed,
  loss is not).
* Records are keyed by their subject (the case id): records of one case keep their
  order for every consumer.
* A consumer group sees every record at least once. Its handler is called for one record
  at a time per partition, and a record's offset is committed only after the handler
  returned, so a consumer that stops or dies mid-way gets the uncommitted records again.
  Handlers must therefore be idempotent (dedupe by ``event_id``).
* A record that cannot be decoded, whose type is unknown, or whose handler fails for good
  goes to the group's dead-letter queue with the reason, and consumption goes on: one bad
  record never stops a consumer nor blocks its partition.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

from events.envelope import RecordedEvent

Handler = Callable[[RecordedEvent], Awaitable[None]]
"""Called once per delivered record. Raise ``RetriableHandlerError`` to have it retried."""

AssignmentListener = Callable[[frozenset[int]], None]
"""Told the partitions a group member owns after each rebalance (for health and tests)."""


class EventPublisher(ABC):
    @property
    def durable(self) -> bool:
        """Whether published records survive a restart of this process.

        An outbox relay in front of a non-durable bus re-publishes from the start of the
        store on every start instead of from its saved checkpoint.
        """
        return True

    @abstractmethod
    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        """Publish ``records`` in order; return once all are durably acknowledged.

        Raises ``PublishError`` if any record may not have been accepted.
        """


class EventSubscriber(ABC):
    @abstractmethod
    async def run(
        self,
        group: str,
        handler: Handler,
        stop: asyncio.Event | None = None,
        *,
        on_assignment: AssignmentListener | None = None,
    ) -> None:
        """Consume as a member of consumer ``group`` until ``stop`` is set.

        Setting ``stop`` is a graceful stop: the record in hand is finished and committed.
        Cancelling the task abandons the record in hand uncommitted (it is redelivered).
        Several ``run`` calls with the same group share its partitions.
        """
