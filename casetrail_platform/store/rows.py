"""Conversions between ``RecordedEvent`` and the flat row both SQL adapters store.

SQLite stores ids as text and times as integer microseconds since the Unix epoch (UTC), so that
"as of" queries compare plain integers and no precision is lost; PostgreSQL hands its uuid and
timestamptz columns back as ``UUID`` and aware ``datetime``. ``to_recorded`` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from casetrail_platform.keys import off_loop
from casetrail_platform.store.guard import require_publishable, storable_data, valid_arguments
from casetrail_platform.store.port import StreamVersion, check_guard
from events.envelope import NewEvent, RecordedEvent, StoredEnvelope, to_micros
from events.registry import EventRegistry, encode

# position, event_id, stream, sequence, event_type, schema_version, data, source, actor_id,
# actor_role, correlation_id, causation_id, occurred_at, recorded_at, subject
StoredRow = tuple[
    int, str, str, int, str, int, bytes, str, str, str, str, str | None, int, int, str
]
"""A row as SQLite gives it back."""

COLUMNS = (
    "position, event_id, stream, sequence, event_type, schema_version, data, source, actor_id, "
    "actor_role, correlation_id, causation_id, occurred_at, recorded_at, subject"
)

TRACED_COLUMNS = f"{COLUMNS}, trace_parent"
"""``COLUMNS`` and the trace context of the command that stored the event (a W3C
``traceparent``, or NULL), for the outbox relay's reads. The trace context is kept in a column
of its own, outside ``COLUMNS``: it is no part of the event, so no part of the ledger's
canonical bytes (``casetrail_platform.ledger.canonical`` hashes ``COLUMNS``), and history verified
by the ledger never depends on whether tracing was on."""


def insert_values(
    new: NewEvent,
    data: bytes,
    stream: str,
    sequence: int,
    recorded_at: int,
    trace_parent: str | None = None,
) -> tuple[
    str, str, int, str, int, bytes, str, str, str, str, str | None, int, int, str, str | None
]:
    metadata = new.metadata
    causation = metadata.causation_id
    return (
        str(new.event_id),
        stream,
        sequence,
        new.event.event_type,
        new.event.schema_version,
        data,
        metadata.source,
        metadata.actor.user_id,
        metadata.actor.role.value,
        str(metadata.correlation_id),
        None if causation is None else str(causation),
        to_micros(metadata.occurred_at),
        recorded_at,
        new.event.subject,
        trace_parent,
    )


def to_recorded(row: StoredRow | tuple[Any, ...], registry: EventRegistry) -> RecordedEvent:
    """A row in ``COLUMNS`` (or ``TRACED_COLUMNS``) order, from SQLite (``StoredRow``) or
    PostgreSQL, as stored: the record parses the envelope and decodes the data only when asked
    for them."""
    whole: tuple[Any, ...] = row
    trace_parent: str | None = whole[15] if len(whole) > 15 else None
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
        subject,
    ) = row[:15]
    return RecordedEvent.stored(
        stream=stream,
        sequence=sequence,
        position=position,
        event_type=event_type,
        subject=subject,
        schema_version=schema_version,
        data=data,
        registry=registry,
        envelope=StoredEnvelope(
            event_id,
            source,
            actor_id,
            actor_role,
            correlation_id,
            causation_id,
            occurred_at,
            recorded_at,
        ),
        trace_parent=trace_parent,
    )


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def check_read(stream: str | None = None, **numbers: int | None) -> None:
    """Refuse (``ValueError`` naming the argument) a read the two backends would answer
    differently: a stream name with a NUL (no stream holds one; PostgreSQL cannot take it as a
    parameter), a version or position past 64 bits (SQLite cannot take it), a negative
    ``limit`` (SQLite read on without one). Both adapters call it before reading."""
    if stream is not None and "\x00" in stream:
        raise ValueError("stream must not contain NUL characters")
    for name, number in numbers.items():
        if number is not None and not _INT64_MIN <= number <= _INT64_MAX:
            raise ValueError(f"{name} {number} is out of range (64 bits)")
    limit = numbers.get("limit")
    if limit is not None and limit < 0:
        raise ValueError(f"limit {limit} must not be negative")


async def checked_data(
    registry: EventRegistry,
    stream: str,
    events: Sequence[NewEvent],
    expected_version: int,
    guard: StreamVersion | None,
) -> list[bytes]:
    """What is stored of each of ``events`` appended to ``stream`` at ``expected_version``,
    once they pass what every adapter checks before it writes: the guard is not on ``stream``
    itself (``check_guard``), the versions and event ids are ones every backend holds, each
    event's type is registered, and its envelope and data are storable and, sealed,
    publishable (``store.guard``). Both adapters call it first, so they refuse the same appends
    with the same errors and write nothing."""
    check_guard(stream, guard)
    valid_arguments(events, expected_version, guard)
    for new in events:
        registry.require_registered(new.event)
    data = await sealed_data(registry, events, storable_data(stream, events, guard))
    require_publishable(stream, events, data)
    return data


async def sealed_data(
    registry: EventRegistry, events: Sequence[NewEvent], data: Sequence[bytes]
) -> list[bytes]:
    """What is stored of each event: its data with the sensitive values sealed (when the
    registry protects them; ``casetrail_platform.keys.fields``; without, a sensitive value that
    begins like a sealed one is refused), in a worker thread when the keyring has to ask its
    table or KEK (``casetrail_platform.keys.off_loop``)."""

    def seal(cached_only: bool) -> list[bytes]:
        return [
            registry.seal(new.event, new.event_id, encoded, cached_only=cached_only)
            for new, encoded in zip(events, data, strict=True)
        ]

    return await off_loop.sealing(seal)


async def opened_records(
    rows: Sequence[StoredRow | tuple[Any, ...]], registry: EventRegistry
) -> list[RecordedEvent]:
    """``to_recorded`` of each row, the keys their sealed values name fetched first (off the
    event loop when the keyring does not hold them): for reads whose events are decoded."""
    await off_loop.fetch_keys(registry, (row[6] for row in rows))
    return [to_recorded(row, registry) for row in rows]


def recorded_from_new(
    new: NewEvent,
    stream: str,
    sequence: int,
    position: int,
    recorded_at: datetime,
    data: bytes | None = None,
) -> RecordedEvent:
    """The record of an event just appended, without reading it back: the caller holds the
    validated event already, so decoding the stored bytes again would only cost time.
    ``data``: what was stored (sealed), handed out as the record's ``data``."""
    record = RecordedEvent(
        event_id=new.event_id,
        stream=stream,
        sequence=sequence,
        position=position,
        recorded_at=recorded_at,
        event=new.event,
        metadata=new.metadata,
    )
    return record if data is None else record.with_data(data)


def same_content(
    new: NewEvent, row: StoredRow | tuple[Any, ...], stream: str, registry: EventRegistry
) -> bool:
    """Whether a stored row is the same event as ``new`` (a retried append). Sealed values
    are compared opened: sealing draws a fresh nonce each time, so a retry's bytes differ."""
    if row[2] != stream or row[4] != new.event.event_type:
        return False
    if row[5] != new.event.schema_version:
        return False
    stored = bytes(row[6])
    encoded = encode(new.event)
    if not registry.is_sealed(stored):
        return stored == encoded
    opened = json.loads(stored)
    registry.open_sealed_values(row[4], row[5], row[1], opened)
    return bool(opened == json.loads(encoded))
