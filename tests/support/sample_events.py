"""Small catalog-shaped events for platform tests that must not depend on the real catalog."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from events.catalog.base import CaseEvent, Role, SensitiveText
from events.envelope import Actor, EventMetadata, NewEvent
from events.registry import EventRegistry


class NoteWritten(CaseEvent):
    """A test event: a worker wrote a note on a case."""

    event_type = "casetrail.test.note-written"
    schema_version = 2
    case_id: str
    text: SensitiveText
    words: int


class CaseTouched(CaseEvent):
    event_type = "casetrail.test.case-touched"
    case_id: str


def note_written_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 had only ``text``; v2 counts its words."""
    return {**data, "words": len(str(data["text"]).split())}


def sample_registry() -> EventRegistry:
    registry = EventRegistry([NoteWritten, CaseTouched])
    registry.register_upcaster(NoteWritten.event_type, 1, note_written_v1_to_v2)
    return registry


WORKER = Actor("worker-7", Role.CASE_MANAGER)


def note(
    case_id: str,
    text: str = "home visit went well",
    *,
    occurred_at: datetime | None = None,
    event_id: UUID | None = None,
) -> NewEvent:
    return NewEvent(
        event=NoteWritten(case_id=case_id, text=text, words=len(text.split())),
        metadata=EventMetadata(
            source="casetrail/test",
            actor=WORKER,
            occurred_at=occurred_at or datetime.now(UTC),
            correlation_id=uuid4(),
        ),
        event_id=event_id or uuid4(),
    )
