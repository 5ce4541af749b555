"""Run one command against one event stream: idempotent, atomic, safe under concurrency.

The service's decision is a pure function of the stream's history that returns the new events
(or raises a ``CommandRejected``). Retried commands return the events they recorded the first
time; a writer that loses a race reads what the winner appended and decides again.

Losing a race is not the caller's problem: commands on one stream are decided one after the
other in the store, so a loser retries, after a short random pause, for as long as
``RETRY_BUDGET`` allows (sixty writers of one case need up to sixty rounds; a fixed number of
attempts refused some of them). Within one process, commands on one stream also take turns
before they read it (``_turns``), so they do not even race: sixty contacts logged on one case at
once are sixty appends one after the other instead of up to sixty rounds of lost races. That is
only an economy; replicas of a service still race, and the expected version decides. Only a
command that states the version it expects
(``CommandContext.expected_version``) is refused at once when the stream moved: its caller
decided on what it saw and must look again. Commands on different streams never conflict,
except two under one command id (one key sent with two requests at once): the store records a
command id once, in the transaction of its events, so the loser writes nothing and answers as a
later retry would (the first result, or ``IdempotencyKeyReused``), on any replica.

A decision that also reads a stream it does not write (intake's on a case read the client's
stream for an erasure) gives ``execute`` a ``guard``: it reads that stream before each attempt
and returns the version it read, and the append is written only if that stream is still there
(``StreamVersion``, checked in the append's transaction). A guarded stream that moved is a lost
race like any other: the command reads both again and decides again.

Streams that grow without bound (a budget line, a client's schedule) opt in to
``execute_folded``: the decision takes the stream's state kept folded between commands
(``casetrail_platform.folded``) and the command reads only what was appended since, with the
same answers as ``execute``; ``folded`` lends that state to readers. A fold with snapshots
starts, in a process that keeps no state of the stream, from the stream's snapshot, and has one
written in the background every ``folded.SNAPSHOT_EVERY`` events (``snapshots_written`` waits
for those under way).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

from casetrail_platform.commands import CommandContext, LockHeld, VersionConflict
from casetrail_platform.errors import CommandAlreadyRecorded, ConcurrencyError, GuardLockHeld
from casetrail_platform.folded import Fold, FoldCache, Snapshots, sealed_keys
from casetrail_platform.locking.inprocess import InProcessLocks
from casetrail_platform.store.port import EventStore, Snapshot, StreamVersion
from events.catalog.base import CaseEvent
from events.envelope import RecordedEvent

S = TypeVar("S")
T = TypeVar("T")

log = logging.getLogger(__name__)

Decision = Callable[[list[RecordedEvent]], Sequence[CaseEvent]]

ReadGuard = Callable[[], Awaitable[StreamVersion | None]]
"""Reads the other stream a decision depends on, for the decision (which it closes over), and
returns the version it read (None: nothing to guard, the append is not conditioned)."""

Published = Callable[[int], Awaitable[bool]]
"""Whether the bus has acknowledged the store's events up to a position, waiting a bounded time
(``ServiceHost.published``)."""


async def published_at_once(position: int) -> bool:
    """``Published`` where no relay runs (tests of a service's handlers alone)."""
    return True


async def once_published(
    published: Published, recorded: Sequence[RecordedEvent], what: str
) -> None:
    """Returns once the bus has ``recorded`` (a command's events, first or retried), or its
    wait's bound passed. For a command whose event ends someone's right to a case (a transfer,
    a revocation, a withdrawal, a closure) or opens one a read must find at once (an emergency
    access): a read sent after its answer waits for the reading service's facts to hold the
    case's facts on the bus (``AccessControl.reader_facts``), so it is decided with the event
    only if the event is on the bus when the answer is given. Past the bound (the bus is down,
    the case's records are parked) the command, recorded, is answered all the same, and the
    log says so: until the relay publishes it, reads elsewhere may be decided without it."""
    if recorded and not await published(recorded[-1].position):
        log.warning(
            "%s recorded at position %d answered before the bus acknowledged it",
            what,
            recorded[-1].position,
        )


RETRY_BUDGET = 10.0
"""Seconds a command keeps deciding again after losing races before it is answered ABORTED."""

FIRST_PAUSE = 0.002
LONGEST_PAUSE = 0.1
"""Pauses between attempts grow from ``FIRST_PAUSE`` to ``LONGEST_PAUSE``; each is a random
part of that ("full jitter"), so losers of one race do not all come back together."""


_turns: WeakKeyDictionary[EventStore, InProcessLocks] = WeakKeyDictionary()
"""Per store: one lock per stream, and one per command, that commands of this process are
deciding on (a NUL-prefixed command name never meets a stream's)."""


_folds: WeakKeyDictionary[EventStore, FoldCache] = WeakKeyDictionary()
"""Per store: the decision states of streams whose kind opts in (``execute_folded``)."""


_snapshot_writes: WeakKeyDictionary[EventStore, set[asyncio.Task[None]]] = WeakKeyDictionary()
"""Per store: snapshots being written (``Folding``), held so they are not collected."""


def _turns_of(store: EventStore) -> InProcessLocks:
    turns = _turns.get(store)
    if turns is None:
        turns = _turns[store] = InProcessLocks()
    return turns


def _folds_of(store: EventStore) -> FoldCache:
    cache = _folds.get(store)
    if cache is None:
        cache = _folds[store] = FoldCache(store.registry)
    return cache


def pause_before(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1 for the first retry)."""
    ceiling = min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** min(attempt, 16))
    return random.uniform(0, ceiling)


async def execute(
    store: EventStore,
    service: str,
    context: CommandContext,
    stream: str,
    decide: Decision,
    *,
    guard: ReadGuard | None = None,
) -> list[RecordedEvent]:
    """Decide on ``stream``'s history and append what ``decide`` returns. ``guard``: called
    before each decision, after the stream is read (see the module's docstring)."""
    turns = _turns_of(store)
    # A turn on the command as well as on its stream: two requests under one key for two
    # streams (another case, another client's schedule) take turns here instead of racing in
    # the store. Between replicas the store's table of commands settles it (see _execute).
    command = f"\x00command:{context.command_id(service)}"
    async with turns.holding([command, stream]):
        return await _execute(store, service, context, stream, decide, guard)


async def recorded_before(
    store: EventStore, service: str, context: CommandContext
) -> list[RecordedEvent] | None:
    """What this command's key recorded before, answered as ``execute`` answers a retry (the
    first result, or ``IdempotencyKeyReused`` for a key first used for another request), or
    ``None`` for a first attempt. For an entrypoint that checks something before deciding
    which may have changed since the first attempt (a supervisor's team: the case may have
    moved to another team since): the retry of a command that was done must get its answer
    again, not the refusal a new one would."""
    earlier = await store.read_by_causation(context.command_id(service))
    return context.check_retry(service, earlier) if earlier else None


async def _execute(
    store: EventStore,
    service: str,
    context: CommandContext,
    stream: str,
    decide: Decision,
    guard: ReadGuard | None,
) -> list[RecordedEvent]:
    command_id = context.command_id(service)
    earlier, history = await store.read_for_command(command_id, stream)
    if earlier:
        return context.check_retry(service, earlier)

    def version() -> int:
        return history[-1].sequence if history else 0

    async def catch_up() -> None:
        nonlocal history
        # Only what the winners appended since: the history read so far stays valid.
        history = history + await store.read_stream(stream, from_version=version() + 1)

    return await _until_appended(
        store, service, context, stream, version, lambda: decide(history), catch_up, guard
    )


async def _until_appended(
    store: EventStore,
    service: str,
    context: CommandContext,
    stream: str,
    version: Callable[[], int],
    decide: Callable[[], Sequence[CaseEvent]],
    catch_up: Callable[[], Awaitable[None]],
    guard: ReadGuard | None = None,
) -> list[RecordedEvent]:
    """Decide on the stream at ``version()`` (and on what ``guard()`` read) and append, until
    the append is not raced (after ``catch_up()`` with what the winners appended) or
    ``RETRY_BUDGET`` is spent."""
    command_id = context.command_id(service)
    deadline = time.monotonic() + RETRY_BUDGET
    attempt = 0
    while True:
        held: GuardLockHeld | None = None
        guarded = None if guard is None else await guard()
        decided_on = version()
        expected = context.expected_version
        if expected is not None and expected != decided_on:
            raise VersionConflict(stream, expected, decided_on)
        events = decide()
        if not events:
            return []
        try:
            return await store.append(
                stream,
                context.new_events(service, events),
                decided_on,
                command_id=command_id,
                guard=guarded,
            )
        except CommandAlreadyRecorded:
            # The key's command won the race on another connection or replica, maybe on
            # another stream: answer as a retry would (its result, or IDEMPOTENCY_KEY_REUSED).
            return context.check_retry(service, await store.read_by_causation(command_id))
        except ConcurrencyError as lost:
            held = lost if isinstance(lost, GuardLockHeld) else None
            earlier = await store.read_by_causation(command_id)
            if earlier:
                # The same command, sent again, won the race on another connection or replica.
                return context.check_retry(service, earlier)
            if expected is not None and lost.stream == stream:
                # Only its own stream's move refuses it: the caller stated none for a guarded
                # stream, which is read again and decided on.
                raise VersionConflict(
                    stream, expected, await store.stream_version(stream)
                ) from None
        attempt += 1
        pause = pause_before(attempt)
        if time.monotonic() + pause > deadline:
            if held is not None:
                # Kept out by a lock section, not by a version: say which.
                raise LockHeld(stream, held.lock)
            raise VersionConflict(stream, decided_on, await store.stream_version(stream))
        await asyncio.sleep(pause)
        await catch_up()


async def execute_folded(
    store: EventStore,
    service: str,
    context: CommandContext,
    stream: str,
    fold: Fold[S],
    decide: Callable[[S], Sequence[CaseEvent]],
    *,
    guard: ReadGuard | None = None,
) -> list[RecordedEvent]:
    """``execute``, deciding on ``stream``'s state as ``fold`` makes it, kept folded between
    commands (``casetrail_platform.folded``): a command reads only the events appended since
    the state it finds was folded, so its cost does not grow with the stream. Its answers are
    ``execute``'s, retries and races included (``guard`` too); ``decide`` reads the state,
    never changes it."""
    command = f"\x00command:{context.command_id(service)}"
    async with _turns_of(store).holding([command, stream]):
        command_id = context.command_id(service)
        earlier: list[RecordedEvent] = []

        async def first_read(after: int) -> list[RecordedEvent]:
            nonlocal earlier
            earlier, new = await store.read_for_command(command_id, stream, after + 1)
            return new

        folding = Folding(store, fold, stream)
        await folding.catch_up(first_read)
        if earlier:
            return context.check_retry(service, earlier)
        return await _until_appended(
            store,
            service,
            context,
            stream,
            lambda: folding.version,
            lambda: decide(folding.state),
            folding.catch_up,
            guard,
        )


@asynccontextmanager
async def folded(store: EventStore, stream: str, fold: Fold[S]) -> AsyncIterator[Folding[S]]:
    """``stream``'s state as ``fold`` makes it, up to date, during the block (which holds the
    stream's turn: keep it short, and keep nothing of the state past it, since the next
    command changes it in place). For readers, and writers with appends of their own
    (``Folding.catch_up`` after losing a race)."""
    async with _turns_of(store).holding([stream]):
        folding = Folding(store, fold, stream)
        await folding.catch_up()
        yield folding


async def snapshots_written(store: EventStore) -> None:
    """Once every snapshot of ``store`` being written has been (or failed)."""
    while writes := _snapshot_writes.get(store):
        await asyncio.gather(*writes)


class Folding(Generic[S]):
    """A stream's folded state (``state``, folded up to ``version``), under the stream's turn."""

    state: S
    version: int

    def __init__(self, store: EventStore, fold: Fold[S], stream: str) -> None:
        self._store = store
        self._cache = _folds_of(store)
        self._fold = fold
        self._stream = stream

    async def catch_up(
        self, read: Callable[[int], Awaitable[list[RecordedEvent]]] | None = None
    ) -> None:
        """Fold in what ``read(version)`` returns: the stream's events after ``version`` (by
        default read from the stream itself)."""
        cache, fold, stream = self._cache, self._fold, self._stream
        if read is None:
            read = self._events_after
        # Taken out of the cache while it changes: a read or fold that fails leaves nothing
        # half folded behind (the stream is folded again from its start next time).
        state, version, keys = cache.take(fold, stream)
        try:
            if version == 0 and fold.snapshots is not None:
                state, version, new = await self._from_snapshot(fold.snapshots, state, read)
            else:
                new = await read(version)
        except BaseException:
            cache.keep(fold, stream, state, version, keys)
            raise
        if new:
            state = fold.evolve(state, new)
            version, keys = new[-1].sequence, sealed_keys(keys, new)
        cache.keep(fold, stream, state, version, keys)
        self.state, self.version = state, version
        # A state holding opened values is never written, whatever its fold says.
        if not keys and cache.snapshot_due(fold, stream, version):
            writes = _snapshot_writes.setdefault(self._store, set())
            task = asyncio.create_task(_write_snapshot(self._store, fold, stream))
            writes.add(task)
            task.add_done_callback(writes.discard)

    async def _events_after(self, version: int) -> list[RecordedEvent]:
        return await self._store.read_stream(self._stream, from_version=version + 1)

    async def _from_snapshot(
        self,
        snapshots: Snapshots[S],
        empty: S,
        read: Callable[[int], Awaitable[list[RecordedEvent]]],
    ) -> tuple[S, int, list[RecordedEvent]]:
        """The stream's snapshot, if it is usable, and the events after it; else the empty
        state and every event."""
        fold, stream = self._fold, self._stream
        kept = await self._store.load_snapshot(fold.name, stream)
        if kept is not None and kept.schema_version == snapshots.schema_version:
            # Read from the snapshot's own event: still the one it was folded up to, or the
            # snapshot is of another history (a store restored, events copied in) and unused.
            new = await read(kept.version - 1)
            if new and new[0].sequence == kept.version and new[0].event_id == kept.last_event_id:
                try:
                    # Off the loop: a line of 50,000 reservations takes ~0.1 s to decode.
                    state = await asyncio.to_thread(snapshots.decode, kept.data)
                except Exception as error:  # derived data: folded from the start instead
                    log.warning("snapshot of %s unreadable (%s)", stream, type(error).__name__)
                else:
                    self._cache.snapshot_read(fold, stream, kept.version)
                    return state, kept.version, new[1:]
            elif new:
                log.warning("snapshot of %s is of another history: unused", stream)
            # Nothing read: a retry (answered from the table of commands) or a stream shorter
            # than the snapshot; either way the stream is read from its start.
        return empty, 0, await read(0)


async def _write_snapshot(store: EventStore, fold: Fold[S], stream: str) -> None:
    """Write ``stream``'s kept state as a snapshot; off the command's path, which has
    answered already. A failure costs only time (the next snapshot, or folding from older)."""
    snapshots = fold.snapshots
    assert snapshots is not None
    cache = _folds_of(store)
    try:
        # Encoded under the stream's turn (the next command changes the state in place), off
        # the loop: ~60 ms for a line of 50,000 reservations, other streams go on meanwhile.
        async with _turns_of(store).holding([stream]):
            state, version, keys = cache.take(fold, stream)
            try:
                written = version and not keys
                data = await asyncio.to_thread(snapshots.encode, state) if written else None
            finally:
                cache.keep(fold, stream, state, version, keys)
        if data is None:
            return
        [last] = await store.read_stream(stream, from_version=version, to_version=version)
        await store.save_snapshot(
            Snapshot(fold.name, stream, snapshots.schema_version, version, last.event_id, data)
        )
    except Exception as error:  # logged only: a snapshot is never needed
        log.warning("snapshot of %s not written (%s)", stream, type(error).__name__)
