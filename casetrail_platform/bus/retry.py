"""Backoff for retries, and waits that end early when the caller is asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with a ceiling. Jitter spreads the retries of many consumers that
    failed together (e.g. on a broker restart) so they do not all hit it at the same moment."""

    initial: float = 0.1
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.multiplier < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter must be in [0, 1)")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1 for the first),
        however many: an outage may last for thousands of them."""
        # Bounded, and as a float: an int multiplier raised to a count in the millions would
        # take the loop's time, and a float one overflows (2.0 ** 1024), both far past the
        # ceiling already.
        exponent = min(max(0, failures - 1), 1024)
        try:
            grown = self.initial * float(self.multiplier) ** exponent
        except OverflowError:
            grown = self.maximum
        base = min(self.maximum, grown)
        return base * (1 - self.jitter * random.random())


OUTAGE_BACKOFF = Backoff(initial=0.2, maximum=2.0)
"""Between attempts while a database is away (``casetrail_platform.bus.errors.is_outage``): short,
so that consumers and projections are going again within a couple of seconds of its return."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a subscriber retries a handler that raised a retriable error.

    ``max_attempts`` counts every call of the handler for one message; once reached, the
    message is dead-lettered so that it cannot block its partition. ``None`` retries forever,
    for consumers that must never skip an event and prefer to stall. Calls failing on an
    outage of the handler's storage or on a barrier not reached yet (``BarrierNotReachedError``)
    are not counted: those are retried for as long as they last.
    """

    backoff: Backoff = field(default_factory=Backoff)
    max_attempts: int | None = 10
    outage_backoff: Backoff = OUTAGE_BACKOFF
    """Between attempts while the handler's database is away: not counted in
    ``max_attempts``, retried for as long as the outage lasts."""

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None for no limit)")

    def gives_up_after(self, attempts: int) -> bool:
        return self.max_attempts is not None and attempts >= self.max_attempts


def never_set() -> asyncio.Event:
    return asyncio.Event()


async def sleep_unless_stopped(delay: float, stop: asyncio.Event) -> bool:
    """Sleep ``delay`` seconds; return ``True`` at once if ``stop`` is (or becomes) set."""
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
    return stop.is_set()


class Stopped(Exception):
    """``until_stopped`` gave up on its awaitable because stop was requested."""


async def until_stopped(awaitable: Awaitable[T], stop: asyncio.Event) -> T:
    """Await ``awaitable``, cancelling it and raising ``Stopped`` if ``stop`` is set first.

    Used around calls that can block for as long as a broker is down (commits, sends), so
    that a shutdown request is honoured even then.
    """
    work = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not work.done():
            work.cancel()
        await asyncio.gather(work, stopper, return_exceptions=True)
    if work.cancelled():
        raise Stopped
    return work.result()
