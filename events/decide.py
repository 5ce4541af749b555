"""Run one command against one event stream: idempotent, atomic, safe under concurrency.

The service's decision is a pure function of the stream's history that returns the new events
(or raises a ``CommandRejected``). Retried commands return the events they recorded the first
time; a writer that loses a race re-reads and decides again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from events.catalog.base import CaseEvent
from events.commands import CommandContext, VersionConflict
from events.envelope import RecordedEvent
from events.errors import ConcurrencyError
from events.store.port import EventStore

Decision = Callable[[list[RecordedEvent]], Sequence[CaseEvent]]

MAX_ATTEMPTS = 5


async def execute(
    store: EventStore,
    service: str,
    context: CommandContext,
    stream: str,
    decide: Decision,
) -> list[RecordedEvent]:
    command_id = context.command_id(service)
    earlier, history = await store.read_for_command(command_id, stream)
    if earlier:
        return earlier
    version = 0
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            history = await store.read_stream(stream)
        version = history[-1].sequence if history else 0
        expected = context.expected_version
        if expected is not None and expected != version:
            raise VersionConflict(stream, expected, version)
        events = decide(history)
        if not events:
            return []
        try:
            return await store.append(stream, context.new_events(service, events), version)
        except ConcurrencyError:
            earlier = await store.read_by_causation(command_id)
            if earlier:
                return earlier
            if expected is not None:
                raise VersionConflict(
                    stream, expected, await store.stream_version(stream)
                ) from None
    raise VersionConflict(stream, version, await store.stream_version(stream))
