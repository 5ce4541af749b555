"""Waiting for asynchronous delivery (the bus, projections) in tests: a bounded readiness wait,
never a timing assertion."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll ``probe`` until it returns something, and return that."""
    for _ in range(500):
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")
