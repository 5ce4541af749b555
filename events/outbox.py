"""The outbox relay: moves a service's recorded events from its event store to the bus.

The event store is the outbox. The relay follows its global position, publishes each batch
and saves its checkpoint only once the bus has acknowledged the batch and every one before
it. A crash between the two publishes those batches again on restart, which consumers absorb
(they dedupe by event id); nothing is ever skipped. While the bus is down the relay retries
with backoff and never advances, and the service goes on storing events: they are sent once
the bus is back.

Batches are pipelined: the next one is read while the current one is handed to the bus, and
up to ``max_in_flight`` handed-over batches wait for their acknowledgement together. The bus
keeps each case's order across them (``EventPublisher.enqueue``).

A bus that forgets on restart (``publisher.durable`` is false, e.g. the in-process bus) is
refilled from position 0 on every start, and the checkpoint is neither read nor written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from events.bus.errors import PublishError
from events.bus.port import Acknowledgement, EventPublisher
from events.bus.retry import Backoff, Stopped, sleep_unless_stopped, until_stopped
from events.checkpoints import CheckpointStore
from events.store.port import EventStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RelayStatus:
    name: str
    published_position: int
    """Global position up to which every event is acknowledged by the bus."""
    last_position: int
    """Newest position in the store."""
    published_total: int
    """Events published by this relay since it was created (re-publications included)."""
    consecutive_failures: int
    last_error: str | None
    publish_waiting_seconds: float | None
    """How long the oldest publish in flight has waited for the bus (``None`` when idle). A bus
    that is down may make a publish wait rather than fail: this, with ``lag``, is what a
    health check should watch."""

    @property
    def lag(self) -> int:
        """Events stored but not yet acknowledged by the bus."""
        return max(0, self.last_position - self.published_position)


@dataclass(frozen=True, slots=True)
class _InFlight:
    position: int
    """Position of the batch's last event."""
    count: int
    acknowledged: Acknowledgement
    since: float


class OutboxRelay:
    def __init__(
        self,
        store: EventStore,
        publisher: EventPublisher,
        checkpoints: CheckpointStore,
        name: str,
        *,
        batch_size: int = 500,
        max_in_flight: int = 4,
        backoff: Backoff | None = None,
        idle_timeout: float = 1.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._store = store
        self._publisher = publisher
        self._checkpoints = checkpoints
        self._name = name
        self._batch_size = batch_size
        self._max_in_flight = max_in_flight
        self._backoff = backoff or Backoff(initial=0.2, maximum=30.0)
        self._idle_timeout = idle_timeout
        self._position: int | None = None
        self._lock = asyncio.Lock()
        self._published_total = 0
        self._failures = 0
        self._last_error: str | None = None
        self._publishing_since: float | None = None

    @property
    def name(self) -> str:
        return self._name

    async def publish_pending(self) -> int:
        """Publish everything stored after the checkpoint, then return how many events were
        published. Raises (with the checkpoint where it was) if the bus or store fails."""
        async with self._lock:
            position = await self._start_position()
            in_flight: deque[_InFlight] = deque()
            published = 0
            reading = asyncio.ensure_future(self._store.read_all(position, self._batch_size))
            try:
                while True:
                    batch = await reading
                    more = len(batch) == self._batch_size
                    if more:
                        # The next read runs (its fetch in the store's thread) meanwhile.
                        reading = asyncio.ensure_future(
                            self._store.read_all(batch[-1].position, self._batch_size)
                        )
                    if batch:
                        since = time.monotonic()
                        self._publishing_since = in_flight[0].since if in_flight else since
                        acknowledged = await self._publisher.enqueue(batch)
                        in_flight.append(
                            _InFlight(batch[-1].position, len(batch), acknowledged, since)
                        )
                    published += await self._settle(in_flight, everything=not more)
                    if not more:
                        return published
            finally:
                self._publishing_since = None
                if not reading.done():
                    reading.cancel()
                reading.add_done_callback(_observe)
                for abandoned in in_flight:
                    abandoned.acknowledged.add_done_callback(_observe)

    async def _settle(self, in_flight: deque[_InFlight], *, everything: bool) -> int:
        """Wait for acknowledgements, oldest first: all of them, or as many as needed to get
        under ``max_in_flight`` plus those already in. Then checkpoint the newest position
        acknowledged with everything before it (also when a later one failed). Returns how
        many events that covered."""
        position: int | None = None
        count = 0
        try:
            while in_flight and (
                everything
                or len(in_flight) >= self._max_in_flight
                or in_flight[0].acknowledged.done()
            ):
                oldest = in_flight[0]
                self._publishing_since = oldest.since
                # Shielded: giving up the wait (on stop) must not cancel the bus's work.
                await asyncio.shield(oldest.acknowledged)
                in_flight.popleft()
                position = oldest.position
                count += oldest.count
        except Exception:
            if position is not None:
                await self._advance(position, count)
            raise
        self._publishing_since = in_flight[0].since if in_flight else None
        if position is not None:
            await self._advance(position, count)
        return count

    async def _advance(self, position: int, count: int) -> None:
        if self._publisher.durable:
            # A forgetful bus's progress must never be mistaken later for that of a
            # durable one under the same name: it would skip events.
            await self._checkpoints.save(self._name, position)
        self._position = position
        self._published_total += count

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set. Failures are retried forever with backoff."""
        while not stop.is_set():
            try:
                await until_stopped(self.publish_pending(), stop)
            except Stopped:
                return
            except Exception as error:
                self._failures += 1
                self._last_error = f"{type(error).__name__}: {error}"
                delay = self._backoff.delay(self._failures)
                if isinstance(error, PublishError):
                    log.warning("relay %s: %s; retrying in %.1fs", self._name, error, delay)
                else:
                    log.exception("relay %s failed; retrying in %.1fs", self._name, delay)
                await sleep_unless_stopped(delay, stop)
                continue
            if self._failures:
                log.info("relay %s: publishing again after %d failures", self._name, self._failures)
            self._failures = 0
            self._last_error = None
            try:
                await until_stopped(
                    self._store.wait_for_append(self._position or 0, self._idle_timeout), stop
                )
            except Stopped:
                return

    async def lag(self) -> int:
        """Events stored but not yet acknowledged by the bus (the relay's backlog)."""
        return (await self.status()).lag

    async def status(self) -> RelayStatus:
        published = self._position
        if published is None:
            published = await self._checkpoints.load(self._name) if self._publisher.durable else 0
        return RelayStatus(
            name=self._name,
            published_position=published,
            last_position=await self._store.last_position(),
            published_total=self._published_total,
            consecutive_failures=self._failures,
            last_error=self._last_error,
            publish_waiting_seconds=(
                None
                if self._publishing_since is None
                else time.monotonic() - self._publishing_since
            ),
        )

    async def _start_position(self) -> int:
        if self._position is None:
            # A bus that forgets on restart must be refilled from the start of the store.
            durable = self._publisher.durable
            self._position = await self._checkpoints.load(self._name) if durable else 0
        return self._position


def _observe(future: asyncio.Future[Any]) -> None:
    # Abandoned reads and acknowledgements may fail later; nobody needs to hear about it.
    if not future.cancelled():
        future.exception()
