"""A record as a store hands it back (envelope and data not parsed yet), from one built of
objects: for tests of code that must not decode what it only forwards or copies."""

from __future__ import annotations

from datetime import UTC

from events.envelope import RecordedEvent, StoredEnvelope, to_micros
from events.registry import EventRegistry, encode


def as_stored(
    recorded: RecordedEvent, registry: EventRegistry, *, postgres: bool = False
) -> RecordedEvent:
    """``postgres``: ids and times as PostgreSQL hands them back (``UUID``, ``datetime``),
    else as SQLite does (text, integer microseconds)."""
    metadata = recorded.metadata
    causation = metadata.causation_id
    if postgres:
        envelope = StoredEnvelope(
            recorded.event_id,
            metadata.source,
            metadata.actor.user_id,
            metadata.actor.role.value,
            metadata.correlation_id,
            causation,
            metadata.occurred_at.astimezone(UTC),
            recorded.recorded_at.astimezone(UTC),
        )
    else:
        envelope = StoredEnvelope(
            str(recorded.event_id),
            metadata.source,
            metadata.actor.user_id,
            metadata.actor.role.value,
            str(metadata.correlation_id),
            None if causation is None else str(causation),
            to_micros(metadata.occurred_at),
            to_micros(recorded.recorded_at),
        )
    return RecordedEvent.stored(
        stream=recorded.stream,
        sequence=recorded.sequence,
        position=recorded.position,
        event_type=recorded.event_type,
        subject=recorded.subject,
        schema_version=recorded.schema_version,
        data=encode(recorded.event),
        registry=registry,
        envelope=envelope,
    )
