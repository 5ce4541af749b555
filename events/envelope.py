"""What travels with every case event: who did it, when, why, and where it is stored.

``NewEvent`` is what a service hands to its event store; ``RecordedEvent`` is what the store
gives back once the event is durable (with its stream sequence, global position and
recorded-at time). ``events.cloudevents`` maps a ``RecordedEvent`` to CloudEvents 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4

from events.catalog.base import CaseEvent, Role


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


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    event_id: UUID
    stream: str
    sequence: int
    """Version of the stream after this event (1 for the first event of a stream)."""
    position: int
    """Global position in the store that recorded it: ordered, gap-free as read."""
    recorded_at: datetime
    event: CaseEvent
    metadata: EventMetadata

    @property
    def event_type(self) -> str:
        return self.event.event_type

    @property
    def schema_version(self) -> int:
        return self.event.schema_version

    @property
    def subject(self) -> str:
        return self.event.subject
