"""Conversions between ``RecordedEvent`` and the flat row both SQL adapters store.

Times are stored as integer microseconds since the Unix epoch (UTC) so that "as of" queries
compare plain integers and no precision is lost.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from events.catalog.base import Role
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from events.registry import EventRegistry, encode

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# position, event_id, stream, sequence, event_type, schema_version, data, source, actor_id,
# actor_role, correlation_id, causation_id, occurred_at, recorded_at
StoredRow = tuple[int, str, str, int, str, int, bytes, str, str, str, str, str | None, int, int]

COLUMNS = (
    "position, event_id, stream, sequence, event_type, schema_version, data, source, actor_id, "
    "actor_role, correlation_id, causation_id, occurred_at, recorded_at"
)


def to_micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def insert_values(
    new: NewEvent, stream: str, sequence: int, recorded_at: int
) -> tuple[str, str, int, str, int, bytes, str, str, str, str, str | None, int, int]:
    metadata = new.metadata
    causation = metadata.causation_id
    return (
        str(new.event_id),
        stream,
        sequence,
        new.event.event_type,
        new.event.schema_version,
        encode(new.event),
        metadata.source,
        metadata.actor.user_id,
        metadata.actor.role.value,
        str(metadata.correlation_id),
        None if causation is None else str(causation),
        to_micros(metadata.occurred_at),
        recorded_at,
    )


def to_recorded(row: StoredRow, registry: EventRegistry) -> RecordedEvent:
    (
        position,
        event_id,
        stream,
        sequence,
        event_type,
        schema_version,
        data,
        source,
        actor_id,
        actor_role,
        correlation_id,
        causation_id,
        occurred_at,
        recorded_at,
    ) = row
    return RecordedEvent(
        event_id=UUID(event_id),
        stream=stream,
        sequence=sequence,
        position=position,
        recorded_at=from_micros(recorded_at),
        event=registry.decode(event_type, schema_version, data),
        metadata=EventMetadata(
            source=source,
            actor=Actor(actor_id, Role(actor_role)),
            occurred_at=from_micros(occurred_at),
            correlation_id=UUID(correlation_id),
            causation_id=None if causation_id is None else UUID(causation_id),
        ),
    )


def same_content(new: NewEvent, row: StoredRow, stream: str) -> bool:
    """Whether a stored row is the same event as ``new`` (a retried append)."""
    return (
        row[2] == stream
        and row[4] == new.event.event_type
        and row[5] == new.event.schema_version
        and bytes(row[6]) == encode(new.event)
    )
