"""What travels with every case event: who did it, when, why, and where it is stored.

``NewEvent`` is what a service hands to its event store; ``RecordedEvent`` is what the store
gives back once the event is durable (with its stream sequence, global position and
recorded-at time). ``events.cloudevents`` maps a ``RecordedEvent`` to CloudEvents 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from events.catalog.base import CaseEvent, Role
from events.registry import encode

if TYPE_CHECKING:
    from events.registry import EventRegistry


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: str
    role: Role


@dataclass(frozen=True, slots=True)
class EventMetadata:
    """Facts about an event that are not part of its data.

    ``occurred_at`` is when it happened as stated by the actor (it may be earlier than the
    moment it was recorded, e.g. a home visit written up the next day).
    """

    source: str
    actor: Actor
    occurred_at: datetime
    correlation_id: UUID
    causation_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class NewEvent:
    event: CaseEvent
    metadata: EventMetadata
    event_id: UUID = field(default_factory=uuid4)


class RecordedEvent:
    """An event as durably recorded: the data plus its place in a store.

    Read from a store, the event's data is decoded (and upcast) on first use of ``event``, and
    ``data`` hands out the stored JSON as it is while it is at the current schema version:
    code that only routes or forwards events (the outbox relay, filters on ``event_type``)
    never pays for decoding and re-encoding. Instances are immutable.
    """

    __slots__ = (
        "_data",
        "_event",
        "_registry",
        "_stored_version",
        "event_id",
        "event_type",
        "metadata",
        "position",
        "recorded_at",
        "sequence",
        "stream",
        "subject",
    )

    event_id: UUID
    stream: str
    sequence: int
    """Version of the stream after this event (1 for the first event of a stream)."""
    position: int
    """Global position in the store that recorded it: ordered, gap-free as read."""
    recorded_at: datetime
    metadata: EventMetadata
    event_type: str
    subject: str
    """What the event is about: the case id (the client id for a client registration)."""
    _event: CaseEvent | None
    _data: bytes | None
    _stored_version: int
    _registry: EventRegistry | None

    def __init__(
        self,
        event_id: UUID,
        stream: str,
        sequence: int,
        position: int,
        recorded_at: datetime,
        event: CaseEvent,
        metadata: EventMetadata,
    ) -> None:
        _set = object.__setattr__
        _set(self, "event_id", event_id)
        _set(self, "stream", stream)
        _set(self, "sequence", sequence)
        _set(self, "position", position)
        _set(self, "recorded_at", recorded_at)
        _set(self, "metadata", metadata)
        _set(self, "event_type", event.event_type)
        _set(self, "subject", event.subject)
        _set(self, "_event", event)
        _set(self, "_data", None)
        _set(self, "_stored_version", event.schema_version)
        _set(self, "_registry", None)

    @classmethod
    def stored(
        cls,
        *,
        event_id: UUID,
        stream: str,
        sequence: int,
        position: int,
        recorded_at: datetime,
        metadata: EventMetadata,
        event_type: str,
        subject: str,
        schema_version: int,
        data: bytes,
        registry: EventRegistry,
    ) -> RecordedEvent:
        """A record whose event is decoded from ``data`` by ``registry`` when first needed."""
        record = object.__new__(cls)
        _set = object.__setattr__
        _set(record, "event_id", event_id)
        _set(record, "stream", stream)
        _set(record, "sequence", sequence)
        _set(record, "position", position)
        _set(record, "recorded_at", recorded_at)
        _set(record, "metadata", metadata)
        _set(record, "event_type", event_type)
        _set(record, "subject", subject)
        _set(record, "_event", None)
        _set(record, "_data", data)
        _set(record, "_stored_version", schema_version)
        _set(record, "_registry", registry)
        return record

    @property
    def event(self) -> CaseEvent:
        event = self._event
        if event is None:
            assert self._registry is not None
            assert self._data is not None
            event = self._registry.decode(self.event_type, self._stored_version, self._data)
            object.__setattr__(self, "_event", event)
        return event

    @property
    def schema_version(self) -> int:
        """The schema version of ``event`` and ``data`` (current: older data is upcast)."""
        if self._event is not None:
            return self._event.schema_version
        assert self._registry is not None
        return self._registry.model_for(self.event_type).schema_version

    @property
    def data(self) -> bytes:
        """The event's data as JSON at ``schema_version``."""
        stored = self._data
        if stored is not None and self._stored_version == self.schema_version:
            return bytes(stored)
        return encode(self.event)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RecordedEvent is immutable (tried to set {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return (
            self.event_id == other.event_id
            and self.stream == other.stream
            and self.sequence == other.sequence
            and self.position == other.position
            and self.recorded_at == other.recorded_at
            and self.metadata == other.metadata
            and self.event == other.event
        )

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        return (
            f"RecordedEvent(event_id={self.event_id!r}, stream={self.stream!r}, "
            f"sequence={self.sequence}, position={self.position}, type={self.event_type!r})"
        )
