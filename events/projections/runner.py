"""Feeding projections: from the service's own store, or from the bus, exactly once in effect."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from events.envelope import RecordedEvent
from events.projections.port import Projection, ReadModelStore, stream_key
from events.store.port import EventStore

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called with (position reached, last position of the store) while catching up."""


async def catch_up(
    store: EventStore,
    read_models: ReadModelStore,
    projection: Projection,
    *,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
) -> int:
    """Apply every event the projection has not seen yet; return the position reached.

    Each batch is one transaction that also moves the projection's position, so a crash
    repeats no event and loses none.
    """
    async with read_models.transaction() as transaction:
        position = await transaction.position(projection.name)
    target = await store.last_position() if progress is not None else 0
    while True:
        batch = await store.read_all(position, batch_size)
        if not batch:
            return position
        async with read_models.transaction() as transaction:
            # Another caller (a handler wanting read-your-writes) may have moved on meanwhile.
            applied = await transaction.position(projection.name)
            for recorded in batch:
                if recorded.position > applied:
                    await projection.apply(transaction, recorded)
            position = max(applied, batch[-1].position)
            await transaction.set_position(projection.name, position)
        if progress is not None:
            progress(position, max(target, position))


async def follow(
    store: EventStore,
    read_models: ReadModelStore,
    projection: Projection,
    stop: asyncio.Event,
    *,
    idle_wait: float = 0.5,
) -> None:
    """Keep a projection up to date with its store until ``stop`` is set."""
    while not stop.is_set():
        position = await catch_up(store, read_models, projection)
        appended = asyncio.ensure_future(store.wait_for_append(position, idle_wait))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({appended, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (appended, stopped):
            waiter.cancel()


async def rebuild(
    store: EventStore,
    read_models: ReadModelStore,
    projection: Projection,
    *,
    progress: ProgressCallback | None = None,
) -> int:
    """Throw the projection's documents away and replay every event from zero."""
    await read_models.reset(projection.name, projection.collections)
    return await catch_up(store, read_models, projection, progress=progress)


class BusProjectionHandler:
    """A bus handler that applies other services' events to a projection exactly once.

    The bus may deliver an event again (a relay re-publishing after a crash, a consumer that
    stopped before committing). The last applied sequence of each source stream is kept in
    the projection's own transaction, so a repeat is recognised and changes nothing.
    """

    def __init__(self, read_models: ReadModelStore, projection: Projection) -> None:
        self._read_models = read_models
        self._projection = projection

    async def __call__(self, recorded: RecordedEvent) -> None:
        name = self._projection.name
        key = stream_key(recorded)
        async with self._read_models.transaction() as transaction:
            applied = await transaction.applied_sequence(name, key)
            if recorded.sequence <= applied:
                return
            if recorded.sequence != applied + 1 and applied != 0:
                log.warning(
                    "projection %s: %s jumped from sequence %d to %d",
                    name,
                    key,
                    applied,
                    recorded.sequence,
                )
            await self._projection.apply(transaction, recorded)
            await transaction.set_applied_sequence(name, key, recorded.sequence)
