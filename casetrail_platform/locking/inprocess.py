"""Locks for the embedded backend: one process owns the service's SQLite files, so asyncio
locks are the whole of it, and the process leads as soon as no other task of it does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

from casetrail_platform.locking.port import Locks, Work


class InProcessLocks(Locks):
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def holding(self, names: Iterable[str]) -> AsyncIterator[None]:
        ordered = sorted(set(names))
        for name in ordered:
            self._users[name] = self._users.get(name, 0) + 1
        try:
            async with AsyncExitStack() as held:
                for name in ordered:
                    await held.enter_async_context(self._locks.setdefault(name, asyncio.Lock()))
                yield
        finally:
            for name in ordered:
                # Forget a lock nobody holds or waits for, so names do not pile up.
                self._users[name] -= 1
                if not self._users[name]:
                    del self._users[name]
                    del self._locks[name]

    async def lead(self, name: str, work: Work, stop: asyncio.Event) -> None:
        """Nobody else can lead: only other tasks of this process ask, one after the other."""
        async with self.holding([f"\x00lead:{name}"]):
            if not stop.is_set():
                await work(stop)

    async def close(self) -> None:
        """Nothing to release: locks end with the process."""
