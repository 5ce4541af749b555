"""Recorded events to CloudEvents: the JSON format (``to_structured``, JSON Lines) and Kafka
binary mode (``to_kafka_binary``), as ``events.cloudevents`` describes them."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from events.catalog.base import Role
from events.cloudevents.attributes import (
    JSON_CONTENT_TYPE,
    KAFKA_CONTENT_TYPE_HEADER,
    KAFKA_HEADER_PREFIX,
    ORDER_DIGITS,
    SPEC_VERSION,
    STORED_DATA_ATTRIBUTE,
    STORED_VERSION_ATTRIBUTE,
    STRUCTURED_CONTENT_TYPE,
    KafkaRecord,
    dataschema_uri,
    source_uri,
)
from events.envelope import RecordedEvent


def context_attributes(recorded: RecordedEvent) -> dict[str, str | int]:
    """Every context attribute of ``recorded``, in a fixed order (CloudEvents type per value)."""
    # As in to_kafka_binary: a record read from a store is formatted straight from its
    # envelope as stored (audit copies every access record this way), never parsed to print.
    envelope = recorded.stored_envelope
    if envelope is None:
        metadata = recorded.metadata
        event_id = str(recorded.event_id)
        source = metadata.source
        actor_id = metadata.actor.user_id
        actor_role = metadata.actor.role.value
        correlation_id = str(metadata.correlation_id)
        causation = metadata.causation_id
        causation_id = None if causation is None else str(causation)
        occurred = format_time(metadata.occurred_at, "metadata.occurred_at")
        recorded_at = format_time(recorded.recorded_at, "recorded_at")
    else:
        event_id = _id_header(envelope.event_id).decode()
        source = envelope.source
        actor_id = envelope.actor_id
        actor_role = _role_header(envelope.actor_role)[1].decode()
        correlation_id = _id_header(envelope.correlation_id).decode()
        stored_causation = envelope.causation_id
        causation_id = None if stored_causation is None else _id_header(stored_causation).decode()
        occurred = _time_header(envelope.occurred_at, "metadata.occurred_at").decode()
        recorded_at = _time_header(envelope.recorded_at, "recorded_at").decode()
    attributes: dict[str, str | int] = {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": source_uri(source),
        "type": recorded.event_type,
        "subject": recorded.subject,
        "time": occurred,
        "datacontenttype": JSON_CONTENT_TYPE,
        "dataschema": dataschema_uri(recorded.event_type, recorded.schema_version),
        "sequence": format_counter(recorded.sequence, "sequence"),
        "stream": recorded.stream,
        "schemaversion": recorded.schema_version,
        "actorid": actor_id,
        "actorrole": actor_role,
        "correlationid": correlation_id,
        "occurredat": occurred,
        "recordedat": recorded_at,
        "sourceposition": format_counter(recorded.position, "position"),
    }
    if causation_id is not None:
        attributes["causationid"] = causation_id
    if recorded.trace_parent is not None:
        attributes["traceparent"] = recorded.trace_parent
    stored = recorded.stored_form
    if stored is not None:
        attributes[STORED_VERSION_ATTRIBUTE] = stored.schema_version
        attributes[STORED_DATA_ATTRIBUTE] = base64.b64encode(stored.data).decode()
    return attributes


def to_structured(recorded: RecordedEvent) -> dict[str, Any]:
    """The event in the CloudEvents JSON format, with ``data`` inline as a JSON object."""
    document: dict[str, Any] = dict(context_attributes(recorded))
    # Sealed sensitive values travel as they are stored (casetrail_platform.keys.fields); the
    # model's dump would be the opened plaintext. A record read from a store holds its data as
    # JSON already: parsed as it is, the event is not decoded only to be dumped again (audit
    # copies every access record this way).
    if recorded.sealed or recorded.stored_envelope is not None:
        document["data"] = json.loads(recorded.data)
    else:
        document["data"] = recorded.event.model_dump(mode="json")
    return document


def to_kafka_binary(recorded: RecordedEvent) -> KafkaRecord:
    """The event as a Kafka record in CloudEvents binary mode: ``context_attributes`` as
    headers, in the same order, ``datacontenttype`` first as ``content-type``."""
    # Built directly rather than from context_attributes: this runs for every event the
    # relay forwards. A record read from a store still holds its envelope as stored, and
    # the headers are formatted straight from that: nothing is parsed only to be printed.
    stored = recorded.stored_envelope
    if stored is None:
        metadata = recorded.metadata
        actor = metadata.actor
        event_id: str | UUID = recorded.event_id
        source = metadata.source
        actor_id = actor.user_id
        actor_role: str = actor.role.value
        correlation_id: str | UUID = metadata.correlation_id
        causation_id: str | UUID | None = metadata.causation_id
        occurred_at: int | datetime = metadata.occurred_at
        recorded_at: int | datetime = recorded.recorded_at
    else:
        (
            event_id,
            source,
            actor_id,
            actor_role,
            correlation_id,
            causation_id,
            occurred_at,
            recorded_at,
        ) = stored
    type_header, schema_header, version_header = _type_headers(
        recorded.event_type, recorded.schema_version
    )
    subject = recorded.subject.encode()
    occurred = _time_header(occurred_at, "metadata.occurred_at")
    headers = [
        _CONTENT_TYPE_HEADER,
        _SPEC_VERSION_HEADER,
        ("ce_id", _id_header(event_id)),
        _source_header(source),
        type_header,
        ("ce_subject", subject),
        ("ce_time", occurred),
        schema_header,
        _sequence_header(recorded.sequence),
        ("ce_stream", recorded.stream.encode()),
        version_header,
        _actor_header(actor_id),
        _role_header(actor_role),
        ("ce_correlationid", _id_header(correlation_id)),
        ("ce_occurredat", occurred),
        ("ce_recordedat", _time_header(recorded_at, "recorded_at")),
        ("ce_sourceposition", _counter_header(recorded.position, "position")),
    ]
    if causation_id is not None:
        headers.append(("ce_causationid", _id_header(causation_id)))
    trace_parent = recorded.trace_parent
    if trace_parent is not None:
        # The CloudEvents distributed-tracing extension: the command's W3C trace context.
        headers.append(("ce_traceparent", trace_parent.encode()))
    stored_form = recorded.stored_form
    if stored_form is not None and recorded.stored_in_clear:
        # Its stored bytes hold a value in clear that the current version seals (stored before
        # the field was marked): they never travel in a header (headers are logged, copied and
        # shown by tooling that never shows values). The event goes in structured mode: its
        # value the JSON format (storeddata there, as in an export), the headers kept above
        # for routing, ordering and filters on ce_type.
        headers[0] = _STRUCTURED_CONTENT_TYPE_HEADER
        return KafkaRecord(subject, headers, _dump(to_structured(recorded)).encode())
    if stored_form is not None:
        # Stored under an older version: data below is upcast, the ledger hashed these.
        headers.append((_STORED_VERSION_HEADER, str(stored_form.schema_version).encode()))
        headers.append((_STORED_DATA_HEADER, base64.b64encode(stored_form.data)))
    # The stored bytes go out as they are: forwarding an event never decodes it.
    return KafkaRecord(subject, headers, recorded.data)


_CONTENT_TYPE_HEADER = (KAFKA_CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE.encode())
_STRUCTURED_CONTENT_TYPE_HEADER = (KAFKA_CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE.encode())
_SPEC_VERSION_HEADER = (f"{KAFKA_HEADER_PREFIX}specversion", SPEC_VERSION.encode())
_STORED_VERSION_HEADER = f"{KAFKA_HEADER_PREFIX}{STORED_VERSION_ATTRIBUTE}"
_STORED_DATA_HEADER = f"{KAFKA_HEADER_PREFIX}{STORED_DATA_ATTRIBUTE}"

_Header = tuple[str, bytes]

# Headers that repeat from event to event, formatted once (and not made and freed again for
# every event). The caches are cleared when they grow past _CACHE_LIMIT entries: they bound
# memory, not correctness.
_CACHE_LIMIT = 1024
_TYPE_HEADERS: dict[tuple[str, int], tuple[_Header, _Header, _Header]] = {}
_SOURCE_HEADERS: dict[str, _Header] = {}
_ROLE_HEADERS: dict[str, _Header] = {}
_ACTOR_HEADERS: dict[str, _Header] = {}
_SEQUENCE_HEADERS: dict[int, _Header] = {}
"""Streams are short: the same few sequence numbers come up again and again."""
_SECONDS_HEADERS: dict[int, bytes] = {}
"""``YYYY-MM-DDTHH:MM:SS`` per whole second since the epoch: consecutive events share it."""

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_COUNTER_LIMIT = 10**ORDER_DIGITS
_COUNTER_FORMAT = f"%0{ORDER_DIGITS}d".encode()
_NAIVE_EPOCH = datetime(1970, 1, 1)
_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _type_headers(event_type: str, version: int) -> tuple[_Header, _Header, _Header]:
    """``ce_type``, ``ce_dataschema`` and ``ce_schemaversion``."""
    headers = _TYPE_HEADERS.get((event_type, version))
    if headers is None:
        headers = _remember(
            _TYPE_HEADERS,
            (event_type, version),
            (
                ("ce_type", event_type.encode()),
                ("ce_dataschema", dataschema_uri(event_type, version).encode()),
                ("ce_schemaversion", str(version).encode()),
            ),
        )
    return headers


def _source_header(source: str) -> _Header:
    header = _SOURCE_HEADERS.get(source)
    if header is None:
        header = _remember(_SOURCE_HEADERS, source, ("ce_source", source_uri(source).encode()))
    return header


def _role_header(role: str) -> _Header:
    header = _ROLE_HEADERS.get(role)
    if header is None:
        # A stored role that is not a Role fails here as it would when parsed.
        header = _remember(_ROLE_HEADERS, role, ("ce_actorrole", Role(role).value.encode()))
    return header


def _actor_header(actor_id: str) -> _Header:
    header = _ACTOR_HEADERS.get(actor_id)
    if header is None:
        header = _remember(_ACTOR_HEADERS, actor_id, ("ce_actorid", actor_id.encode()))
    return header


def _sequence_header(sequence: int) -> _Header:
    header = _SEQUENCE_HEADERS.get(sequence)
    if header is None:
        formatted = _counter_header(sequence, "sequence")
        header = _remember(_SEQUENCE_HEADERS, sequence, ("ce_sequence", formatted))
    return header


def _id_header(value: str | UUID) -> bytes:
    if isinstance(value, str):
        # Stored text is the canonical form already (it was written as str(UUID)); anything
        # else is parsed, so that the header is exactly what the parsed record would give.
        return (value if _CANONICAL_UUID.fullmatch(value) else str(UUID(value))).encode()
    return str(value).encode()


def _time_header(moment: int | datetime, what: str) -> bytes:
    """``_format_time`` of ``moment``; an int is microseconds since the epoch, UTC."""
    if isinstance(moment, datetime):
        return format_time(moment, what).encode()
    seconds, fraction = divmod(moment, 1_000_000)
    prefix = _SECONDS_HEADERS.get(seconds)
    if prefix is None:
        whole = _NAIVE_EPOCH + timedelta(seconds=seconds)
        prefix = _remember(_SECONDS_HEADERS, seconds, whole.isoformat().encode())
    # As isoformat: the fraction is left out when it is zero.
    return b"%s.%06dZ" % (prefix, fraction) if fraction else prefix + b"Z"


def _counter_header(value: int, what: str) -> bytes:
    if 0 <= value < _COUNTER_LIMIT:
        return _COUNTER_FORMAT % value
    return format_counter(value, what).encode()  # raises


def iter_json_lines(recorded_events: Iterable[RecordedEvent]) -> Iterator[str]:
    """One structured CloudEvent per line (newline included), keys sorted, compact."""
    for recorded in recorded_events:
        yield _dump(to_structured(recorded)) + "\n"


def to_json_lines(recorded_events: Iterable[RecordedEvent]) -> str:
    return "".join(iter_json_lines(recorded_events))


def format_counter(value: int, what: str) -> str:
    if value < 0 or value >= 10**ORDER_DIGITS:
        raise ValueError(f"{what} {value} does not fit {ORDER_DIGITS} digits")
    return f"{value:0{ORDER_DIGITS}d}"


def format_time(moment: datetime, what: str) -> str:
    if moment.tzinfo is UTC:
        # The common case, without the offset arithmetic below.
        return moment.isoformat()[:-6] + "Z"
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"{what} must be timezone-aware")
    if offset % timedelta(minutes=1):
        raise ValueError(f"{what} has an offset in seconds, which RFC 3339 cannot express")
    text = moment.isoformat()
    return text.removesuffix("+00:00") + "Z" if offset == timedelta(0) else text


def _dump(document: Mapping[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
