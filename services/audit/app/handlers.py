"""The one thing audit writes: that someone saw parts of a case record."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import uuid4

from pydantic import ValidationError

from events.catalog.access import RecordAccessed, RecordSection
from events.commands import InvalidCommand
from events.envelope import EventMetadata, NewEvent, RecordedEvent
from events.errors import FieldProblem
from events.queries import QueryContext
from events.store.port import ANY_VERSION, EventStore
from services.audit.domain.access import access_stream

SERVICE = "audit"
SERVICE_SOURCE = f"casetrail/{SERVICE}"

_REQUEST_FIELDS = {
    "case_id": "case_id",
    # Who read comes from the verified token (claims sub and role), never from the request.
    "accessor_id": "authorization",
    "accessor_role": "authorization",
    "purpose": "context.purpose",
}


async def record_access(
    store: EventStore,
    viewer: QueryContext,
    case_id: str,
    sections: Sequence[RecordSection],
    *,
    now: datetime | None = None,
) -> RecordedEvent | None:
    """Record that ``viewer`` saw ``sections`` of the case; nothing when nothing was shown.

    Callers record before they answer: if this fails, nothing is disclosed.
    """
    if not sections:
        return None
    event = _accessed(viewer, case_id, sections)
    new = NewEvent(
        event=event,
        metadata=EventMetadata(
            source=SERVICE_SOURCE,
            actor=viewer.actor,
            occurred_at=now or datetime.now(UTC),
            correlation_id=uuid4(),
        ),
    )
    # Each access is its own fact and no decision reads the stream before appending, so many
    # reads of one case at once never conflict: the store places each after the newest.
    [recorded] = await store.append(access_stream(case_id), [new], ANY_VERSION)
    return recorded


def _accessed(
    viewer: QueryContext, case_id: str, sections: Sequence[RecordSection]
) -> RecordAccessed:
    try:
        return RecordAccessed(
            case_id=case_id,
            accessor_id=viewer.actor.user_id,
            accessor_role=viewer.actor.role,
            purpose=viewer.purpose,
            sections=tuple(sections),
        )
    except ValidationError as error:
        raise InvalidCommand(
            [
                FieldProblem(_request_field(detail["loc"]), detail["msg"])
                for detail in error.errors()
            ]
        ) from None


def _request_field(location: tuple[int | str, ...]) -> str:
    name = str(location[0]) if location else ""
    return _REQUEST_FIELDS.get(name, name or "request")
