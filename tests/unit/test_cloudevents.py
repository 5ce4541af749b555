"""CloudEvents 1.0 mapping: JSON format and Kafka binary mode round-trip exactly; poison messages
are refused with the header or attribute at fault."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import jsonschema
import pytest

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.store.guard import storable_data
from events.catalog.assignment import CaseAssigned
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseOpened, PresentingNeed
from events.catalog.clients import ClientRegistered
from events.catalog.examples import example_events, legacy_example_events
from events.catalog.ledger import LedgerInconsistencyDetected
from events.catalog.values import NeedCategory
from events.catalog_registry import build_registry
from events.cloudevents import (
    MAX_COUNTER,
    MAX_IDENTIFIER_CHARS,
    MAX_STREAM_CHARS,
    MAX_SUBJECT_CHARS,
    KafkaRecord,
    UndecodableMessageError,
    dataschema_uri,
    envelope_json_schema,
    from_json_lines,
    from_kafka_binary,
    from_structured,
    iter_json_lines,
    service_of,
    source_uri,
    to_json_lines,
    to_kafka_binary,
    to_structured,
)
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from events.errors import InvalidEventError, MissingUpcasterError, UnknownEventTypeError
from events.registry import EventRegistry, encode
from services.audit.app.handlers import SERVICE_SOURCE as AUDIT_SOURCE
from services.coordination.app.handlers.running import SOURCE as COORDINATION_SOURCE
from services.intake.app.handlers import SOURCE as INTAKE_SOURCE
from services.planning.app.handlers import SOURCE as PLANNING_SOURCE
from tests.support.stored import as_stored

CET = timezone(timedelta(hours=1))
CORRELATION = UUID("0f0e0d0c-0b0a-4908-8706-050403020100")
CAUSATION = UUID("11111111-2222-4333-8444-555555555555")


def _recorded(
    event: CaseEvent,
    *,
    number: int = 1,
    causation_id: UUID | None = CAUSATION,
    source: str = "intake",
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
            occurred_at=datetime(2024, 3, 4, 17, 30, tzinfo=CET),
            correlation_id=CORRELATION,
            causation_id=causation_id,
        ),
    )


RECORDED = [_recorded(event, number=n) for n, event in enumerate(example_events(), start=1)]


@pytest.fixture
def registry() -> EventRegistry:
    return build_registry()


def _opened() -> RecordedEvent:
    opened = next(r for r in RECORDED if r.event_type == CaseOpened.event_type)
    return opened


def _headers(record: KafkaRecord) -> dict[str, bytes]:
    return dict(record.headers)


def _without(record: KafkaRecord, *names: str) -> list[tuple[str, bytes]]:
    return [(key, value) for key, value in record.headers if key not in names]


def _replaced(record: KafkaRecord, name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(key, value if key == name else old) for key, old in record.headers]


def _fields(error: InvalidEventError) -> set[str]:
    return {problem.field for problem in error.problems}


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("recorded", RECORDED, ids=lambda recorded: recorded.event_type)
def test_structured_round_trip(recorded: RecordedEvent, registry: EventRegistry) -> None:
    document = to_structured(recorded)
    through_json = json.loads(json.dumps(document))
    assert from_structured(through_json, registry) == recorded


@pytest.mark.parametrize("recorded", RECORDED, ids=lambda recorded: recorded.event_type)
def test_kafka_binary_round_trip(recorded: RecordedEvent, registry: EventRegistry) -> None:
    record = to_kafka_binary(recorded)
    assert record.key == recorded.subject.encode()
    assert record.value == encode(recorded.event)
    decoded = from_kafka_binary(record.key, record.headers, record.value, registry)
    assert decoded == recorded
    assert to_kafka_binary(decoded) == record


@pytest.mark.parametrize("postgres", [False, True], ids=["sqlite", "postgres"])
@pytest.mark.parametrize("recorded", RECORDED, ids=lambda recorded: recorded.event_type)
def test_a_stored_record_is_structured_from_its_data_without_decoding_it(
    recorded: RecordedEvent,
    postgres: bool,
    registry: EventRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Audit copies every access record this way: the stored JSON is the data, the envelope
    as stored gives the attributes; both as the parsed record would give them."""

    def refuse(*args: object) -> CaseEvent:
        raise AssertionError("the event was decoded")

    stored = as_stored(recorded, registry, postgres=postgres)
    monkeypatch.setattr(registry, "decode", refuse)
    document = to_structured(stored)
    monkeypatch.undo()
    parsed = RecordedEvent(
        event_id=stored.event_id,
        stream=stored.stream,
        sequence=stored.sequence,
        position=stored.position,
        recorded_at=stored.recorded_at,
        event=stored.event,
        metadata=stored.metadata,
    )
    assert document == to_structured(parsed)
    assert from_structured(document, registry) == recorded


def test_a_stored_record_without_causation_has_no_causation_attribute(
    registry: EventRegistry,
) -> None:
    stored = as_stored(_recorded(example_events()[1], causation_id=None), registry)
    assert "causationid" not in to_structured(stored)


def test_round_trip_without_causation(registry: EventRegistry) -> None:
    recorded = _recorded(example_events()[1], causation_id=None)
    assert "causationid" not in to_structured(recorded)
    assert "ce_causationid" not in _headers(to_kafka_binary(recorded))
    assert from_structured(to_structured(recorded), registry) == recorded


def test_json_lines_round_trip(registry: EventRegistry) -> None:
    text = to_json_lines(RECORDED)
    lines = text.splitlines()
    assert len(lines) == len(RECORDED)
    assert text.endswith("\n")
    assert "".join(iter_json_lines(RECORDED)) == text
    assert all(json.loads(line)["specversion"] == "1.0" for line in lines)
    assert from_json_lines(text, registry) == RECORDED
    assert to_json_lines([]) == ""


def test_json_lines_are_cut_at_line_feeds_only(registry: EventRegistry) -> None:
    # JSON leaves these unescaped in strings; str.splitlines would cut the event at each.
    reason = "Knows the family\u2028and\u2029the street\x85well"
    assigned = next(r for r in RECORDED if isinstance(r.event, CaseAssigned))
    event = assigned.event.model_copy(update={"reason": reason})
    recorded = [_recorded(event), RECORDED[0]]
    text = to_json_lines(recorded).replace("\n", "\r\n", 1)
    assert reason in text

    assert from_json_lines(text, registry) == recorded


def test_json_lines_errors_name_the_line(registry: EventRegistry) -> None:
    lines = to_json_lines(RECORDED[:3]).splitlines()
    broken = json.loads(lines[1])
    del broken["stream"]
    lines[1] = json.dumps(broken)
    with pytest.raises(UndecodableMessageError) as caught:
        from_json_lines("\n".join(lines), registry)
    assert _fields(caught.value) == {"line 2: stream"}
    with pytest.raises(UndecodableMessageError, match="line 3: not valid JSON"):
        from_json_lines("\n".join([lines[0], "", "{not json"]), registry)


# --- attributes ---------------------------------------------------------------------------------


def test_structured_attributes() -> None:
    recorded = _opened()
    document = to_structured(recorded)
    assert document == {
        "specversion": "1.0",
        "id": str(recorded.event_id),
        "source": "/casetrail/intake",
        "type": "casetrail.case.opened",
        "subject": "case-2024-0042",
        "time": "2024-03-04T17:30:00+01:00",
        "datacontenttype": "application/json",
        "dataschema": "https://casetrail.example/schemas/casetrail.case.opened/"
        f"v{CaseOpened.schema_version}.json",
        "sequence": f"{recorded.sequence:019d}",
        "stream": "case-case-2024-0042",
        "schemaversion": CaseOpened.schema_version,
        "actorid": "worker-ana",
        "actorrole": "social_worker",
        "correlationid": str(CORRELATION),
        "causationid": str(CAUSATION),
        "occurredat": "2024-03-04T17:30:00+01:00",
        "recordedat": "2024-03-05T09:00:01.250000Z",
        "sourceposition": f"{recorded.position:019d}",
        "data": json.loads(encode(recorded.event)),
    }


def test_attribute_names_follow_the_cloudevents_naming_rule() -> None:
    for name in to_structured(_opened()):
        assert re.fullmatch(r"[a-z0-9]{1,20}", name), name


def test_zero_padded_counters_sort_as_strings() -> None:
    small = to_structured(_recorded(example_events()[1], number=9))
    large = to_structured(_recorded(example_events()[1], number=10))
    assert small["sequence"] < large["sequence"]
    assert small["sourceposition"] < large["sourceposition"]


def test_kafka_headers() -> None:
    record = to_kafka_binary(_opened())
    names = [name for name, _ in record.headers]
    assert len(names) == len(set(names))
    assert names[0] == "content-type"
    assert all(name.startswith("ce_") for name in names[1:])
    headers = _headers(record)
    assert headers["content-type"] == b"application/json"
    assert headers["ce_type"] == b"casetrail.case.opened"
    assert headers["ce_schemaversion"] == str(CaseOpened.schema_version).encode()
    assert headers["ce_time"] == b"2024-03-04T17:30:00+01:00"
    assert "ce_datacontenttype" not in headers
    assert all(isinstance(value, bytes) for value in headers.values())


def test_client_events_are_keyed_by_client() -> None:
    recorded = next(r for r in RECORDED if r.event_type == ClientRegistered.event_type)
    assert to_kafka_binary(recorded).key == b"client-7f3a"
    assert to_structured(recorded)["subject"] == "client-7f3a"


@pytest.mark.parametrize(
    ("service", "source"),
    [("intake", "/casetrail/intake"), ("casetrail/test", "casetrail/test"), ("urn:x:y", "urn:x:y")],
)
def test_source_mapping(service: str, source: str) -> None:
    assert source_uri(service) == source
    assert service_of(source) == service


@pytest.mark.parametrize(
    "recorded", [INTAKE_SOURCE, COORDINATION_SOURCE, PLANNING_SOURCE, AUDIT_SOURCE]
)
def test_the_services_sources_travel_as_the_envelope_schema_says(recorded: str) -> None:
    # The published contract states what subscribers receive: the services' casetrail/<name>,
    # passed through unchanged (it once promised /casetrail/<name>, which nothing sent).
    description = envelope_json_schema()["properties"]["source"]["description"]
    assert re.fullmatch(r"casetrail/[a-z]+", recorded)
    assert source_uri(recorded) == recorded
    assert recorded in description
    assert "/casetrail/" not in description


def test_dataschema_points_at_the_published_file() -> None:
    assert dataschema_uri("casetrail.case.opened", 1) == (
        "https://casetrail.example/schemas/casetrail.case.opened/v1.json"
    )


def test_naive_times_cannot_be_encoded() -> None:
    recorded = _opened()
    naive = RecordedEvent(
        event_id=recorded.event_id,
        stream=recorded.stream,
        sequence=recorded.sequence,
        position=recorded.position,
        recorded_at=datetime(2024, 3, 5, 9, 0),
        event=recorded.event,
        metadata=recorded.metadata,
    )
    with pytest.raises(ValueError, match="recorded_at must be timezone-aware"):
        to_structured(naive)


def test_envelope_schema_requires_what_the_decoder_requires() -> None:
    schema = envelope_json_schema()
    document = to_structured(_opened())
    assert set(schema["required"]) == set(document) - {"causationid"}
    # traceparent: only on an event recorded by a traced command; storedversion/storeddata
    # only on one stored under an older schema version
    optional = {"traceparent", "storedversion", "storeddata"}
    assert set(schema["properties"]) == set(document) | optional
    assert schema["properties"]["actorrole"]["enum"] == [role.value for role in Role]


# --- upcasting on decode ------------------------------------------------------------------------


def _as_v1(recorded: RecordedEvent) -> tuple[dict[str, Any], KafkaRecord]:
    v1 = legacy_example_events()[0]
    document = to_structured(recorded)
    document.update(
        schemaversion=1,
        dataschema=dataschema_uri(v1.event_type, 1),
        subject=v1.subject,
        data=json.loads(encode(v1)),
    )
    record = to_kafka_binary(recorded)
    headers = _replaced(record, "ce_schemaversion", b"1")
    headers = [(k, v) for k, v in headers if k != "ce_dataschema"]
    return document, KafkaRecord(key=record.key, headers=headers, value=encode(v1))


def test_old_versions_are_upcast_on_decode(registry: EventRegistry) -> None:
    document, record = _as_v1(_opened())
    expected_needs = (
        PresentingNeed(
            category=NeedCategory.OTHER, description="Cannot manage at home after a fall"
        ),
    )
    for decoded in (
        from_structured(document, registry),
        from_kafka_binary(record.key, record.headers, record.value, registry),
    ):
        assert isinstance(decoded.event, CaseOpened)
        assert decoded.event.presenting_needs == expected_needs
        assert decoded.schema_version == CaseOpened.schema_version


def test_old_version_without_upcaster_is_refused() -> None:
    bare = EventRegistry([type(_opened().event)])
    document, _ = _as_v1(_opened())
    with pytest.raises(MissingUpcasterError):
        from_structured(document, bare)


# --- poison messages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "ce_id",
        "ce_source",
        "ce_specversion",
        "ce_type",
        "ce_subject",
        "ce_time",
        "ce_sequence",
        "ce_stream",
        "ce_schemaversion",
        "ce_actorid",
        "ce_actorrole",
        "ce_correlationid",
        "ce_recordedat",
        "ce_sourceposition",
    ],
)
def test_missing_header_is_named(header: str, registry: EventRegistry) -> None:
    record = to_kafka_binary(_opened())
    with pytest.raises(UndecodableMessageError) as caught:
        from_kafka_binary(record.key, _without(record, header), record.value, registry)
    assert caught.value.problems[0].field == header
    assert caught.value.problems[0].problem == "missing header"
    assert header in str(caught.value)


@pytest.mark.parametrize(
    ("header", "value", "problem"),
    [
        ("ce_sequence", b"abc", "whole number >= 1"),
        ("ce_sequence", b"0", "whole number >= 1"),
        ("ce_sourceposition", b"-4", "whole number >= 0"),
        ("ce_schemaversion", b"two", "whole number >= 1"),
        ("ce_actorrole", b"boss", "unknown role 'boss'"),
        ("ce_id", b"not-a-uuid", "must be a UUID"),
        ("ce_correlationid", b"42", "must be a UUID"),
        ("ce_time", b"2024-03-04T17:30:00", "RFC 3339"),
        ("ce_recordedat", b"yesterday", "RFC 3339"),
        ("ce_specversion", b"0.3", "must be '1.0'"),
        ("ce_stream", b"", "non-empty string"),
        ("ce_type", b"\xff\xfe", "not UTF-8"),
        ("content-type", b"text/xml", "must be application/json"),
        ("ce_occurredat", b"2024-03-04T17:31:00+01:00", "same instant as time"),
        ("ce_dataschema", dataschema_uri("casetrail.case.opened", 1).encode(), "must be"),
    ],
)
def test_malformed_header_is_named(
    header: str, value: bytes, problem: str, registry: EventRegistry
) -> None:
    record = to_kafka_binary(_opened())
    headers = _replaced(record, header, value)
    with pytest.raises(UndecodableMessageError) as caught:
        from_kafka_binary(record.key, headers, record.value, registry)
    assert [p.field for p in caught.value.problems] == [header]
    assert problem in caught.value.problems[0].problem


def test_every_problem_is_reported_at_once(registry: EventRegistry) -> None:
    record = to_kafka_binary(_opened())
    headers = _without(record, "ce_stream", "ce_actorid")
    headers = [*headers, ("ce_type", b"casetrail.case.opened")]
    with pytest.raises(UndecodableMessageError) as caught:
        from_kafka_binary(record.key, headers, record.value, registry)
    assert _fields(caught.value) == {"ce_stream", "ce_actorid", "ce_type"}
    assert caught.value.event_type == "casetrail.case.opened"


@pytest.mark.parametrize(
    ("value", "problem"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "must be a JSON object"), (None, "missing")],
)
def test_undecodable_value_is_named(
    value: bytes | None, problem: str, registry: EventRegistry
) -> None:
    record = to_kafka_binary(_opened())
    with pytest.raises(UndecodableMessageError) as caught:
        from_kafka_binary(record.key, record.headers, value, registry)
    assert _fields(caught.value) == {"value"}
    assert problem in str(caught.value)


def test_bad_data_names_the_event_type_and_field(registry: EventRegistry) -> None:
    record = to_kafka_binary(_opened())
    data = json.loads(record.value)
    data["presenting_needs"] = []
    with pytest.raises(InvalidEventError) as caught:
        from_kafka_binary(record.key, record.headers, json.dumps(data).encode(), registry)
    assert caught.value.event_type == "casetrail.case.opened"
    assert _fields(caught.value) == {"presenting_needs"}


def test_unknown_type_is_refused(registry: EventRegistry) -> None:
    record = to_kafka_binary(_opened())
    headers = _replaced(record, "ce_type", b"casetrail.case.vanished")
    headers = [(k, v) for k, v in headers if k != "ce_dataschema"]
    with pytest.raises(UnknownEventTypeError):
        from_kafka_binary(record.key, headers, record.value, registry)


def test_subject_must_match_the_data(registry: EventRegistry) -> None:
    record = to_kafka_binary(_opened())
    headers = _replaced(record, "ce_subject", b"case-other")
    with pytest.raises(UndecodableMessageError) as caught:
        from_kafka_binary(record.key, headers, record.value, registry)
    assert _fields(caught.value) == {"ce_subject"}
    assert "data.case_id" in str(caught.value)


def test_structured_problems_name_the_attribute(registry: EventRegistry) -> None:
    document = to_structured(_opened())
    document["sequence"] = True
    document["time"] = 1709569800
    del document["data"]
    with pytest.raises(UndecodableMessageError) as caught:
        from_structured(document, registry)
    assert _fields(caught.value) == {"sequence", "time", "data"}
    with pytest.raises(UndecodableMessageError, match="binary data is not supported"):
        from_structured(to_structured(_opened()) | {"data_base64": "e30="}, registry)
    with pytest.raises(UndecodableMessageError, match="must be a JSON object"):
        from_structured([], registry)  # type: ignore[arg-type]


def test_structured_counters_may_be_json_numbers(registry: EventRegistry) -> None:
    recorded = _opened()
    document = to_structured(recorded) | {
        "sequence": recorded.sequence,
        "schemaversion": str(CaseOpened.schema_version),
    }
    assert from_structured(document, registry) == recorded


def test_kafka_structured_mode_is_understood(registry: EventRegistry) -> None:
    recorded = _opened()
    value = json.dumps(to_structured(recorded)).encode()
    headers = [("content-type", b"application/cloudevents+json; charset=utf-8")]
    assert from_kafka_binary(None, headers, value, registry) == recorded


def test_unrelated_headers_and_unknown_extensions_are_ignored(registry: EventRegistry) -> None:
    recorded = _opened()
    record = to_kafka_binary(recorded)
    headers = [("traceparent", b"00-abc"), *record.headers, ("ce_partnerext", b"x")]
    assert from_kafka_binary(b"anything", headers, record.value, registry) == recorded


def test_timestamps_from_other_producers(registry: EventRegistry) -> None:
    recorded = _opened()
    document = to_structured(recorded)
    document["recordedat"] = "2024-03-05t09:00:01.250000999z"
    document["time"] = document["occurredat"] = "2024-03-04T16:30:00Z"
    decoded = from_structured(document, registry)
    assert decoded.recorded_at == recorded.recorded_at
    assert decoded.metadata.occurred_at == recorded.metadata.occurred_at


# --- the envelope schema's rules, the same in both formats --------------------------------------

TRACE_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

# (attribute, value): refused in both formats, and by the published envelope schema (in words
# for a counter past 64 bits; RFC 3339 for a time, which the format checker here may not know).
REFUSED_ATTRIBUTES = [
    ("sequence", "1\n"),
    ("sequence", str(MAX_COUNTER + 1)),
    ("sourceposition", "9" * 19),
    ("schemaversion", "2\n"),
    ("time", "2024-03-04T17:30:00+01:00\n"),
    ("recordedat", "2024-03-05T09:00:01Z "),
    ("id", "{00000000-0000-0000-0000-000000000001}"),
    ("id", "urn:uuid:00000000-0000-0000-0000-000000000001"),
    ("correlationid", "0f0e0d0c0b0a49088706050403020100"),
    ("causationid", "11111111-2222-4333-8444-555555555555\n"),
    ("traceparent", "not a trace context\r\nX-Injected: 1"),
    ("traceparent", TRACE_PARENT + "\n"),
    ("actorid", "worker-ana\x00"),
    ("actorid", "a" * (MAX_IDENTIFIER_CHARS + 1)),
    ("stream", "s" * (MAX_STREAM_CHARS + 1)),
    ("stream", "case-2024-0001\n"),
    ("subject", "case-2024-0001\r\n"),
    ("source", "casetrail/intake\x85"),
]
_NOT_CHECKED_BY_THE_SCHEMA_HERE = {str(MAX_COUNTER + 1), "9" * 19}
_NOT_CHECKED_BY_THE_SCHEMA_HERE |= {v for a, v in REFUSED_ATTRIBUTES if a in ("time", "recordedat")}


def _envelope_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(
        envelope_json_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    # ECMA-262 ``$`` (the schema's dialect) matches at the very end only, Python's also before
    # a final line feed: the schema's patterns are checked as ECMA reads them.
    errors = [e.message for e in validator.iter_errors(document) if e.validator != "pattern"]
    for name, value in document.items():
        pattern = envelope_json_schema()["properties"].get(name, {}).get("pattern")
        if pattern is not None and not re.fullmatch(pattern.strip("^$"), str(value)):
            errors.append(f"{name}: does not match {pattern}")
    return errors


@pytest.mark.parametrize(("attribute", "value"), REFUSED_ATTRIBUTES)
def test_an_attribute_the_envelope_schema_refuses_is_refused_in_both_formats(
    attribute: str, value: str, registry: EventRegistry
) -> None:
    recorded = _opened().traced(TRACE_PARENT)
    document = json.loads(json.dumps(to_structured(recorded))) | {attribute: value}
    if value not in _NOT_CHECKED_BY_THE_SCHEMA_HERE:
        assert _envelope_errors(document), "the published schema accepts it"
    with pytest.raises(UndecodableMessageError) as structured:
        from_structured(document, registry)
    assert _fields(structured.value) == {attribute}

    record = to_kafka_binary(recorded)
    header = f"ce_{attribute}"
    with pytest.raises(UndecodableMessageError) as binary:
        from_kafka_binary(
            record.key, _replaced(record, header, value.encode()), record.value, registry
        )
    assert _fields(binary.value) == {header}


@pytest.mark.parametrize(
    ("attribute", "number"),
    [("sequence", 10**25), ("sourceposition", 10**19), ("schemaversion", MAX_COUNTER + 1)],
)
def test_a_counter_past_64_bits_is_refused_as_a_json_number_too(
    attribute: str, number: int, registry: EventRegistry
) -> None:
    """Binary mode reads at most 19 digits: a JSON number, unbounded, is held to the same."""
    document = to_structured(_opened()) | {attribute: number}
    with pytest.raises(UndecodableMessageError) as caught:
        from_structured(json.loads(json.dumps(document)), registry)
    assert _fields(caught.value) == {attribute}
    assert str(MAX_COUNTER) in str(caught.value)


def test_the_bounds_themselves_are_decoded_and_encoded_again(registry: EventRegistry) -> None:
    opened = _opened()
    recorded = RecordedEvent(
        event_id=opened.event_id,
        stream="s" * MAX_STREAM_CHARS,
        sequence=MAX_COUNTER,
        position=MAX_COUNTER,
        recorded_at=opened.recorded_at,
        event=opened.event,
        metadata=replace(
            opened.metadata, actor=Actor("a" * MAX_IDENTIFIER_CHARS, Role.SOCIAL_WORKER)
        ),
    ).traced(TRACE_PARENT)
    record = to_kafka_binary(recorded)
    decoded = from_kafka_binary(record.key, record.headers, record.value, registry)
    assert decoded == recorded
    assert to_kafka_binary(decoded) == record
    document = to_structured(recorded)
    assert not _envelope_errors(json.loads(json.dumps(document)))
    numbers = document | {"sequence": MAX_COUNTER, "sourceposition": MAX_COUNTER}
    assert from_json_lines(to_json_lines([from_structured(numbers, registry)]), registry) == [
        recorded
    ]


def test_ids_in_capitals_are_read(registry: EventRegistry) -> None:
    """The schema's ``uuid`` format takes hexadecimal digits in either case (RFC 9562)."""
    recorded = _opened()
    document = to_structured(recorded) | {"id": str(recorded.event_id).upper()}
    assert from_structured(document, registry) == recorded


# --- hostile JSON, in a record's value and in its storeddata -------------------------------------

_DEEP = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


def _with_value_problem(value: bytes, problem: str) -> None:
    record = to_kafka_binary(_opened())
    with pytest.raises(UndecodableMessageError) as caught:
        from_kafka_binary(record.key, record.headers, value, build_registry())
    assert [(p.field, problem in p.problem) for p in caught.value.problems] == [("value", True)]


def test_a_value_nested_too_deep_is_undecodable() -> None:
    _with_value_problem(_DEEP, "nested too deep")


def test_a_value_with_a_number_too_long_is_undecodable() -> None:
    value = encode(_opened().event)
    _with_value_problem(value[:-1] + b',"x":' + b"9" * 5000 + b"}", "not valid JSON")


def test_a_value_with_a_key_twice_is_undecodable() -> None:
    """``json`` keeps the last value, other readers the first: they would read another event."""
    value = encode(_opened().event)
    _with_value_problem(value[:-1] + b',"case_id":"case-other"}', "key 'case_id' appears twice")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_a_value_not_in_plain_utf8_is_undecodable(encoding: str) -> None:
    """A sealed value is found by its mark in the bytes, which UTF-16 hides."""
    value = encode(_opened().event).decode().encode(encoding)
    _with_value_problem(value, "not UTF-8" if encoding != "utf-8-sig" else "not valid JSON")


def test_a_structured_kafka_value_with_a_key_twice_names_the_value(
    registry: EventRegistry,
) -> None:
    value = json.dumps(to_structured(_opened())).encode()
    headers = [("content-type", b"application/cloudevents+json")]
    with pytest.raises(UndecodableMessageError) as caught:
        from_kafka_binary(None, headers, value[:-1] + b',"stream":"case-x"}', registry)
    assert _fields(caught.value) == {"value"}


@pytest.mark.parametrize("attribute", ["actorid", "stream", "source", "subject"])
def test_a_lone_surrogate_in_a_free_text_attribute_is_undecodable(
    attribute: str, registry: EventRegistry
) -> None:
    """JSON's ``"\\ud800"`` escape reads as a lone surrogate, no Unicode text: decoded, it
    failed later unencodable (``casetrail verify`` with a traceback hashing its leaf), where a
    consumer dead-letters an undecodable record (structured mode: Kafka's and an export's)."""
    document = to_structured(_opened()) | {attribute: "case-\ud800"}
    value = json.dumps(document).encode()
    assert b"\\ud800" in value
    headers = [("content-type", b"application/cloudevents+json")]
    with pytest.raises(UndecodableMessageError) as structured:
        from_structured(json.loads(value), registry)
    with pytest.raises(UndecodableMessageError) as kafka:
        from_kafka_binary(None, headers, value, registry)
    for caught in (structured, kafka):
        assert _fields(caught.value) == {attribute}
        assert "no lone surrogates" in str(caught.value)


_SEALED_LOOKING = "ct1~client-1~1~" + "A" * 40
"""A whole sealed value in form (no reader holds its key): data holding one is sealed data."""


def test_a_lone_surrogate_in_data_holding_a_sealed_value_is_refused_naming_its_field(
    registry: EventRegistry,
) -> None:
    """Data holding a sealed value is encoded canonically before the catalog sees it: a lone
    surrogate in it failed every decoder with a bare ``UnicodeEncodeError`` (a dead letter
    naming no field, ``casetrail verify`` with a traceback), where the same data unsealed is
    refused naming the field."""
    recorded = next(r for r in RECORDED if r.event_type == ClientRegistered.event_type)
    record = to_kafka_binary(recorded)
    data = json.loads(record.value) | {"preferred_language": "\ud800"}
    data["name"]["given_names"] = _SEALED_LOOKING
    value = json.dumps(data).encode()
    assert b"\\ud800" in value
    document = to_structured(recorded) | {"data": data}
    structured = [("content-type", b"application/cloudevents+json")]
    decoders: list[Callable[[], RecordedEvent]] = [
        lambda: from_kafka_binary(record.key, record.headers, value, registry),
        lambda: from_kafka_binary(record.key, structured, json.dumps(document).encode(), registry),
        lambda: from_structured(json.loads(json.dumps(document)), registry),
    ]
    for decode in decoders:
        with pytest.raises(InvalidEventError) as caught:
            decode()
        assert caught.value.event_type == ClientRegistered.event_type
        assert _fields(caught.value) == {"preferred_language"}
        assert "no lone surrogates" in str(caught.value)
        assert "\ud800" not in failure_text(caught.value)
    with pytest.raises(UndecodableMessageError) as lines:
        from_json_lines(json.dumps(document) + "\n", registry)
    assert _fields(lines.value) == {"line 1: preferred_language"}


def test_storeddata_nested_too_deep_is_undecodable(registry: EventRegistry) -> None:
    upcast = next(r for r in RECORDED if r.schema_version > 1)
    record = to_kafka_binary(upcast)
    stored = [("ce_storedversion", b"1"), ("ce_storeddata", base64.b64encode(_DEEP))]
    headers = [*record.headers, *stored]
    with pytest.raises(UndecodableMessageError) as caught:
        from_kafka_binary(record.key, headers, record.value, registry)
    assert _fields(caught.value) == {"ce_storeddata"}
    assert "nested too deep" in str(caught.value)


def test_a_json_line_with_a_key_twice_names_the_line(registry: EventRegistry) -> None:
    line = to_json_lines([_opened()]).removesuffix("}\n") + ',"stream":"case-x"}'
    with pytest.raises(UndecodableMessageError) as caught:
        from_json_lines(line, registry)
    assert [p.field for p in caught.value.problems] == ["line 1"]
    assert "key 'stream' appears twice" in str(caught.value)


def test_every_subject_a_model_takes_is_within_the_envelope_s_bound() -> None:
    """Bounded at 64, as an ``Identifier``, the subject refused audit's tamper alarm, whose
    subject is a ledger's origin (up to 200) for an agency name of 45 characters or more."""
    for event in [*example_events(), *legacy_example_events()]:
        model = type(event)
        field = model.model_json_schema()["properties"][model.subject_field]
        assert field.get("maxLength", MAX_SUBJECT_CHARS + 1) <= MAX_SUBJECT_CHARS, model


def test_a_tamper_alarm_of_a_long_agency_s_ledger_is_stored_and_decoded(
    registry: EventRegistry,
) -> None:
    alarm = next(e for e in example_events() if isinstance(e, LedgerInconsistencyDetected))
    origin = "casetrail/department-of-health-and-human-services-north/coordination"
    sample = _recorded(alarm)
    recorded = RecordedEvent(
        event_id=sample.event_id,
        stream="ledger-coordination",
        sequence=1,
        position=1,
        recorded_at=sample.recorded_at,
        event=alarm.updated(origin=origin),
        metadata=sample.metadata,
    )
    storable_data(recorded.stream, [NewEvent(recorded.event, recorded.metadata)])

    record = to_kafka_binary(recorded)
    assert from_kafka_binary(record.key, record.headers, record.value, registry) == recorded
