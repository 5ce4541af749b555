"""How far the projections a service feeds from its own store have got, for its metrics and
its health.

Sampled every ``PROGRESS_EVERY`` seconds by each replica, never per scrape: one read of the
store's newest position (``max(position)``, the primary key's last entry) and one of each
projection's applied position, both outside any transaction, so a scrape costs nothing and
watching never holds up the projection it watches. A projection that failed on something
other than an outage (``StalledProjections``) is its own health entry's NOT_SERVING until it
gets past where it stood.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from grpc_health.v1 import health

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.bus.errors import is_outage
from casetrail_platform.health import serving_status
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.store.port import EventStore
from casetrail_platform.telemetry.metrics import process_metrics

log = logging.getLogger(__name__)

PROGRESS_EVERY = 2.0
"""Seconds between samples: as often as the outbox's gauges are set."""


async def observe_own_projections(
    service: str, store: EventStore, read_models: ReadModelStore, projections: Sequence[str]
) -> None:
    """Set the gauges of ``projections`` (names) fed from ``service``'s ``store`` once."""
    # The positions first, the head after: whatever is appended in between only adds to the
    # events behind, never makes a projection look ahead of its store.
    positions = [await read_models.applied_position(name) for name in projections]
    head = await store.last_position()
    metrics = process_metrics()
    for name, position in zip(projections, positions, strict=True):
        metrics.observe_own_projection(service, name, position, head)


async def watch_own_projections(
    service: str,
    store: EventStore,
    read_models: ReadModelStore,
    projections: Sequence[str],
    stop: asyncio.Event,
    *,
    every: float = PROGRESS_EVERY,
) -> None:
    """Sample ``observe_own_projections`` every ``every`` seconds until ``stop`` is set. While
    the database is away the gauges keep their last values (the projection waits too)."""
    failing = False
    while not stop.is_set():
        try:
            await observe_own_projections(service, store, read_models, projections)
        except Exception as error:
            if not failing:
                # By type and place for anything but an outage, as the projection's own loop
                # logs: nothing of an event is quoted.
                why = str(error) if is_outage(error) else failure_text(error)
                log.warning("%s: projection progress not sampled: %s", service, why)
            failing = True
        else:
            failing = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def projection_health(service: str, projection: str) -> str:
    """The health entry of a projection fed from ``service``'s own store."""
    return f"casetrail.{service}.projection.{projection}"


class StalledProjections:
    """Own-store projections that failed on something other than an outage (a bug, an event
    one cannot apply), each until its applied position gets past where it stood then, or
    reaches the store's newest (what failed was no event): in every replica, whichever
    follows the store, since they share the read models."""

    def __init__(self) -> None:
        self._stood_at: dict[str, int | None] = {}
        """By projection: its applied position after the failure (``None``: not read yet)."""

    def failed(self, projection: str) -> None:
        self._stood_at.setdefault(projection, None)

    def stalled(self, projection: str) -> bool:
        return projection in self._stood_at

    async def look(self, store: EventStore, read_models: ReadModelStore) -> None:
        """Forget the projections that got past where they stood (nothing read when none
        is stalled)."""
        if not self._stood_at:
            return
        # The head first: a position read after it and past it is a projection moving too.
        head = await store.last_position()
        for name, stood in list(self._stood_at.items()):
            position = await read_models.applied_position(name)
            if position >= head or (stood is not None and position > stood):
                del self._stood_at[name]
            elif stood is None:
                self._stood_at[name] = position


async def watch_projection_health(
    service: str,
    store: EventStore,
    read_models: ReadModelStore,
    projections: Sequence[str],
    stalls: StalledProjections,
    health_servicer: health.aio.HealthServicer,
    stop: asyncio.Event,
    *,
    every: float = PROGRESS_EVERY,
) -> None:
    """Report each of ``projections`` as ``projection_health``: NOT_SERVING while it is
    stalled (``StalledProjections``). The service itself stays SERVING: its other
    projections, commands and queries go on, and a handler that must read the stalled
    projection's writes catches it up itself and fails as it does. While the database is
    away the entries keep their last status (``casetrail.<service>.database`` says why)."""
    reported: dict[str, bool] = {}
    failing = False
    while not stop.is_set():
        try:
            await stalls.look(store, read_models)
        except Exception as error:
            if not failing and not is_outage(error):  # an outage: the database entry's
                log.warning("%s: projection health not sampled: %s", service, failure_text(error))
            failing = True
        else:
            failing = False
        for name in projections:
            healthy = not stalls.stalled(name)
            if reported.get(name) != healthy:
                entry = projection_health(service, name)
                if not healthy:
                    log.error("%s: the projection is stalled on a failure; not serving", entry)
                elif name in reported:
                    log.warning("%s: the projection is moving again; serving", entry)
                await health_servicer.set(entry, serving_status(healthy))
                reported[name] = healthy
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
