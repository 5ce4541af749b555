"""Feeding projections: from the service's own store, or from the bus, exactly once in effect."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.bus.errors import is_outage
from casetrail_platform.bus.retry import OUTAGE_BACKOFF, sleep_unless_stopped
from casetrail_platform.projections.port import Projection, ReadModelStore
from casetrail_platform.store.port import EventStore
from casetrail_platform.telemetry.metrics import observe_projection
from casetrail_platform.telemetry.tracing import projection_span
from events.catalog.erasure import ClientErased
from events.envelope import RecordedEvent

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called with (position reached, last position of the store) while catching up."""

RETIRE_AGAIN_SECONDS = 300.0
"""How often a bus-fed projection deletes again what its retired layouts hold
(``Projection.retired``): one transaction deleting nothing, once the upgrade is done."""


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
    repeats no event and loses none. A batch holding an erasure also marks that the values it
    overwrote are to leave the files (``mark_overwritten``): when forgetting them fails after
    the commit (an older snapshot open past ``ERASURE_FORGET_PATIENCE_SECONDS``) or the process
    ends first, the position is past the erasure and the next catch-up forgets before it goes
    on.
    """
    await read_models.forget_if_pending()
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
            if applied < position:
                # Reset meanwhile (`casetrail rebuild` beside the running service): the batch
                # starts past where the projection now stands, and moving the position over
                # the events in between would leave them out of the rebuilt one for good.
                position = applied
                continue
            wanted = projection.wanted_types
            for recorded in batch:
                if recorded.position > applied and (
                    wanted is None or recorded.event_type in wanted
                ):
                    await projection.handle(transaction, recorded)
            if any(_is_erasure(r) and r.position > applied for r in batch):
                await transaction.mark_overwritten()
            position = max(applied, batch[-1].position)
            await transaction.set_position(projection.name, position)
        if any(_is_erasure(r) for r in batch):
            # As the bus-fed handler does: the values an erasure overwrote leave the files too.
            await read_models.forget_after_erasure()
        if progress is not None:
            progress(position, max(target, position))


async def follow(
    store: EventStore,
    read_models: ReadModelStore,
    projection: Projection,
    stop: asyncio.Event,
    *,
    idle_wait: float = 0.5,
    linger: float = 0.0,
    failed: Callable[[], None] | None = None,
) -> None:
    """Keep a projection up to date with its store until ``stop`` is set. ``linger``: seconds
    to wait after an append for more before catching up, so that under load one read-model
    transaction covers many events.

    A failure never ends it: while the database is away (a restart, a fail-over) it retries
    every couple of seconds and catches up once it is back; any other failure is logged, told
    to ``failed`` (the service's health) and retried the same way, since skipping an event of
    its own store is never an option."""
    failures = 0
    while not stop.is_set():
        try:
            position = await catch_up(store, read_models, projection)
            await _wait_for_append(store, position, idle_wait, stop)
        except Exception as error:
            failures += 1
            delay = OUTAGE_BACKOFF.delay(failures)
            if not is_outage(error):
                # By type and place (failure_text), with no traceback: a message, and those
                # chained under it, may quote the event it failed on, opened values included.
                log.error(
                    "projection %s failed; retrying in %.1fs: %s",
                    projection.name,
                    delay,
                    failure_text(error),
                )
                if failed is not None:
                    failed()
            elif failures == 1:
                log.warning(
                    "projection %s paused, storage unavailable (%s); retrying every %.1fs",
                    projection.name,
                    error,
                    delay,
                )
            await sleep_unless_stopped(delay, stop)
            continue
        if failures:
            log.info("projection %s going again after %d failures", projection.name, failures)
            failures = 0
        if linger and not stop.is_set():
            await asyncio.sleep(linger)


async def _wait_for_append(
    store: EventStore, position: int, idle_wait: float, stop: asyncio.Event
) -> None:
    appended = asyncio.ensure_future(store.wait_for_append(position, idle_wait))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({appended, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for waiter in (appended, stopped):
        waiter.cancel()
    if appended.done() and not appended.cancelled():
        appended.result()  # a database that went away shows here


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
    stopped before committing), and events of one stream need not arrive in sequence order
    when the stream spans several cases (keys, so partitions): a client's schedule, a budget
    line. The ids of applied events are kept in the projection's own transaction, so a repeat
    is recognised and changes nothing, and a late event is still applied.

    It is a ``BatchHandler``: a batch is applied in one transaction (one durable commit), all
    or nothing, so when one event of it fails the subscriber can hand the events over again
    one by one and only the one at fault is set aside.
    """

    def __init__(
        self,
        read_models: ReadModelStore,
        projection: Projection,
        on_erased: Callable[[ClientErased], None] | None = None,
        *,
        service: str,
    ) -> None:
        if not service:
            raise ValueError("a projection's bus handler needs the name of its service")
        self._read_models = read_models
        self._projection = projection
        self._service = service
        """The service feeding the projection: the lag metric's label, never empty (a series
        without a service would mix every service's lag)."""
        self._on_erased = on_erased
        """Told of every erasure applied (the service's keyring drops the client's keys)."""
        self._retire_again_at = time.monotonic() + RETIRE_AGAIN_SECONDS
        """The service's start has just retired the projection's old layouts."""

    async def __call__(self, recorded: RecordedEvent) -> None:
        await self.handle_batch((recorded,))

    async def handle_batch(self, records: Sequence[RecordedEvent]) -> None:
        # A pending forget, left by any replica's erasure, retirement or opening, is tried
        # again here (a minute apart at most), as ``catch_up`` does for the projections fed
        # from the service's own store.
        await self._read_models.forget_if_due()
        await self._retire_again_if_due()
        name = self._projection.name
        # An idempotent projection neither tracks ids nor takes the projection's lock (it
        # comes with ``already_applied``): its writes are conditional (``Projection.idempotent``).
        tracked = not self._projection.idempotent
        async with self._read_models.transaction() as transaction:
            seen = (
                await transaction.already_applied(name, [r.event_id for r in records])
                if tracked
                else set()
            )
            applied: list[RecordedEvent] = []
            for recorded in records:
                if recorded.event_id in seen:
                    continue
                with projection_span(name, recorded):
                    await self._projection.handle(transaction, recorded)
                seen.add(recorded.event_id)
                applied.append(recorded)
            if tracked:
                await transaction.mark_applied(name, [r.event_id for r in applied])
            if any(_is_erasure(r) for r in applied):
                # A restart between the commit and the forgetting below finds it to do.
                await transaction.mark_overwritten()
        erasures = [r.event for r in records if _is_erasure(r)]
        # What is kept in memory goes first: forgetting the files may wait on an older
        # transaction, and meanwhile a cached key or a folded state would still answer the
        # erased values.
        for erased in erasures:
            assert isinstance(erased, ClientErased)
            if self._on_erased is not None:
                self._on_erased(erased)
        if erasures:
            # What an old replica wrote to a retired layout after the start retired it (a
            # rolling upgrade) may hold the erased client's values in the clear, and once that
            # replica has stopped nothing scrubs them: the layout goes, on a redelivery too.
            await self._read_models.retire(self._projection.retired)
            # Never failing the batch: an older snapshot open for hours (a backup) held every
            # later event back. A repeat with no mark left asks nothing; a mark left by a
            # restart between the commit and the forgetting is tried here too.
            await self._read_models.forget_after_erasure()
        # Only what was applied now: a repeat (a batch redelivered after a restart, hours
        # after it was recorded) would add an observation as old as the event, not a delay.
        observe_projection(self._service, name, applied)

    async def _retire_again_if_due(self) -> None:
        # The old replica of a rolling upgrade stops minutes after the new one's start: what
        # it wrote meanwhile goes with the next batch due, not at the next start (weeks on).
        if not self._projection.retired or time.monotonic() < self._retire_again_at:
            return
        self._retire_again_at = time.monotonic() + RETIRE_AGAIN_SECONDS
        await self._read_models.retire(self._projection.retired)


def _is_erasure(recorded: RecordedEvent) -> bool:
    return recorded.event_type == ClientErased.event_type
