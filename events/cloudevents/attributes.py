"""The CloudEvents context as casetrail sends it: the attribute names and values every event
carries, how ``source`` and ``dataschema`` are formed, and the error a message that cannot be
decoded raises (the contract itself: ``events.cloudevents``)."""

from __future__ import annotations

import re
from typing import NamedTuple

from events.errors import FieldProblem, InvalidEventError

SPEC_VERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
SCHEMA_BASE_URI = "https://casetrail.example/schemas/"
ENVELOPE_SCHEMA_URI = f"{SCHEMA_BASE_URI}envelope.cloudevents.json"
SOURCE_PREFIX = "/casetrail/"
KAFKA_HEADER_PREFIX = "ce_"
KAFKA_CONTENT_TYPE_HEADER = "content-type"
ORDER_DIGITS = 19
"""Width of zero-padded counters: enough for any signed 64-bit value."""
MAX_COUNTER = 2**63 - 1
"""The largest counter (``sequence``, ``sourceposition``, the schema versions) a decoder takes,
as a JSON number or as digits alike: the stores and read models hold them as signed 64-bit
integers (SQLite ``INTEGER``, PostgreSQL ``bigint``)."""
MAX_IDENTIFIER_CHARS = 64
"""The longest ``actorid``: the catalog's ``Identifier`` (a user id, as a verified token's
``sub`` is held to it)."""
MAX_SUBJECT_CHARS = 200
"""The longest ``subject``: a case or client id (the catalog's ``Identifier``, 64), or a
ledger's origin (``casetrail/<agency>/<service>``, up to 200, the subject of
``ledger.inconsistency_detected``): bounded at 64, an agency name of 45 characters or more
made audit's tamper alarm unstorable."""
MAX_STREAM_CHARS = 128
"""The longest ``stream``: ``<kind>-<id>``, an ``Identifier`` after a kind (``case-``,
``schedule-``, ``access-batch-``...)."""
TRACE_PARENT_PATTERN = "[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"
"""A W3C ``traceparent``, as the envelope schema states it (``traceparent``)."""
NO_CONTROL_CHARACTERS_PATTERN = "[^\\u0000-\\u001f\\u007f-\\u009f]+"
"""Text with no control character (C0, DEL, C1), as the envelope schema states it for the
attributes that are free text (``subject``, ``stream``, ``actorid``, ``source``): a line feed
or carriage return in a header is a header of its own to some readers, a NUL cannot be
stored in PostgreSQL text. (A lone surrogate, JSON's ``"\\ud800"``, is refused beside it,
``envelope_text_problem``, not in the pattern: an ECMAScript pattern without the ``u`` flag
reads UTF-16 code units, and would refuse every character beyond the BMP.)"""
STORED_VERSION_ATTRIBUTE = "storedversion"
STORED_DATA_ATTRIBUTE = "storeddata"

PUBLISHED_SOURCE = (
    "Producing service: casetrail/<service> (casetrail/intake, casetrail/coordination, "
    "casetrail/planning, casetrail/audit), a relative URI reference, exactly as the service "
    "recorded it (metadata.source)."
)
"""What subscribers receive as ``source``: the services' ``metadata.source`` contains ``/``, so
``source_uri`` passes it through rather than prefixing ``SOURCE_PREFIX`` (the stored values
and the mapping stay as they are; only the contract states them)."""

_BARE_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FREE_TEXT = re.compile(NO_CONTROL_CHARACTERS_PATTERN)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate (JSON's ``"\\ud800"`` escape): no Unicode text, no UTF-8 bytes."""
LONE_SURROGATE_PROBLEM = "must be valid Unicode (no lone surrogates)"
"""The problem named for a field holding one, in an envelope's attributes or in data."""
_UNKNOWN_TYPE = "<unknown>"


class UndecodableMessageError(InvalidEventError):
    """A message cannot be turned into a case event: its envelope is missing or malformed.

    ``problems`` name the header (Kafka, e.g. ``ce_sequence``) or attribute (JSON) at fault.
    """

    # Named by its public path, where subscribers import it from: a dead letter's
    # ``exception_type`` header reads ``events.cloudevents.UndecodableMessageError``.
    __module__ = "events.cloudevents"

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


def envelope_text_problem(text: str, max_chars: int | None = None) -> str | None:
    """Why ``text`` cannot be a free-text attribute of an envelope (``subject``, ``stream``,
    ``actorid``, ``source``), or ``None``: the one rule the decoders and the event stores apply
    (``casetrail_platform.store.guard``), so whatever a store accepts is decoded everywhere.
    A lone surrogate (U+D800-U+DFFF, which JSON's ``"\\ud800"`` escape gives) is no Unicode
    text: it cannot be encoded as UTF-8, so neither stored nor hashed into a ledger leaf
    (``casetrail verify`` failed on one with a traceback)."""
    if not text:
        return "must be a non-empty string"
    if max_chars is not None and len(text) > max_chars:
        return f"must be at most {max_chars} characters"
    if not _FREE_TEXT.fullmatch(text):
        return "must not contain control characters"
    if LONE_SURROGATE.search(text):
        return LONE_SURROGATE_PROBLEM
    return None
