"""Waiting in tests: for asynchronous delivery (the bus, projections) or a health status, a
bounded readiness wait, never a timing assertion; for a server to close a slow client's
connection, how long it took."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from grpc_health.v1 import health, health_pb2

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll ``probe`` until it returns something, and return that."""
    for _ in range(500):
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def health_reports(
    servicer: health.aio.HealthServicer, service: str, wanted: int
) -> Callable[[], Awaitable[int | None]]:
    """A probe for ``eventually``: ``wanted`` once ``servicer`` reports it for ``service``."""

    async def probe() -> int | None:
        response = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
        status: int = response.status
        return status if status == wanted else None

    return probe


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """How long until the server closed the connection ``reader`` reads, reading whatever it
    sends meanwhile (``TimeoutError`` if it has not within ``seconds``)."""
    began = time.monotonic()
    async with asyncio.timeout(seconds):
        while await reader.read(65536):
            pass
    return time.monotonic() - began
