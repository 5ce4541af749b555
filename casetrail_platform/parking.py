"""Parked records: stored events the outbox relay has set aside instead of publishing.

A record the bus refuses for good (Kafka: too large for the topic, an invalid timestamp) would
otherwise stop a service's publishing for ever, since stored events cannot be changed or
deleted. The relay parks it here, with the reason, and goes on with the rest. So that no
consumer ever sees a case's later events without the parked one, every later record with the
same key (the case) is parked behind it ("held"), until an operator asks for a retry (e.g.
after raising the topic's ``max.message.bytes``): the relay then publishes that case's parked
records in their order and releases them. Other cases are not affected.

Rows hold positions, ids, stream names and reasons only: the event itself stays in the store,
and nothing sensitive is copied here. The lot lives beside the relay's checkpoint (same
database), and a record is parked durably before the checkpoint moves past it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    relay: str
    position: int
    event_id: UUID
    key: str
    """The record's bus key: the event's subject (the case id, the client id for client
    events). Every later record with this key is parked behind the first one."""
    stream: str
    sequence: int
    event_type: str
    reason: str
    """Why: the bus's refusal (``refused: ...``) or ``held: ...`` behind an earlier one."""
    parked_at: datetime
    retry_requested: bool = False


class ParkingLot(ABC):
    @abstractmethod
    async def park(self, records: Sequence[ParkedRecord]) -> None:
        """Durably add ``records`` (parking one twice keeps the first)."""

    @abstractmethod
    async def parked(self, relay: str) -> list[ParkedRecord]:
        """``relay``'s parked records, by position."""

    @abstractmethod
    async def request_retry(self, relay: str, key: str | None = None) -> int:
        """Ask ``relay`` to publish the parked records of ``key`` (every key: ``None``) again;
        returns how many records that covers. The relay acts on it within seconds."""

    @abstractmethod
    async def retry_done(
        self, relay: str, key: str, refused: tuple[int, str] | None = None
    ) -> None:
        """Clear the retry request of ``key`` (the relay tried, and the records stay). With
        ``refused`` (a position, the bus's refusal), that record's reason becomes the refusal,
        in the same write: it may have been held behind one the retry published."""

    @abstractmethod
    async def release(self, relay: str, positions: Sequence[int]) -> None:
        """Forget these parked records: they have been published."""


class InMemoryParkingLot(ParkingLot):
    """For unit tests and buses that forget on restart (their relay starts from 0 anyway)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, int], ParkedRecord] = {}

    async def park(self, records: Sequence[ParkedRecord]) -> None:
        for record in records:
            self._records.setdefault((record.relay, record.position), record)

    async def parked(self, relay: str) -> list[ParkedRecord]:
        return sorted(
            (record for (name, _), record in self._records.items() if name == relay),
            key=lambda record: record.position,
        )

    async def request_retry(self, relay: str, key: str | None = None) -> int:
        chosen = [r for r in await self.parked(relay) if key is None or r.key == key]
        for record in chosen:
            self._records[(relay, record.position)] = replace(record, retry_requested=True)
        return len(chosen)

    async def retry_done(
        self, relay: str, key: str, refused: tuple[int, str] | None = None
    ) -> None:
        for record in await self.parked(relay):
            if record.key == key:
                done = replace(record, retry_requested=False)
                if refused is not None and record.position == refused[0]:
                    done = replace(done, reason=refused[1])
                self._records[(relay, record.position)] = done

    async def release(self, relay: str, positions: Sequence[int]) -> None:
        for position in positions:
            self._records.pop((relay, position), None)
