"""CloudEvents 1.0 mapping of recorded case events: JSON format and Kafka binary mode.

Context attributes (every value is a string unless noted):

=================  ==========================================================================
``id``             the event id (UUID)
``source``         ``/casetrail/<service>`` from ``metadata.source`` (a source that is already
                   a URI reference, i.e. contains ``/`` or ``:``, is passed through unchanged:
                   casetrail's services record ``casetrail/<service>``, which is what
                   subscribers receive; ``PUBLISHED_SOURCE``)
``specversion``    ``1.0``
``type``           the stable event type, e.g. ``casetrail.case.opened``
``subject``        the event's subject: the case id (the client id for client events)
``time``           when it occurred (``metadata.occurred_at``), RFC 3339
``datacontenttype`` ``application/json``
``dataschema``     ``https://casetrail.example/schemas/<type>/v<schemaversion>.json``; the path
                   after ``/schemas/`` is the file under ``events/schemas/`` in this repository
``sequence``       version of the stream after this event, 19 digits zero-padded so that string
                   order is event order (the CloudEvents Sequence extension is string-typed)
``stream``         the event-store stream the event belongs to
``schemaversion``  Integer (a JSON number in the JSON format): version of ``data``'s shape
``actorid``        who did it
``actorrole``      in which role (``events.catalog.base.Role``)
``correlationid``  UUID shared by everything caused by one request
``causationid``    UUID of the event that caused this one; absent when none
``occurredat``     same instant as ``time``, kept so it is never confused with ``recordedat``
``recordedat``     when the store made it durable, RFC 3339
``sourceposition`` global position in the producing service's store, 19 digits zero-padded
``storedversion``  Integer: the schema version the event is stored under, present only when it
                   is older than ``schemaversion`` (``data`` is then upcast; see below)
``storeddata``     Binary (base64 in both formats): the data exactly as stored, with
                   ``storedversion``; sensitive values in it are sealed as the store sealed them
=================  ==========================================================================

The ``storedversion``/``storeddata`` pair is what the producer's ledger hashed
(``casetrail_platform.ledger.canonical``), so that an event stored under an older schema
version can still be proven: the upcast ``data`` is not what was stored, and sealed values
are sealed again with fresh nonces when data is upcast. Subscribers that do not check proofs
may ignore both. A decoder keeps the pair only after checking that the stored data decodes and
upcasts to ``data`` (values the reader cannot open, sealed in ``data``, are not compared).

There is no ``caseid`` attribute: ``subject`` already carries it.

Kafka binary mode: the record key is the subject (all events of a case stay in one partition,
in order); ``datacontenttype`` travels as the ``content-type`` header, every other attribute
as a ``ce_<name>`` header holding its string form in UTF-8; the value is the data JSON.
The key is not part of the event and is not checked on decode.

Decoding is strict: a missing or malformed attribute raises ``UndecodableMessageError`` naming
the header/attribute, bad data raises the registry's ``InvalidEventError`` naming the event type
and field, so consumers can park poison messages with a precise reason. Older schema versions
are upcast to the current model on decode.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from events.catalog.base import CaseEvent, Role
from events.envelope import Actor, EventMetadata, RecordedEvent, StoredForm
from events.errors import FieldProblem, InvalidEventError
from events.registry import EventRegistry
from events.sealed_values import CIPHERTEXT_PREFIX, ERASED_FORMS, canonical_json

SPEC_VERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
SCHEMA_BASE_URI = "https://casetrail.example/schemas/"
ENVELOPE_SCHEMA_URI = f"{SCHEMA_BASE_URI}envelope.cloudevents.json"
SOURCE_PREFIX = "/casetrail/"
KAFKA_HEADER_PREFIX = "ce_"
KAFKA_CONTENT_TYPE_HEADER = "content-type"
ORDER_DIGITS = 19
STORED_VERSION_ATTRIBUTE = "storedversion"
STORED_DATA_ATTRIBUTE = "storeddata"
"""Width of zero-padded counters: enough for any signed 64-bit value."""

PUBLISHED_SOURCE = (
    "Producing service: casetrail/<service> (casetrail/intake, casetrail/coordination, "
    "casetrail/planning, casetrail/audit), a relative URI reference, exactly as the service "
    "recorded it (metadata.source)."
)
"""What subscribers receive as ``source``: the services' ``metadata.source`` contains ``/``, so
``source_uri`` passes it through rather than prefixing ``SOURCE_PREFIX`` (the stored values
and the mapping stay as they are; only the contract states them)."""

_BARE_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)
_UNKNOWN_TYPE = "<unknown>"


class UndecodableMessageError(InvalidEventError):
    """A message cannot be turned into a case event: its envelope is missing or malformed.

    ``problems`` name the header (Kafka, e.g. ``ce_sequence``) or attribute (JSON) at fault.
    """

    def __init__(self, problems: list[FieldProblem], event_type: str | None = None) -> None:
        super().__init__(event_type or _UNKNOWN_TYPE, problems)


class KafkaRecord(NamedTuple):
    """A Kafka record in CloudEvents binary mode, ready for a producer's ``send``."""

    # A named tuple rather than a frozen dataclass: one is made per event forwarded, and
    # it costs a third.

    key: bytes
    headers: list[tuple[str, bytes]]
    value: bytes


def dataschema_uri(event_type: str, schema_version: int) -> str:
    return f"{SCHEMA_BASE_URI}{event_type}/v{schema_version}.json"


def source_uri(service: str) -> str:
    """The CloudEvents ``source`` of events produced by ``service`` (``metadata.source``)."""
    if not service:
        raise ValueError("metadata.source must not be empty")
    return f"{SOURCE_PREFIX}{service}" if _BARE_SERVICE.match(service) else service


def service_of(source: str) -> str:
    """Inverse of ``source_uri``."""
    if source.startswith(SOURCE_PREFIX):
        service = source.removeprefix(SOURCE_PREFIX)
        if _BARE_SERVICE.match(service):
            return service
    return source


# --- encoding ---------------------------------------------------------------------------------


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
        occurred = _format_time(metadata.occurred_at, "metadata.occurred_at")
        recorded_at = _format_time(recorded.recorded_at, "recorded_at")
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
        "sequence": _format_counter(recorded.sequence, "sequence"),
        "stream": recorded.stream,
        "schemaversion": recorded.schema_version,
        "actorid": actor_id,
        "actorrole": actor_role,
        "correlationid": correlation_id,
        "occurredat": occurred,
        "recordedat": recorded_at,
        "sourceposition": _format_counter(recorded.position, "position"),
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
    if stored_form is not None:
        # Stored under an older version: data below is upcast, the ledger hashed these.
        headers.append((_STORED_VERSION_HEADER, str(stored_form.schema_version).encode()))
        headers.append((_STORED_DATA_HEADER, base64.b64encode(stored_form.data)))
    # The stored bytes go out as they are: forwarding an event never decodes it.
    return KafkaRecord(subject, headers, recorded.data)


_CONTENT_TYPE_HEADER = (KAFKA_CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE.encode())
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
        return _format_time(moment, what).encode()
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
    return _format_counter(value, what).encode()  # raises


def iter_json_lines(recorded_events: Iterable[RecordedEvent]) -> Iterator[str]:
    """One structured CloudEvent per line (newline included), keys sorted, compact."""
    for recorded in recorded_events:
        yield _dump(to_structured(recorded)) + "\n"


def to_json_lines(recorded_events: Iterable[RecordedEvent]) -> str:
    return "".join(iter_json_lines(recorded_events))


# --- envelope schema --------------------------------------------------------------------------


def envelope_json_schema() -> dict[str, Any]:
    """JSON Schema of the CloudEvents JSON format as casetrail sends it (published as
    ``events/schemas/envelope.cloudevents.json``)."""
    counter = {
        "type": "string",
        "pattern": f"^[0-9]{{{ORDER_DIGITS}}}$",
    }
    timestamp = {"type": "string", "format": "date-time"}
    uuid = {"type": "string", "format": "uuid"}
    properties: dict[str, dict[str, Any]] = {
        "specversion": {"const": SPEC_VERSION, "description": "CloudEvents version."},
        "id": {**uuid, "description": "Event id, unique across casetrail."},
        "source": {
            "type": "string",
            "format": "uri-reference",
            "minLength": 1,
            "description": PUBLISHED_SOURCE,
        },
        "type": {
            "type": "string",
            "pattern": r"^casetrail\.[a-z0-9_.-]+$",
            "description": "Stable event type, listed in catalog.json.",
        },
        "subject": {
            "type": "string",
            "minLength": 1,
            "description": "Case id (client id for client events); the Kafka record key.",
        },
        "time": {**timestamp, "description": "When it occurred (RFC 3339)."},
        "datacontenttype": {"const": JSON_CONTENT_TYPE},
        "dataschema": {
            "type": "string",
            "format": "uri",
            "description": f"{SCHEMA_BASE_URI}<type>/v<schemaversion>.json",
        },
        "sequence": {
            **counter,
            "description": "Stream version after this event, zero-padded: string order is "
            "event order within the stream. In a one-key stream (catalog.json, ordering) it "
            "rises by 1 from one delivered event to the next: a jump is a gap.",
        },
        "stream": {
            "type": "string",
            "minLength": 1,
            "description": "Event-store stream of the producing service (source); "
            "<kind>-<subject> for a one-key stream (catalog.json, ordering).",
        },
        "schemaversion": {
            "type": "integer",
            "minimum": 1,
            "description": "Version of the data's shape (a string in Kafka headers).",
        },
        "actorid": {"type": "string", "minLength": 1, "description": "Who did it."},
        "actorrole": {
            "enum": [role.value for role in Role],
            "description": "In which role they did it.",
        },
        "correlationid": {**uuid, "description": "Shared by everything one request caused."},
        "causationid": {**uuid, "description": "The event that caused this one, if any."},
        "occurredat": {**timestamp, "description": "Same instant as time."},
        "recordedat": {**timestamp, "description": "When the producer's store made it durable."},
        "sourceposition": {
            **counter,
            "description": "Global position in the producing service's store, zero-padded.",
        },
        "traceparent": {
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": (
                "CloudEvents distributed-tracing extension: the W3C trace context of the "
                "command that recorded the event, when it was traced (not part of the event)."
            ),
        },
        STORED_VERSION_ATTRIBUTE: {
            "type": "integer",
            "minimum": 1,
            "description": (
                "Extension, present only for an event stored under an older schema version "
                "(then below schemaversion; data is upcast): the version it is stored under. "
                "With storeddata it is what the producer's ledger hashed; subscribers that do "
                "not check proofs may ignore both."
            ),
        },
        STORED_DATA_ATTRIBUTE: {
            "type": "string",
            "contentEncoding": "base64",
            "minLength": 1,
            "description": (
                "Extension, with storedversion: the event's data exactly as stored (JSON of "
                "storedversion, base64), sensitive values sealed as the store sealed them. It "
                "decodes and upcasts to data."
            ),
        },
        "data": {
            "type": "object",
            "description": "The event data; it validates against the schema at dataschema.",
        },
    }
    optional = {"causationid", "traceparent", STORED_VERSION_ATTRIBUTE, STORED_DATA_ATTRIBUTE}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": ENVELOPE_SCHEMA_URI,
        "title": "casetrail case event (CloudEvents 1.0, JSON format)",
        "description": (
            "Kafka binary mode carries the same attributes as headers: datacontenttype as "
            f"content-type, every other attribute as {KAFKA_HEADER_PREFIX}<name> (UTF-8 string "
            "form); the record value is data and the record key is subject."
        ),
        "type": "object",
        "properties": properties,
        "required": sorted(name for name in properties if name not in optional),
        "additionalProperties": True,
    }


# --- decoding ---------------------------------------------------------------------------------


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
    reader = _AttributeReader(document, label=lambda name: name, missing="missing attribute")
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
        return from_structured(_parse_object(value, "value", problems), registry)
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    data = _parse_object(value, "value", problems)
    reader = _AttributeReader(
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
            decoded.append(from_structured(json.loads(line), registry))
        except json.JSONDecodeError as error:
            raise UndecodableMessageError(
                [FieldProblem(f"line {number}", f"not valid JSON: {error.msg}")]
            ) from None
        except InvalidEventError as error:
            located = [FieldProblem(f"line {number}: {p.field}", p.problem) for p in error.problems]
            raise UndecodableMessageError(located, error.event_type) from None
    return decoded


class _AttributeReader:
    """Reads context attributes, collecting every problem instead of stopping at the first.

    A required attribute that is missing or malformed yields a placeholder and a problem; the
    caller raises before any placeholder can escape.
    """

    def __init__(
        self,
        values: Mapping[str, Any],
        label: Callable[[str], str],
        missing: str,
        already_reported: Iterable[str] = (),
    ) -> None:
        self._values = values
        self._missing = missing
        self._already_reported = frozenset(already_reported)
        self.label = label
        self.problems: list[FieldProblem] = []

    def problem(self, name: str, problem: str) -> None:
        label = self.label(name)
        if label not in self._already_reported:
            self.problems.append(FieldProblem(label, problem))

    def optional_text(self, name: str) -> str | None:
        value = self._values.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problem(name, "must be a non-empty string")
            return None
        return value

    def text(self, name: str) -> str:
        if self._values.get(name) is None:
            self.problem(name, self._missing)
            return ""
        return self.optional_text(name) or ""

    def counter(self, name: str, minimum: int) -> int:
        if self._values.get(name) is None:
            self.problem(name, self._missing)
            return minimum
        found = self.optional_counter(name, minimum)
        return minimum if found is None else found

    def optional_counter(self, name: str, minimum: int) -> int | None:
        value = self._values.get(name)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        if isinstance(value, str) and _DIGITS.match(value) and int(value) >= minimum:
            return int(value)
        self.problem(name, f"must be a whole number >= {minimum} (up to {ORDER_DIGITS} digits)")
        return None

    def optional_binary(self, name: str) -> bytes | None:
        value = self.optional_text(name)
        if value is None:
            return None
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            self.problem(name, "must be base64")
            return None

    def optional_uuid(self, name: str) -> UUID | None:
        value = self.optional_text(name)
        if value is None:
            return None
        try:
            return UUID(value)
        except ValueError:
            self.problem(name, "must be a UUID")
            return None

    def uuid(self, name: str) -> UUID:
        if self._values.get(name) is None:
            self.problem(name, self._missing)
        return self.optional_uuid(name) or UUID(int=0)

    def optional_timestamp(self, name: str) -> datetime | None:
        value = self.optional_text(name)
        if value is None:
            return None
        parsed = _parse_time(value)
        if parsed is None:
            self.problem(name, "must be an RFC 3339 timestamp with an offset")
        return parsed

    def timestamp(self, name: str) -> datetime:
        if self._values.get(name) is None:
            self.problem(name, self._missing)
        return self.optional_timestamp(name) or datetime.min.replace(tzinfo=UTC)

    def role(self, name: str) -> Role:
        value = self.text(name)
        try:
            return Role(value)
        except ValueError:
            if value:
                self.problem(name, f"unknown role {value!r}")
            return Role.SYSTEM


def _decode(
    reader: _AttributeReader,
    data: dict[str, Any],
    problems: list[FieldProblem],
    registry: EventRegistry,
    raw: bytes | None = None,
) -> RecordedEvent:
    specversion = reader.text("specversion")
    if specversion and specversion != SPEC_VERSION:
        reader.problem("specversion", f"must be {SPEC_VERSION!r}, got {specversion!r}")
    event_id = reader.uuid("id")
    source = reader.text("source")
    event_type = reader.text("type")
    subject = reader.text("subject")
    occurred_at = reader.timestamp("time")
    content_type = reader.optional_text("datacontenttype")
    if content_type is not None and _media_type(content_type) != JSON_CONTENT_TYPE:
        reader.problem("datacontenttype", f"must be {JSON_CONTENT_TYPE}, got {content_type!r}")
    dataschema = reader.optional_text("dataschema")
    sequence = reader.counter("sequence", minimum=1)
    stream = reader.text("stream")
    schema_version = reader.counter("schemaversion", minimum=1)
    actor_id = reader.text("actorid")
    actor_role = reader.role("actorrole")
    correlation_id = reader.uuid("correlationid")
    causation_id = reader.optional_uuid("causationid")
    occurred_at_extension = reader.optional_timestamp("occurredat")
    recorded_at = reader.timestamp("recordedat")
    position = reader.counter("sourceposition", minimum=0)
    trace_parent = reader.optional_text("traceparent")
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
        # Kept as stored (what the ledger hashed); the event gets the opened values.
        sealed = canonical_json(data)
        data = registry.open_document(event_type, schema_version, event_id, json.loads(sealed))
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
            stored_event.model_dump(mode="json"), event.model_dump(mode="json"), received, "data"
        )
        if difference is not None:
            problem = f"does not upcast to the event's data (first difference at {difference})"
            raise UndecodableMessageError([FieldProblem(label, problem)], event_type)
        record.keeping_stored_form(form)
    return record if sealed is None else record.with_data(sealed)


def _check_stored_pair(
    reader: _AttributeReader, version: int | None, data: bytes | None, schema_version: int
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
        document = json.loads(form.data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UndecodableMessageError(
            [FieldProblem(label, f"not valid JSON: {error}")], event_type
        ) from None
    if not isinstance(document, dict):
        raise UndecodableMessageError([FieldProblem(label, "must be a JSON object")], event_type)
    try:
        if registry.is_sealed(form.data):
            document = registry.open_document(event_type, form.schema_version, event_id, document)
        return registry.validate(event_type, form.schema_version, document)
    except InvalidEventError as error:
        located = [FieldProblem(f"{label}: {p.field}", p.problem) for p in error.problems]
        raise UndecodableMessageError(located, event_type) from None


def _difference(upcast: Any, event: Any, received: Any, path: str) -> str | None:
    """Where the upcast stored data first differs from the event decoded from ``received``
    (the data as it came, before opening), or ``None``. A value sealed in ``received`` that this
    reader could not open (it reads as the erasure marker: key destroyed, or none held) is not
    compared: the stored form may hold it sealed differently or, once upcast, in a shape whose
    sealed parts open as markers in other places."""
    if upcast == event:
        return None
    unopened = isinstance(received, str) and received.startswith(CIPHERTEXT_PREFIX)
    if unopened and event in ERASED_FORMS:
        return None
    if isinstance(upcast, dict) and isinstance(event, dict):
        for name in sorted(upcast.keys() | event.keys()):
            inner = received.get(name) if isinstance(received, dict) else None
            found = _difference(upcast.get(name), event.get(name), inner, f"{path}.{name}")
            if found is not None:
                return found
        return None
    if isinstance(upcast, list) and isinstance(event, list) and len(upcast) == len(event):
        items = received if isinstance(received, list) else []
        for index, (left, right) in enumerate(zip(upcast, event, strict=True)):
            inner = items[index] if index < len(items) else None
            found = _difference(left, right, inner, f"{path}[{index}]")
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
        parsed = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.append(FieldProblem(name, f"not valid JSON: {error}"))
        return {}
    if not isinstance(parsed, dict):
        problems.append(FieldProblem(name, "must be a JSON object"))
        return {}
    return parsed


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _format_counter(value: int, what: str) -> str:
    if value < 0 or value >= 10**ORDER_DIGITS:
        raise ValueError(f"{what} {value} does not fit {ORDER_DIGITS} digits")
    return f"{value:0{ORDER_DIGITS}d}"


def _format_time(moment: datetime, what: str) -> str:
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


def _parse_time(text: str) -> datetime | None:
    match = _RFC3339.match(text)
    if match is None:
        return None
    day, clock, fraction, offset = match.groups()
    # datetime keeps microseconds; finer digits from other producers are truncated.
    micro = f".{fraction[:6]:0<6}" if fraction else ""
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{day}T{clock}{micro}{offset}")
    except ValueError:
        return None


def _dump(document: Mapping[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
