"""The JSON Schema of the envelope (published as ``events/schemas/envelope.cloudevents.json``)."""

from __future__ import annotations

from typing import Any

from events.catalog.base import Role
from events.cloudevents.attributes import (
    ENVELOPE_SCHEMA_URI,
    JSON_CONTENT_TYPE,
    KAFKA_HEADER_PREFIX,
    MAX_COUNTER,
    MAX_IDENTIFIER_CHARS,
    MAX_STREAM_CHARS,
    MAX_SUBJECT_CHARS,
    NO_CONTROL_CHARACTERS_PATTERN,
    ORDER_DIGITS,
    PUBLISHED_SOURCE,
    SCHEMA_BASE_URI,
    SPEC_VERSION,
    STORED_DATA_ATTRIBUTE,
    STORED_VERSION_ATTRIBUTE,
    TRACE_PARENT_PATTERN,
)


def envelope_json_schema() -> dict[str, Any]:
    """JSON Schema of the CloudEvents JSON format as casetrail sends it (published as
    ``events/schemas/envelope.cloudevents.json``)."""
    counter = {
        "type": "string",
        "pattern": f"^[0-9]{{{ORDER_DIGITS}}}$",
    }
    timestamp = {"type": "string", "format": "date-time"}
    free_text = {"type": "string", "minLength": 1, "pattern": f"^{NO_CONTROL_CHARACTERS_PATTERN}$"}
    uuid = {"type": "string", "format": "uuid"}
    properties: dict[str, dict[str, Any]] = {
        "specversion": {"const": SPEC_VERSION, "description": "CloudEvents version."},
        "id": {**uuid, "description": "Event id, unique across casetrail."},
        "source": {
            **free_text,
            "format": "uri-reference",
            "description": PUBLISHED_SOURCE,
        },
        "type": {
            "type": "string",
            "pattern": r"^casetrail\.[a-z0-9_.-]+$",
            "description": "Stable event type, listed in catalog.json.",
        },
        "subject": {
            **free_text,
            "maxLength": MAX_SUBJECT_CHARS,
            "description": "Case id (client id for client events, a ledger's origin for its"
            " alarms); the Kafka record key.",
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
            "rises by 1 from one delivered event to the next: a jump is a gap. At most "
            f"{MAX_COUNTER} (a signed 64-bit integer).",
        },
        "stream": {
            **free_text,
            "maxLength": MAX_STREAM_CHARS,
            "description": "Event-store stream of the producing service (source); "
            "<kind>-<subject> for a one-key stream (catalog.json, ordering).",
        },
        "schemaversion": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_COUNTER,
            "description": "Version of the data's shape (a string in Kafka headers).",
        },
        "actorid": {**free_text, "maxLength": MAX_IDENTIFIER_CHARS, "description": "Who did it."},
        "actorrole": {
            "enum": [role.value for role in Role],
            "description": "In which role they did it.",
        },
        "correlationid": {**uuid, "description": "Shared by everything one request caused."},
        "causationid": {
            **uuid,
            "description": "The command that caused it: its id, shared by every event the "
            "command recorded; for a service's own follow-up of an event (coordination "
            "cancelling a closed case's services), that event's id.",
        },
        "occurredat": {**timestamp, "description": "Same instant as time."},
        "recordedat": {**timestamp, "description": "When the producer's store made it durable."},
        "sourceposition": {
            **counter,
            "description": "Global position in the producing service's store, zero-padded, "
            f"at most {MAX_COUNTER} (a signed 64-bit integer).",
        },
        "traceparent": {
            "type": "string",
            "pattern": f"^{TRACE_PARENT_PATTERN}$",
            "description": (
                "CloudEvents distributed-tracing extension: the W3C trace context of the "
                "command that recorded the event, when it was traced (not part of the event)."
            ),
        },
        STORED_VERSION_ATTRIBUTE: {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_COUNTER,
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
                "decodes and upcasts to data. A value stored in clear before its field was "
                "marked sensitive stays in clear here (history is never rewritten): such an "
                "event is sent over Kafka in structured mode (content-type "
                "application/cloudevents+json, this in the value; the other ce_ headers kept), "
                "never with this as a header."
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
