"""CloudEvents to recorded events, strictly: every problem named (``events.cloudevents``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from uuid import UUID

from events.catalog.base import CaseEvent
from events.cloudevents.attribute_reader import AttributeReader
from events.cloudevents.attributes import (
    JSON_CONTENT_TYPE,
    KAFKA_CONTENT_TYPE_HEADER,
    KAFKA_HEADER_PREFIX,
    LONE_SURROGATE,
    LONE_SURROGATE_PROBLEM,
    MAX_IDENTIFIER_CHARS,
    MAX_STREAM_CHARS,
    MAX_SUBJECT_CHARS,
    SCHEMA_BASE_URI,
    SPEC_VERSION,
    STORED_DATA_ATTRIBUTE,
    STORED_VERSION_ATTRIBUTE,
    STRUCTURED_CONTENT_TYPE,
    UndecodableMessageError,
    dataschema_uri,
    service_of,
)
from events.envelope import Actor, EventMetadata, RecordedEvent, StoredForm
from events.errors import FieldProblem, InvalidEventError
from events.registry import EventRegistry
from events.sealed_values import CIPHERTEXT_PREFIX, ERASED_FORMS, canonical_json
from events.strict_json import strict_json


def from_structured(document: Mapping[str, Any], registry: EventRegistry) -> RecordedEvent:
    """Decode a CloudEvents JSON-format document (as parsed JSON) into a recorded event."""
    if not isinstance(document, Mapping):
        raise UndecodableMessageError([FieldProblem("event", "must be a JSON object")])
    problems: list[FieldProblem] = []
    if "data_base64" in document:
        problems.append(FieldProblem("data_base64", "binary data is not supported, use data"))
    data = document.get("data")
    if not isinstance(data, dict):
        problems.append(
            FieldProblem("data", "missing" if data is None else "must be a JSON object")
        )
    reader = AttributeReader(document, label=lambda name: name, missing="missing attribute")
    return _decode(reader, data if isinstance(data, dict) else {}, problems, registry)


def from_kafka_binary(
    key: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    value: bytes | None,
    registry: EventRegistry,
) -> RecordedEvent:
    """Decode a Kafka record in CloudEvents binary mode (structured mode is also accepted)."""
    del key  # Partitioning only: the subject attribute is authoritative.
    problems: list[FieldProblem] = []
    attributes: dict[str, str] = {}
    content_type: str | None = None
    seen: set[str] = set()
    unreadable: set[str] = set()
    for name, raw in headers:
        if name != KAFKA_CONTENT_TYPE_HEADER and not name.startswith(KAFKA_HEADER_PREFIX):
            continue
        if name in seen:
            problems.append(FieldProblem(name, "header repeated"))
            continue
        seen.add(name)
        try:
            text = (raw or b"").decode("utf-8")
        except UnicodeDecodeError:
            problems.append(FieldProblem(name, "header value is not UTF-8"))
            unreadable.add(name)
            continue
        if name == KAFKA_CONTENT_TYPE_HEADER:
            content_type = text
        else:
            attributes[name.removeprefix(KAFKA_HEADER_PREFIX)] = text

    if content_type is not None and _media_type(content_type) == STRUCTURED_CONTENT_TYPE:
        document = _parse_object(value, "value", problems)
        if problems:
            raise UndecodableMessageError(problems)
        return from_structured(document, registry)
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    data = _parse_object(value, "value", problems)
    reader = AttributeReader(
        attributes,
        label=_kafka_header_name,
        missing="missing header",
        already_reported=unreadable,
    )
    return _decode(reader, data, problems, registry, value)


def json_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines of a JSON Lines text with their numbers (from 1), cut at line feeds only
    (a ``\\r`` before one is dropped). Not ``str.splitlines``: it also cuts at U+2028,
    U+2029, U+0085 and others, which JSON leaves unescaped inside strings (free text may
    hold them), so one event would read as several lines of broken JSON."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.removesuffix("\r")


def from_json_lines(text: str, registry: EventRegistry) -> list[RecordedEvent]:
    """Decode the output of ``to_json_lines``; errors name the line number."""
    decoded: list[RecordedEvent] = []
    for number, line in json_lines(text):
        if not line.strip():
            continue
        try:
            document = strict_json(line)
        except ValueError as error:
            raise UndecodableMessageError([FieldProblem(f"line {number}", str(error))]) from None
        try:
            decoded.append(from_structured(document, registry))
        except InvalidEventError as error:
            located = [FieldProblem(f"line {number}: {p.field}", p.problem) for p in error.problems]
            raise UndecodableMessageError(located, error.event_type) from None
    return decoded


def _decode(
    reader: AttributeReader,
    data: dict[str, Any],
    problems: list[FieldProblem],
    registry: EventRegistry,
    raw: bytes | None = None,
) -> RecordedEvent:
    specversion = reader.text("specversion")
    if specversion and specversion != SPEC_VERSION:
        reader.problem("specversion", f"must be {SPEC_VERSION!r}, got {specversion!r}")
    event_id = reader.uuid("id")
    source = reader.free_text("source")
    event_type = reader.text("type")
    subject = reader.free_text("subject", MAX_SUBJECT_CHARS)
    occurred_at = reader.timestamp("time")
    content_type = reader.optional_text("datacontenttype")
    if content_type is not None and _media_type(content_type) != JSON_CONTENT_TYPE:
        reader.problem("datacontenttype", f"must be {JSON_CONTENT_TYPE}, got {content_type!r}")
    dataschema = reader.optional_text("dataschema")
    sequence = reader.counter("sequence", minimum=1)
    stream = reader.free_text("stream", MAX_STREAM_CHARS)
    schema_version = reader.counter("schemaversion", minimum=1)
    actor_id = reader.free_text("actorid", MAX_IDENTIFIER_CHARS)
    actor_role = reader.role("actorrole")
    correlation_id = reader.uuid("correlationid")
    causation_id = reader.optional_uuid("causationid")
    occurred_at_extension = reader.optional_timestamp("occurredat")
    recorded_at = reader.timestamp("recordedat")
    position = reader.counter("sourceposition", minimum=0)
    trace_parent = reader.optional_trace_parent("traceparent")
    stored_version = reader.optional_counter(STORED_VERSION_ATTRIBUTE, minimum=1)
    stored_data = reader.optional_binary(STORED_DATA_ATTRIBUTE)

    if not problems and not reader.problems:
        _check_stored_pair(reader, stored_version, stored_data, schema_version)
        if occurred_at_extension is not None and occurred_at_extension != occurred_at:
            reader.problem("occurredat", "must be the same instant as time")
        expected_schema = dataschema_uri(event_type, schema_version)
        if (
            dataschema is not None
            and dataschema.startswith(SCHEMA_BASE_URI)
            and dataschema != expected_schema
        ):
            reader.problem("dataschema", f"must be {expected_schema!r} for this type and version")
    problems = problems + reader.problems
    if problems:
        raise UndecodableMessageError(problems, event_type or None)

    received = data
    sealed: bytes | None = None
    if registry.is_sealed(raw if raw is not None else json.dumps(data, ensure_ascii=False)):
        canonical = _canonical_data(data, event_type)
        opened = json.loads(canonical)
        if registry.open_sealed_values(event_type, schema_version, event_id, opened):
            # Kept as stored (what the ledger hashed); the event gets the opened values.
            # Data holding no sealed value (text that only looks like one) was stored as the
            # event's own JSON, which the record re-encodes as for any other event.
            sealed, data = canonical, opened
    event: CaseEvent = registry.validate(event_type, schema_version, data)
    if event.subject != subject:
        mismatch = f"{subject!r} does not match data.{event.subject_field} {event.subject!r}"
        raise UndecodableMessageError([FieldProblem(reader.label("subject"), mismatch)], event_type)
    record = RecordedEvent(
        event_id=event_id,
        stream=stream,
        sequence=sequence,
        position=position,
        recorded_at=recorded_at,
        event=event,
        metadata=EventMetadata(
            source=service_of(source),
            actor=Actor(user_id=actor_id, role=actor_role),
            occurred_at=occurred_at,
            correlation_id=correlation_id,
            causation_id=causation_id,
        ),
    ).traced(trace_parent)
    if stored_version is not None and stored_data is not None:
        form = StoredForm(stored_version, stored_data)
        label = reader.label(STORED_DATA_ATTRIBUTE)
        stored_event = _upcast_stored(form, event_type, event_id, registry, label)
        difference = _difference(
            stored_event.model_dump(mode="json"),
            event.model_dump(mode="json"),
            received,
            "data",
            lambda: registry.client_erased(event),
        )
        # Published once its client's key was destroyed, ``data`` holds the erasure marker at
        # every sealed leaf, whatever the stored form holds there (a default, a clear value):
        # taken only when this reader's keys say the client is erased, or it holds none.
        if difference is not None and not registry.published_erased(stored_event, event):
            problem = f"does not upcast to the event's data (first difference at {difference})"
            raise UndecodableMessageError([FieldProblem(label, problem)], event_type)
        in_clear = registry.holds_in_clear(event_type, form.schema_version, form.data, event_id)
        record.keeping_stored_form(form, in_clear=in_clear)
    return record if sealed is None else record.with_data(sealed)


def _canonical_data(data: dict[str, Any], event_type: str) -> bytes:
    """``canonical_json`` of ``data``, refused as the catalog refuses it (naming the field,
    not quoting it) where it holds a lone surrogate (JSON's ``"\\ud800"``): no Unicode text,
    so no UTF-8 bytes. Data holding a sealed value is encoded before the catalog sees it,
    which failed with a bare ``UnicodeEncodeError`` (``casetrail verify`` with a traceback,
    a dead letter naming no field)."""
    try:
        return canonical_json(data)
    except UnicodeEncodeError:
        path = _surrogate_path(data, "") or "data"
        raise InvalidEventError(event_type, [FieldProblem(path, LONE_SURROGATE_PROBLEM)]) from None


def _surrogate_path(value: Any, path: str) -> str | None:
    """Where ``value`` (parsed JSON) first holds a lone surrogate, or ``None``: the text's
    path, or the object's holding a field name with one."""
    if isinstance(value, str):
        return path if LONE_SURROGATE.search(value) else None
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _surrogate_path(item, f"{path}[{index}]")) is not None:
                return found
    elif isinstance(value, dict):
        for name, item in value.items():
            if LONE_SURROGATE.search(name):
                return path or "data"
            if (found := _surrogate_path(item, f"{path}.{name}" if path else name)) is not None:
                return found
    return None


def _check_stored_pair(
    reader: AttributeReader, version: int | None, data: bytes | None, schema_version: int
) -> None:
    if version is None and data is not None:
        reader.problem(STORED_VERSION_ATTRIBUTE, f"missing: {STORED_DATA_ATTRIBUTE} needs it")
    elif data is None and version is not None:
        reader.problem(STORED_DATA_ATTRIBUTE, f"missing: {STORED_VERSION_ATTRIBUTE} needs it")
    elif version is not None and version >= schema_version:
        reader.problem(
            STORED_VERSION_ATTRIBUTE,
            f"must be below schemaversion {schema_version} (it marks an upcast event)",
        )


def _upcast_stored(
    form: StoredForm, event_type: str, event_id: UUID, registry: EventRegistry, label: str
) -> CaseEvent:
    """The event the stored form decodes to, at the current version (sealed values opened as
    the reader can, as for ``data``)."""
    try:
        document = _json_of(form.data)
    except ValueError as error:
        raise UndecodableMessageError([FieldProblem(label, str(error))], event_type) from None
    if not isinstance(document, dict):
        raise UndecodableMessageError([FieldProblem(label, "must be a JSON object")], event_type)
    try:
        if registry.is_sealed(form.data):
            registry.open_sealed_values(event_type, form.schema_version, event_id, document)
        return registry.validate(event_type, form.schema_version, document)
    except InvalidEventError as error:
        located = [FieldProblem(f"{label}: {p.field}", p.problem) for p in error.problems]
        raise UndecodableMessageError(located, event_type) from None


def _difference(
    upcast: Any, event: Any, received: Any, path: str, erased: Callable[[], bool]
) -> str | None:
    """Where the upcast stored data first differs from the event decoded from ``received``
    (the data as it came, before opening), or ``None``. A value sealed in ``received`` that this
    reader could not open (it reads as the erasure marker: key destroyed, or none held) is not
    compared, while ``erased()`` (this reader takes the event's client as erased, or holds no
    keys): the stored form may hold it sealed differently or, once upcast, in a shape whose
    sealed parts open as markers in other places. Otherwise such a value names a key other than
    the client's live one (another client's destroyed key opens as a marker unchecked), so it
    is compared as any: a record so altered on its way is no erasure."""
    if upcast == event:
        return None
    unopened = isinstance(received, str) and received.startswith(CIPHERTEXT_PREFIX)
    if unopened and event in ERASED_FORMS and erased():
        return None
    if isinstance(upcast, dict) and isinstance(event, dict):
        for name in sorted(upcast.keys() | event.keys()):
            inner = received.get(name) if isinstance(received, dict) else None
            found = _difference(upcast.get(name), event.get(name), inner, f"{path}.{name}", erased)
            if found is not None:
                return found
        return None
    if isinstance(upcast, list) and isinstance(event, list) and len(upcast) == len(event):
        items = received if isinstance(received, list) else []
        for index, (left, right) in enumerate(zip(upcast, event, strict=True)):
            inner = items[index] if index < len(items) else None
            found = _difference(left, right, inner, f"{path}[{index}]", erased)
            if found is not None:
                return found
        return None
    return path


def _kafka_header_name(attribute: str) -> str:
    if attribute == "datacontenttype":
        return KAFKA_CONTENT_TYPE_HEADER
    return f"{KAFKA_HEADER_PREFIX}{attribute}"


def _parse_object(value: bytes | None, name: str, problems: list[FieldProblem]) -> dict[str, Any]:
    if value is None:
        problems.append(FieldProblem(name, "missing"))
        return {}
    try:
        parsed = _json_of(value)
    except ValueError as error:
        problems.append(FieldProblem(name, str(error)))
        return {}
    if not isinstance(parsed, dict):
        problems.append(FieldProblem(name, "must be a JSON object"))
        return {}
    return parsed


def _json_of(raw: bytes) -> Any:
    """``raw`` read as UTF-8 and nothing else, then as strict JSON (``strict_json``); a
    ``ValueError`` names the problem. ``json.loads`` of bytes would guess UTF-16 and UTF-32
    too, where the check for sealed values (a mark in the bytes) sees nothing."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 (byte {error.start + 1})") from None
    return strict_json(text)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()
