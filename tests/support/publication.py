"""A stand-in for the relay's answer to ``published`` (``decide.Published``), for tests of a
command that is answered only once the bus has its events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from casetrail_platform.store.port import EventStore

T = TypeVar("T")

HELD_FOR = 0.2
"""How long a test watches a command not answered while the bus has not acknowledged it."""


class HeldPublication:
    """``published`` held until ``acknowledged`` is set (or answering ``False`` at once while
    ``down``: the bus did not take it in time); ``asked``: the positions asked about."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.acknowledged = asyncio.Event()
        self.down = False

    async def published(self, position: int) -> bool:
        self.asked.append(position)
        if self.down:
            return False
        await self.acknowledged.wait()
        return True

    async def answered_once_acknowledged(
        self, store: EventStore, stream: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        """``call``'s answer, given only once the stream's last event is acknowledged: on the
        first attempt, and again on its retry (``call`` sends the same command again), which
        answers the same."""
        answers: list[T] = []
        for _attempt in range(2):
            self.acknowledged.clear()
            self.asked.clear()
            answering = asyncio.ensure_future(call())
            await asyncio.sleep(HELD_FOR)
            assert not answering.done(), "answered before the bus acknowledged it"
            assert self.asked == [(await store.read_stream(stream))[-1].position]
            self.acknowledged.set()
            answers.append(await answering)
        first, retried = answers
        assert retried == first
        return first
