"""The locking port: named locks held across processes, and leadership of a named task.

Guarantees every adapter must give (``tests/contract/test_locks_contract.py``):

* ``holding(names)``: while one caller is inside, no other caller, in this process or any
  other sharing the adapter's database, is inside with any of the same names. Names are taken
  in one canonical order, so callers asking for overlapping sets never deadlock.
* ``lead(name, work, stop)``: ``work`` runs in at most one process at a time per name. It gets
  an event that is set when it must stop: ``stop`` was set, or leadership was lost (the
  database connection that held it broke). Another process takes over after the leader stops
  or dies (PostgreSQL: within ``LEADERSHIP_POLL`` seconds of its session ending).

Locks only order processes; what they protect still lives in the event store, so a lock
broken by a lost connection can at worst let one racing decision through, never lose or
corrupt a stored event.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager

Work = Callable[[asyncio.Event], Awaitable[None]]
"""A task run while leading; it returns once the event it is given is set."""

LEADERSHIP_POLL = 1.0
"""Seconds between a follower's attempts to become the leader."""


class Locks(ABC):
    @abstractmethod
    def holding(self, names: Iterable[str]) -> AbstractAsyncContextManager[None]:
        """Hold every lock in ``names`` (duplicates and an empty set allowed) while inside."""

    @abstractmethod
    async def lead(self, name: str, work: Work, stop: asyncio.Event) -> None:
        """Run ``work`` whenever this process leads ``name``, until ``stop`` is set."""

    @abstractmethod
    async def close(self) -> None:
        """Release everything held and every connection."""
