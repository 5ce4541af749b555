"""How far the projections a service feeds from its own store have got, for its metrics.

Sampled every ``PROGRESS_EVERY`` seconds by each replica, never per scrape: one read of the
store's newest position (``max(position)``, the primary key's last entry) and one of each
projection's applied position, both outside any transaction, so a scrape costs nothing and
watching never holds up the projection it watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.bus.errors import is_outage
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
