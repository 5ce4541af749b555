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
refilled from position 0 on every start, and the checkpoint is neither read nor written. The
relay tells such a bus as it is made, and again once its first round has published everything
the store held (``EventPublisher.republishing``): the bus's barriers wait for that. Running, it
first reads the store through (nothing decoded, encoded nor published: about 6 s of CPU per
million records) and tells the bus, per case and event type, the last position the store held
(``Refill.store_held``), then how far it has published: a barrier then waits for the case it
asks about, not for the rest of the store (the access records of every other case).

A record the bus refuses for good (``PublishError.refused``, e.g. larger than the topic
allows) must not stop the service's publishing for ever: the relay publishes the records of
the failed round one at a time to find it, parks it (``casetrail_platform.parking``) with the
reason, and goes on. Every later record of the same case (bus key) is parked behind it, so no
consumer sees a case's later events without it; other cases flow on. While anything is parked the
relay's status says so (``parked``, ``parked_reason``) and health reports the outbox
NOT_SERVING. An operator's retry (``casetrail parked retry``) makes the relay publish that
case's parked records in their order and release them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.bus.errors import PublishError, is_outage
from casetrail_platform.bus.port import (
    Acknowledgement,
    EventPublisher,
    Refill,
    already_acknowledged,
)
from casetrail_platform.bus.retry import (
    OUTAGE_BACKOFF,
    Backoff,
    Stopped,
    sleep_unless_stopped,
    until_stopped,
)
from casetrail_platform.checkpoints import CheckpointStore
from casetrail_platform.parking import InMemoryParkingLot, ParkedRecord, ParkingLot
from casetrail_platform.store.port import EventStore
from events.envelope import RecordedEvent

log = logging.getLogger(__name__)

STORE_SCAN_BATCH = 5000
"""Records read at once by the relay's look through the store at a refill
(``_tell_store_held``)."""

CHECKPOINT_LOOK_EVERY = 0.05
"""Seconds between looks at the relay's checkpoint by a replica that does not lead the relay
while a command waits for its events to be published (``OutboxRelay.published``)."""


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
    parked: int = 0
    """Records parked now (refused by the bus, or held behind one of their case)."""
    parked_total: int = 0
    """Records this relay has parked since it was created (a counter for metrics)."""
    parked_reason: str | None = None
    """Why the oldest parked record was refused (no event data in it)."""

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
        parking: ParkingLot | None = None,
        retry_check_every: float = 2.0,
    ) -> None:
        """``parking``: where refused records are set aside; durable for a durable bus (a
        parked record is behind the checkpoint). ``retry_check_every``: seconds between
        looks for an operator's retry request while something is parked."""
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
        self._parking = parking or InMemoryParkingLot()
        self._retry_check_every = retry_check_every
        self._parked: dict[str, list[int]] | None = None
        """Parked positions per bus key (loaded on the first publish)."""
        self._parked_reason: str | None = None
        self._parked_total = 0
        self._retries_checked = 0.0
        self._isolate_through: int | None = None
        """After a refusal: publish one record at a time up to this position."""
        self._advanced: asyncio.Future[None] | None = None
        """Done when this relay next saves its progress (``published``)."""
        self._refill = publisher.republishing()
        """What a bus refilled from the start of the store is told of the refill: what the
        store held, how far it got, and once it has all the store held when the relay started
        (after the first round that ends, or when the relay stops); ``None`` after that."""

    @property
    def name(self) -> str:
        return self._name

    async def publish_pending(self) -> int:
        """Publish everything stored after the checkpoint, then return how many events were
        published. Raises (with the checkpoint where it was) if the bus or store fails."""
        async with self._lock:
            position = await self._start_position()
            await self._publisher.resume()  # from the checkpoint: what was in flight is given up
            await self._load_parked()
            published = await self._serve_retries()
            if self._isolate_through is not None:
                published += await self._publish_one_at_a_time(self._isolate_through)
                position = self._position or 0
            in_flight: deque[_InFlight] = deque()
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
                        sending = await self._hold_parked_cases(batch)
                        try:
                            acknowledged = (
                                await self._publisher.enqueue(sending)
                                if sending
                                else already_acknowledged()
                            )
                        except PublishError as error:
                            if error.refused:
                                # Refused at hand-over (nothing in flight may fail): the next
                                # attempt looks for the record one at a time, up to this batch.
                                self._isolate_through = batch[-1].position
                            # Else refused because an earlier batch failed: that failure, the
                            # oldest, is the one to act on (e.g. a record to park).
                            published += await self._settle(in_flight, everything=True)
                            raise
                        in_flight.append(
                            _InFlight(batch[-1].position, len(sending), acknowledged, since)
                        )
                    published += await self._settle(in_flight, everything=not more)
                    if not more:
                        self.end_refill()
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
        except Exception as error:
            if isinstance(error, PublishError) and error.refused:
                # Some record of the failed batch, or of one sent after it, is refused for
                # good: the next attempt looks for it one record at a time.
                self._isolate_through = in_flight[-1].position
            if position is not None:
                await self._advance(position, count)
            raise
        self._publishing_since = in_flight[0].since if in_flight else None
        if position is not None:
            await self._advance(position, count)
        return count

    async def _advance(self, position: int, count: int) -> None:
        # The commands waiting in this replica (``published``) are told before the checkpoint
        # is saved: the bus has the events once it acknowledged them, and a save that fails
        # or a crash before it only makes the relay publish them again (absorbed downstream).
        self._position = position
        self._published_total += count
        if self._refill is not None:
            self._refill.published(position)
        advanced, self._advanced = self._advanced, None
        if advanced is not None and not advanced.done():
            advanced.set_result(None)
        if self._publisher.durable:
            # A forgetful bus's progress must never be mistaken later for that of a
            # durable one under the same name: it would skip events.
            await self._checkpoints.save(self._name, position)

    async def published(self, position: int, patience: float) -> bool:
        """Whether the bus has acknowledged every event up to ``position``, waiting up to
        ``patience`` seconds for it (``False`` if it has not by then: the bus is down or slow;
        at once if ``position`` is parked: it waits for an operator).

        Asked in any replica: the one leading the relay is told at once (before it saves its
        checkpoint); the others read the checkpoint the leader saves (durable bus only: a
        forgetful one runs in one process) every ``CHECKPOINT_LOOK_EVERY`` seconds. The leader
        reads it too, but only once it has waited that long untold: it knows its own progress
        (a leadership lost unnoticed is what the look is for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        leading = self._position is not None
        while True:
            done = self._position or 0
            if done < position and self._publisher.durable and not leading:
                done = max(done, await self._checkpoints.load(self._name))
            leading = False
            if done >= position:
                return not await self._is_parked(position)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if self._advanced is None:
                self._advanced = loop.create_future()
            # Shielded: a waiter that gives up must not cancel the others' future.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(self._advanced), min(remaining, CHECKPOINT_LOOK_EVERY)
                )

    def end_refill(self) -> None:
        """A round ended, everything stored when it began on the bus (or parked), or the
        relay stopped, or its host did without ever running it (a start that failed after
        making it): the bus's barriers wait for its refill no longer."""
        refill, self._refill = self._refill, None
        if refill is not None:
            refill.ended()

    async def _tell_store_held(self, refill: Refill) -> None:
        """Tell ``refill`` what the store holds as the relay starts (``Refill.store_held``):
        per bus key (the record's subject) and event type, the last position holding one.
        Records appended after this read are new ones, on the bus once published, as on a
        durable bus. Failing (the store away), it tells nothing: the bus's barriers then wait
        for the whole refill."""
        last_positions: dict[str, dict[str, int]] = {}
        position = 0
        try:
            while True:
                batch = await self._store.read_all(position, STORE_SCAN_BATCH)
                for record in batch:
                    by_type = last_positions.setdefault(record.subject, {})
                    by_type[sys.intern(record.event_type)] = record.position
                if len(batch) < STORE_SCAN_BATCH:
                    break
                position = batch[-1].position
        except Exception as error:
            log.warning(
                "relay %s: what the store holds of each case not read (%s); the bus's barriers"
                " wait for the whole refill",
                self._name,
                failure_text(error),
            )
            return
        refill.store_held(last_positions)

    async def _is_parked(self, position: int) -> bool:
        """Whether ``position`` is parked, so not on the bus though the relay went past it:
        as this relay knows once it has published, else as the parking lot has it (a replica
        not leading the relay)."""
        if self._parked is not None:
            return any(position in positions for positions in self._parked.values())
        return any(record.position == position for record in await self._parking.parked(self._name))

    async def _load_parked(self) -> None:
        if self._parked is None:
            parked = await self._parking.parked(self._name)
            self._parked = {}
            for record in parked:
                self._parked.setdefault(record.key, []).append(record.position)
            self._parked_reason = _first_refusal(parked)
            if parked:
                log.error(
                    "relay %s: %d records parked (%s); `casetrail parked` lists and retries them",
                    self._name,
                    len(parked),
                    self._parked_reason,
                )

    async def _hold_parked_cases(self, batch: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """Park the records of ``batch`` whose case has a parked record; return the others."""
        parked = self._parked or {}
        if not parked:
            return list(batch)
        sending: list[RecordedEvent] = []
        held: list[RecordedEvent] = []
        for record in batch:
            (held if record.subject in parked else sending).append(record)
        if held:
            await self._park(held, None)
        return sending

    async def _publish_one_at_a_time(self, through: int) -> int:
        """Publish up to position ``through`` record by record, parking those the bus refuses
        for good (and their case's later ones); a transient failure raises as usual."""
        published = 0
        while (self._position or 0) < through:
            batch = await self._store.read_all(self._position or 0, self._batch_size)
            if not batch:
                break
            for record in batch:
                if record.position > through:
                    break
                sending = await self._hold_parked_cases([record])
                if sending:
                    try:
                        await self._publisher.publish(sending)
                    except PublishError as error:
                        if not error.refused:
                            raise
                        await self._park(sending, f"refused by the bus: {error}")
                        await self._publisher.resume()  # the next record follows the parked one
                    else:
                        published += 1
                await self._advance(record.position, len(sending))
        self._isolate_through = None
        return published

    async def _park(self, records: Sequence[RecordedEvent], refusal: str | None) -> None:
        """Durably park ``records``: refused ones with ``refusal``, else held behind the parked
        record of their case."""
        parked = self._parked if self._parked is not None else {}
        now = datetime.now(UTC)
        rows = []
        for record in records:
            earlier = parked.get(record.subject)
            reason = (
                refusal
                if refusal is not None
                else f"held: position {earlier[0] if earlier else '?'} of this case is parked"
            )
            rows.append(
                ParkedRecord(
                    relay=self._name,
                    position=record.position,
                    event_id=record.event_id,
                    key=record.subject,
                    stream=record.stream,
                    sequence=record.sequence,
                    event_type=record.event_type,
                    reason=reason,
                    parked_at=now,
                )
            )
        await self._parking.park(rows)  # the lot ignores a position it holds already
        # Held records are parked again on every round that reads them (each failed one while
        # the bus is away): each is kept and counted once.
        known: dict[str, set[int]] = {}
        for row in rows:
            positions = parked.setdefault(row.key, [])
            held = known.setdefault(row.key, set(positions))
            if row.position not in held:
                held.add(row.position)
                positions.append(row.position)
                self._parked_total += 1
        self._parked = parked
        if refusal is not None:
            self._parked_reason = self._parked_reason or refusal
            for row in rows:
                log.error(
                    "relay %s: parked position %d (%s, stream %s #%d): %s; later events of"
                    " its case are held until `casetrail parked retry`",
                    self._name,
                    row.position,
                    row.event_type,
                    row.stream,
                    row.sequence,
                    refusal,
                )

    async def _serve_retries(self) -> int:
        """Publish the parked records of every case an operator asked to retry, in order;
        release those the bus took. Looks at most every ``retry_check_every`` seconds."""
        if not self._parked or time.monotonic() - self._retries_checked < self._retry_check_every:
            return 0
        self._retries_checked = time.monotonic()
        parked = await self._parking.parked(self._name)
        requested = list(dict.fromkeys(r.key for r in parked if r.retry_requested))
        published = 0
        transient: PublishError | None = None
        for key in requested:
            positions = [r.position for r in parked if r.key == key]
            done: list[int] = []
            await self._publisher.resume()  # a failed retry of another case holds nothing here
            try:
                for position in positions:
                    await self._publisher.publish(await self._store.read_all(position - 1, 1))
                    done.append(position)
            except PublishError as error:
                log.error(
                    "relay %s: retry of case %s stopped at position %d: %s",
                    self._name,
                    key,
                    positions[len(done)],
                    error,
                )
                if error.refused:
                    # The record refused may have been parked as held behind one the retry
                    # just published: its reason becomes the refusal, or none would be told.
                    refusal = (positions[len(done)], f"refused by the bus: {error}")
                    await self._parking.retry_done(self._name, key, refusal)
                    # Nothing of it is taken as published: later publishing starts afresh
                    # (the bus refuses everything after a failure until resumed).
                    await self._publisher.resume()
                else:
                    # The bus is away, the records may be fine: the request stays, and the
                    # relay's backoff comes before the next try.
                    transient = transient or error
            await self._parking.release(self._name, done)
            published += len(done)
            remaining = positions[len(done) :]
            assert self._parked is not None
            if remaining:
                self._parked[key] = remaining
            else:
                del self._parked[key]
                log.info("relay %s: case %s published again, nothing parked", self._name, key)
        if requested:
            self._parked_reason = _first_refusal(await self._parking.parked(self._name))
            self._published_total += published
        if transient is not None:
            self._retries_checked = 0.0  # tried again on the next round, not a period later
            raise transient
        return published

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set (shutdown, or this replica no longer leads the relay).
        Failures are retried forever with backoff."""
        try:
            if self._refill is not None:
                # Before the first round, which it would otherwise share the event loop with,
                # and the consumer groups the round keeps busy: alone it reads the store
                # many times faster than the round can publish it.
                with contextlib.suppress(Stopped):
                    await until_stopped(self._tell_store_held(self._refill), stop)
            await self._relay(stop)
        finally:
            # Stopped before its first round ended, it refills the bus no further: the bus
            # waits for the store's next relay, which tells it anew.
            self.end_refill()
            self._forget_leading()

    def _forget_leading(self) -> None:
        """Leave what the relay had come to to the stores: once another replica leads, it
        moves the checkpoint on and parks and releases records, so what this one kept would
        be stale when it leads again. Its position would republish what the other published
        meanwhile (duplicates on the bus), its parked list would answer ``published`` and
        ``status`` from what was parked when it stopped (a record parked since taken as on
        the bus, one released since reported parked for ever), and a refusal it was
        isolating may be parked since. All are read again on leading again. A forgetful bus
        keeps its position: it lives in this process alone, and is refilled from the start
        only when the process starts."""
        if self._publisher.durable:
            self._position = None
        self._isolate_through = None
        self._parked = None
        self._parked_reason = None

    async def _relay(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await until_stopped(self.publish_pending(), stop)
            except Stopped:
                return
            except Exception as error:
                self._failures += 1
                delay = self._backoff.delay(self._failures)
                if is_outage(error):  # the store is away: try again soon after it is back
                    delay = min(delay, OUTAGE_BACKOFF.delay(self._failures))
                if isinstance(error, PublishError) or is_outage(error):
                    self._last_error = f"{type(error).__name__}: {error}"
                    log.warning("relay %s: %s; retrying in %.1fs", self._name, error, delay)
                else:
                    # By type and place, no traceback: any other error's message (or one
                    # chained under it) may quote the records it failed on, opened values
                    # included, and the last error is logged again by the health watch.
                    self._last_error = f"{type(error).__name__}: {failure_text(error)}"
                    log.error(
                        "relay %s failed; retrying in %.1fs: %s",
                        self._name,
                        delay,
                        failure_text(error),
                    )
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
            except Exception as error:
                # The store went away while the relay was idle: the next publish meets the
                # outage and backs off; the relay must never stop over it (issue 8).
                log.warning("relay %s: waiting for appends failed (%s)", self._name, error)

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
            parked=sum(len(positions) for positions in (self._parked or {}).values()),
            parked_total=self._parked_total,
            parked_reason=self._parked_reason,
        )

    async def _start_position(self) -> int:
        if self._position is None:
            # A bus that forgets on restart must be refilled from the start of the store.
            durable = self._publisher.durable
            self._position = await self._checkpoints.load(self._name) if durable else 0
        return self._position


def _first_refusal(parked: Sequence[ParkedRecord]) -> str | None:
    for record in parked:
        if not record.reason.startswith("held:"):
            return f"position {record.position} {record.reason}"
    return None


def _observe(future: asyncio.Future[Any]) -> None:
    # Abandoned reads and acknowledgements may fail later; nobody needs to hear about it.
    if not future.cancelled():
        future.exception()
