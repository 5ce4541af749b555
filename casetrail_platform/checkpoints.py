"""Where a follower of the event store remembers how far it got (e.g. the outbox relay).

Projections do not use this: they keep their tracking inside the read model's own
transaction (see ``casetrail_platform.projections``). The relay can use a plain checkpoint because
publishing twice is harmless (consumers are idempotent) while skipping would lose events,
so it saves only after the bus acknowledged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class CheckpointStore(ABC):
    @abstractmethod
    async def load(self, name: str) -> int:
        """The saved position of ``name`` (0 if never saved)."""

    @abstractmethod
    async def save(self, name: str, position: int) -> None:
        """Durably save ``position``; a position lower than the saved one is ignored."""


class InMemoryCheckpointStore(CheckpointStore):
    """For unit tests and throwaway runs."""

    def __init__(self) -> None:
        self._positions: dict[str, int] = {}

    async def load(self, name: str) -> int:
        return self._positions.get(name, 0)

    async def save(self, name: str, position: int) -> None:
        self._positions[name] = max(position, self._positions.get(name, 0))
