"""Records read from a store keep their envelope as stored and parse it on first use; Kafka
headers are formatted straight from the stored values. Both must be indistinguishable from a
record built from parsed objects."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from casetrail_platform.store.port import NO_STREAM
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import CaseEvent, Role
from events.catalog.examples import example_events, legacy_example_events
from events.catalog_registry import build_registry
from events.cloudevents import (
    JSON_CONTENT_TYPE,
    KAFKA_CONTENT_TYPE_HEADER,
    KAFKA_HEADER_PREFIX,
    STRUCTURED_CONTENT_TYPE,
    context_attributes,
    to_kafka_binary,
)
from events.envelope import (
    Actor,
    EventMetadata,
    NewEvent,
    RecordedEvent,
    StoredEnvelope,
    from_micros,
    to_micros,
)
from events.errors import InvalidEventError, UnreadableStoredEventError
from events.registry import EventRegistry, encode

REGISTRY = build_registry()
EVENT_ID = UUID("5b0c6d2e-8f1a-4c3b-9d4e-0a1b2c3d4e5f")
CORRELATION = UUID("0f0e0d0c-0b0a-4908-8706-050403020100")
CAUSATION = UUID("11111111-2222-4333-8444-555555555555")
OCCURRED = datetime(2024, 3, 4, 17, 30, 0, 7, tzinfo=UTC)
RECORDED_AT = datetime(2024, 3, 5, 9, 0, 1, 250_000, tzinfo=UTC)
CET = timezone(timedelta(hours=1))

Style = Callable[..., StoredEnvelope]
"""How a store hands an envelope back: ``_sqlite_style`` or ``_postgres_style``."""


def _stored(
    event: CaseEvent,
    envelope: StoredEnvelope,
    *,
    registry: EventRegistry = REGISTRY,
    number: int = 3,
) -> RecordedEvent:
    return RecordedEvent.stored(
        stream=f"case-{event.subject}",
        sequence=number,
        position=1_000 + number,
        event_type=event.event_type,
        subject=event.subject,
        schema_version=event.schema_version,
        data=encode(event),
        registry=registry,
        envelope=envelope,
    )


def _sqlite_style(
    causation_id: UUID | None = CAUSATION,
    occurred_at: datetime = OCCURRED,
    recorded_at: datetime = RECORDED_AT,
) -> StoredEnvelope:
    return StoredEnvelope(
        event_id=str(EVENT_ID),
        source="intake",
        actor_id="worker-ana",
        actor_role=Role.SOCIAL_WORKER.value,
        correlation_id=str(CORRELATION),
        causation_id=None if causation_id is None else str(causation_id),
        occurred_at=to_micros(occurred_at),
        recorded_at=to_micros(recorded_at),
    )


def _postgres_style(
    causation_id: UUID | None = CAUSATION,
    occurred_at: datetime = OCCURRED,
    recorded_at: datetime = RECORDED_AT,
) -> StoredEnvelope:
    return StoredEnvelope(
        event_id=EVENT_ID,
        source="intake",
        actor_id="worker-ana",
        actor_role=Role.SOCIAL_WORKER.value,
        correlation_id=CORRELATION,
        causation_id=causation_id,
        occurred_at=occurred_at,
        recorded_at=recorded_at,
    )


def _parsed_twin(stored: RecordedEvent) -> RecordedEvent:
    """The same record built from objects, as every record was before envelopes were lazy."""
    return RecordedEvent(
        event_id=stored.event_id,
        stream=stored.stream,
        sequence=stored.sequence,
        position=stored.position,
        recorded_at=stored.recorded_at,
        event=stored.event,
        metadata=stored.metadata,
    ).keeping_stored_form(stored.stored_form, in_clear=stored.stored_in_clear)


def _from_attributes(recorded: RecordedEvent) -> list[tuple[str, bytes]]:
    """The headers of ``recorded``: in structured mode, a stored form in clear left out."""
    structured = recorded.stored_in_clear
    content_type = STRUCTURED_CONTENT_TYPE if structured else JSON_CONTENT_TYPE
    headers = [(KAFKA_CONTENT_TYPE_HEADER, content_type.encode())]
    headers.extend(
        (f"{KAFKA_HEADER_PREFIX}{name}", str(value).encode())
        for name, value in context_attributes(recorded).items()
        if name != "datacontenttype"
        and not (structured and name in {"storedversion", "storeddata"})
    )
    return headers


def _assert_same_kafka_record(stored: RecordedEvent) -> None:
    # Headers first, before anything is parsed: the fast path must not depend on it.
    assert stored.stored_envelope is not None
    fast = to_kafka_binary(stored)
    twin = _parsed_twin(stored)
    slow = to_kafka_binary(twin)
    assert twin.stored_envelope is None
    assert fast == slow
    assert fast.headers == _from_attributes(twin)


MOMENTS = [
    OCCURRED,
    datetime(2024, 3, 4, 17, 30, tzinfo=UTC),  # microsecond == 0: no fraction
    datetime(2024, 3, 4, 17, 30, 59, 999_999, tzinfo=UTC),
    datetime(2024, 3, 4, 17, 31, 0, 1, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # before the epoch
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
]


@pytest.mark.parametrize("style", [_sqlite_style, _postgres_style])
@pytest.mark.parametrize("causation_id", [CAUSATION, None])
def test_headers_from_stored_values_are_those_of_the_parsed_record(
    style: Style, causation_id: UUID | None
) -> None:
    for event in example_events():
        _assert_same_kafka_record(_stored(event, style(causation_id)))


@pytest.mark.parametrize("style", [_sqlite_style, _postgres_style])
@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_times_are_formatted_as_before(style: Style, moment: datetime) -> None:
    event = example_events()[0]
    # occurred_at and recorded_at in turn, so the cache of whole seconds is exercised too.
    _assert_same_kafka_record(_stored(event, style(occurred_at=moment)))
    _assert_same_kafka_record(_stored(event, style(recorded_at=moment, occurred_at=OCCURRED)))


def test_times_with_an_offset_keep_it() -> None:
    event = example_events()[0]
    stored = _stored(event, _postgres_style(occurred_at=datetime(2024, 3, 4, 18, 30, tzinfo=CET)))
    _assert_same_kafka_record(stored)
    assert dict(to_kafka_binary(stored).headers)["ce_time"] == b"2024-03-04T18:30:00+01:00"


def test_older_versions_are_upcast_in_the_record() -> None:
    for legacy in legacy_example_events():
        stored = _stored(legacy, _sqlite_style())
        assert stored.schema_version > legacy.schema_version
        headers = dict(to_kafka_binary(stored).headers)
        assert headers["ce_schemaversion"] == str(stored.schema_version).encode()
        # The current model's data (only the marks may have changed: then the same JSON); in
        # structured mode when the stored form holds a value in clear the model now seals.
        value = json.loads(to_kafka_binary(stored).value)
        data = value["data"] if stored.stored_in_clear else value
        assert data == json.loads(encode(stored.event))
        assert type(stored.event) is not type(legacy)
        _assert_same_kafka_record(stored)


def test_ids_stored_in_another_spelling_are_sent_in_the_canonical_one() -> None:
    event = example_events()[0]
    stored = _stored(
        event,
        _sqlite_style()._replace(
            event_id=str(EVENT_ID).upper(), correlation_id=f"{{{CORRELATION}}}"
        ),
    )
    _assert_same_kafka_record(stored)
    assert dict(to_kafka_binary(stored).headers)["ce_id"] == str(EVENT_ID).encode()


def test_bad_stored_values_fail_when_used() -> None:
    event = example_events()[0]
    bad_role = _stored(event, _sqlite_style()._replace(actor_role="janitor"))
    assert bad_role.event_id == EVENT_ID  # the rest is still readable
    with pytest.raises(ValueError, match="janitor"):
        _ = bad_role.metadata
    with pytest.raises(ValueError, match="janitor"):
        to_kafka_binary(bad_role)
    bad_id = _stored(event, _sqlite_style()._replace(event_id="not-a-uuid"))
    with pytest.raises(ValueError, match="badly formed"):
        _ = bad_id.event_id
    with pytest.raises(ValueError, match="badly formed"):
        to_kafka_binary(bad_id)
    with pytest.raises(ValueError, match="sequence"):
        to_kafka_binary(_stored(event, _sqlite_style(), number=-1_001))


def test_stored_data_no_reader_accepts_is_the_servers_fault() -> None:
    """Current or superseded (upcast from a model of the same title), data the store holds
    that does not decode fails as the server's fault, never as an InvalidEventError (a refusal
    of the caller's input: INVALID_ARGUMENT naming the stored event's fields)."""
    for event in (example_events()[0], *legacy_example_events()[:1]):
        document = json.loads(encode(event))
        document[event.subject_field] = "x" * 65  # over an Identifier's 64 characters
        stored = RecordedEvent.stored(
            stream="case-bad",
            sequence=3,
            position=1_003,
            event_type=event.event_type,
            subject=event.subject,
            schema_version=event.schema_version,
            data=json.dumps(document).encode(),
            registry=REGISTRY,
            envelope=_sqlite_style(),
        )
        with pytest.raises(
            UnreadableStoredEventError, match="event 3 of stream 'case-bad'"
        ) as failed:
            _ = stored.event
        assert not isinstance(failed.value, InvalidEventError)
        assert isinstance(failed.value.__cause__, InvalidEventError)
        assert [p.field for p in failed.value.problems] == [event.subject_field]


@pytest.mark.parametrize("style", [_sqlite_style, _postgres_style])
def test_the_envelope_is_parsed_once_into_the_same_values(style: Style) -> None:
    event = example_events()[0]
    stored = _stored(event, style())
    assert stored.event_id == EVENT_ID
    assert stored.recorded_at == RECORDED_AT
    assert stored.metadata == EventMetadata(
        source="intake",
        actor=Actor("worker-ana", Role.SOCIAL_WORKER),
        occurred_at=OCCURRED,
        correlation_id=CORRELATION,
        causation_id=CAUSATION,
    )
    assert stored.event_id is stored.event_id
    assert stored.recorded_at is stored.recorded_at
    assert stored.metadata is stored.metadata
    assert stored.event == event


def test_a_stored_record_equals_its_parsed_twin() -> None:
    event = example_events()[0]
    stored = _stored(event, _sqlite_style())
    twin = _parsed_twin(_stored(event, _sqlite_style()))
    assert stored == twin
    assert hash(stored) == hash(twin)
    assert repr(stored) == repr(twin)
    assert stored != _stored(event, _sqlite_style()._replace(causation_id=None))


def test_records_stay_immutable() -> None:
    event = example_events()[0]
    for record in (_stored(event, _sqlite_style()), _parsed_twin(_stored(event, _sqlite_style()))):
        assert type(record) is RecordedEvent
        for name in ("event_id", "recorded_at", "metadata", "stream", "position", "_stored"):
            with pytest.raises(AttributeError, match="immutable"):
                setattr(record, name, None)


async def test_records_read_back_from_sqlite_forward_exactly_as_appended(
    store: SqliteEventStore,
) -> None:
    occurred = [
        datetime.now(UTC),
        datetime.now(UTC).replace(microsecond=0),
        datetime(2024, 3, 4, 18, 30, 0, 5, tzinfo=CET),
    ]
    events = example_events()
    written: list[RecordedEvent] = []
    for number, event in enumerate(events):
        new = NewEvent(
            event=event,
            metadata=EventMetadata(
                source="intake",
                actor=Actor("worker-ana", Role.SOCIAL_WORKER),
                occurred_at=occurred[number % len(occurred)],
                correlation_id=CORRELATION,
                causation_id=CAUSATION if number % 2 else None,
            ),
        )
        written.extend(await store.append(f"stream-{number}", [new], NO_STREAM))
    read = await store.read_all(0, len(events) + 1)

    assert [r.stored_envelope is not None for r in read] == [True] * len(events)
    for record in read:
        _assert_same_kafka_record(record)
    assert read == written
    # Times come back in UTC (the same instant; the header says Z instead of +01:00), as they
    # always did; otherwise a record forwarded from the store is the one appended.
    assert read[2].metadata.occurred_at.tzinfo is UTC
    utc = [n for n in range(len(events)) if n % len(occurred) != 2]
    assert [to_kafka_binary(read[n]) for n in utc] == [to_kafka_binary(written[n]) for n in utc]


def test_stored_micros_round_trip_as_before() -> None:
    # from_micros and the record's own parsing must agree on every instant.
    for moment in MOMENTS:
        micros = to_micros(moment)
        stored = _stored(example_events()[0], _sqlite_style(recorded_at=moment))
        assert stored.recorded_at == from_micros(micros) == moment
