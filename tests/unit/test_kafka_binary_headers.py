"""``to_kafka_binary`` builds its headers directly, for speed: they must stay exactly
``context_attributes`` in binary mode (same names, values and order)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from events.catalog.base import CaseEvent, Role
from events.catalog.examples import example_events, legacy_example_events
from events.cloudevents import (
    JSON_CONTENT_TYPE,
    KAFKA_CONTENT_TYPE_HEADER,
    KAFKA_HEADER_PREFIX,
    context_attributes,
    to_kafka_binary,
)
from events.envelope import Actor, EventMetadata, RecordedEvent
from events.registry import encode


def _recorded(
    event: CaseEvent,
    number: int,
    *,
    causation_id: UUID | None,
    source: str,
    zone: timezone,
) -> RecordedEvent:
    return RecordedEvent(
        event_id=UUID(int=number),
        stream=f"case-{event.subject}",
        sequence=number,
        position=1_000 + number,
        recorded_at=datetime(2024, 3, 5, 9, 0, 1, 250_000, tzinfo=UTC),
        event=event,
        metadata=EventMetadata(
            source=source,
            actor=Actor(user_id="worker-ana", role=Role.SOCIAL_WORKER),
            occurred_at=datetime(2024, 3, 4, 17, 30, 0, 7, tzinfo=zone),
            correlation_id=UUID(int=7),
            causation_id=causation_id,
        ),
    )


def _from_attributes(recorded: RecordedEvent) -> list[tuple[str, bytes]]:
    headers = [(KAFKA_CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE.encode())]
    headers.extend(
        (f"{KAFKA_HEADER_PREFIX}{name}", str(value).encode())
        for name, value in context_attributes(recorded).items()
        if name != "datacontenttype"
    )
    return headers


VARIANTS = [
    (UUID(int=99), "intake", UTC),
    (None, "planning", timezone(timedelta(hours=1))),
    (None, "https://example.org/other", timezone(timedelta(hours=-5, minutes=-30))),
]


@pytest.mark.parametrize(("causation_id", "source", "zone"), VARIANTS)
def test_headers_are_the_context_attributes_in_order(
    causation_id: UUID | None, source: str, zone: timezone
) -> None:
    events = (*example_events(), *legacy_example_events())
    for number, event in enumerate(events, start=1):
        recorded = _recorded(event, number, causation_id=causation_id, source=source, zone=zone)
        record = to_kafka_binary(recorded)
        assert record.headers == _from_attributes(recorded), event.event_type
        assert record.key == recorded.subject.encode()
        assert record.value == recorded.data == encode(event)


def test_bad_envelopes_are_still_refused() -> None:
    event = example_events()[0]
    naive = RecordedEvent(
        event_id=UUID(int=1),
        stream="s",
        sequence=1,
        position=1,
        recorded_at=datetime(2024, 3, 5, 9, 0),
        event=event,
        metadata=EventMetadata(
            source="intake",
            actor=Actor(user_id="worker-ana", role=Role.SOCIAL_WORKER),
            occurred_at=datetime(2024, 3, 4, 17, 30, tzinfo=UTC),
            correlation_id=UUID(int=7),
        ),
    )
    with pytest.raises(ValueError, match="recorded_at must be timezone-aware"):
        to_kafka_binary(naive)
