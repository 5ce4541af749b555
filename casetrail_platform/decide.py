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
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from weakref import WeakKeyDictionary

from casetrail_platform.commands import CommandContext, VersionConflict
from casetrail_platform.errors import CommandAlreadyRecorded, ConcurrencyError
from casetrail_platform.locking.inprocess import InProcessLocks
from casetrail_platform.store.port import EventStore
from events.catalog.base import CaseEvent
from events.envelope import RecordedEvent

Decision = Callable[[list[RecordedEvent]], Sequence[CaseEvent]]

RETRY_BUDGET = 10.0
"""Seconds a command keeps deciding again after losing races before it is answered ABORTED."""

FIRST_PAUSE = 0.002
LONGEST_PAUSE = 0.1
"""Pauses between attempts grow from ``FIRST_PAUSE`` to ``LONGEST_PAUSE``; each is a random
part of that ("full jitter"), so losers of one race do not all come back together."""


_turns: WeakKeyDictionary[EventStore, InProcessLocks] = WeakKeyDictionary()
"""Per store: one lock per stream, and one per command, that commands of this process are
deciding on (a NUL-prefixed command name never meets a stream's)."""


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
) -> list[RecordedEvent]:
    turns = _turns.get(store)
    if turns is None:
        turns = _turns[store] = InProcessLocks()
    # A turn on the command as well as on its stream: two requests under one key for two
    # streams (another case, another client's schedule) take turns here instead of racing in
    # the store. Between replicas the store's table of commands settles it (see _execute).
    command = f"\x00command:{context.command_id(service)}"
    async with turns.holding([command, stream]):
        return await _execute(store, service, context, stream, decide)


async def _execute(
    store: EventStore,
    service: str,
    context: CommandContext,
    stream: str,
    decide: Decision,
) -> list[RecordedEvent]:
    command_id = context.command_id(service)
    earlier, history = await store.read_for_command(command_id, stream)
    if earlier:
        return context.check_retry(service, earlier)
    deadline = time.monotonic() + RETRY_BUDGET
    attempt = 0
    while True:
        version = history[-1].sequence if history else 0
        expected = context.expected_version
        if expected is not None and expected != version:
            raise VersionConflict(stream, expected, version)
        events = decide(history)
        if not events:
            return []
        try:
            return await store.append(
                stream, context.new_events(service, events), version, command_id=command_id
            )
        except CommandAlreadyRecorded:
            # The key's command won the race on another connection or replica, maybe on
            # another stream: answer as a retry would (its result, or IDEMPOTENCY_KEY_REUSED).
            return context.check_retry(service, await store.read_by_causation(command_id))
        except ConcurrencyError:
            earlier = await store.read_by_causation(command_id)
            if earlier:
                # The same command, sent again, won the race on another connection or replica.
                return context.check_retry(service, earlier)
            if expected is not None:
                raise VersionConflict(
                    stream, expected, await store.stream_version(stream)
                ) from None
        attempt += 1
        pause = pause_before(attempt)
        if time.monotonic() + pause > deadline:
            raise VersionConflict(stream, version, await store.stream_version(stream))
        await asyncio.sleep(pause)
        # Only what the winners appended since: the history read so far stays valid.
        history = history + await store.read_stream(stream, from_version=version + 1)
