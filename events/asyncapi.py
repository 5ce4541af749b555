"""The AsyncAPI 3 document of casetrail's Kafka topics, generated from the event catalog.

``python -m events.asyncapi`` writes ``events/asyncapi.yaml``: the case-event topic with one
message per event type and schema version (payload: the published JSON Schema; headers: the
CloudEvents Kafka binary-mode ``ce_*`` headers; key: the subject), the dead-letter topics
(``<consumer group>.dlq``: the original record unchanged plus ``casetrail_dlq_*`` headers) and
the ledger-checkpoint topic (the services' signed checkpoint notes, ``events.checkpoint_notes``).
A message that may also come in structured mode (``_sent_structured``) allows both: its
``content-type`` header either content type, its payload one of the data or the whole CloudEvent
in the JSON format (the envelope schema, ``data`` the message's data schema).
Other teams generate consumers from it. ``--check`` writes nothing and exits 1 when the file is
out of sync with the catalog (``make check`` runs it, like ``events.schema_export --check``).

The JSON Schemas are the ones ``events.schema_export`` publishes, inlined: each schema's
``$defs`` move to ``components.schemas`` (shared when identical across event types) because
a ``#/$defs/...`` reference inside the AsyncAPI document would point at its root.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from events import checkpoint_notes, dead_letters
from events.cloudevents import (
    JSON_CONTENT_TYPE,
    KAFKA_CONTENT_TYPE_HEADER,
    KAFKA_HEADER_PREFIX,
    STORED_DATA_ATTRIBUTE,
    STORED_VERSION_ATTRIBUTE,
    STRUCTURED_CONTENT_TYPE,
    envelope_json_schema,
)
from events.schema_export import CATALOG_FILE, SEALED_VALUE_DEF, render
from events.topics import (
    DEAD_LETTER_PARTITIONS,
    DEAD_LETTER_SUFFIX,
    DEFAULT_CASE_EVENTS_TOPIC,
    LEDGER_CHECKPOINTS_PARTITIONS,
    LEDGER_CHECKPOINTS_TOPIC,
    PRODUCTION_PARTITIONS,
    PRODUCTION_REPLICATION_FACTOR,
    TOPIC_RETENTION,
)

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "asyncapi.yaml"
DEFAULT_TOPOLOGY = (
    Path(__file__).resolve().parent.parent / "infra" / "helm" / "casetrail" / "topology.yaml"
)
HEADERS_SCHEMA = "CloudEventsKafkaHeaders"
STRUCTURED_SCHEMA = "CloudEventsJsonFormat"
DEAD_LETTER_HEADERS_SCHEMA = "DeadLetterHeaders"
DEAD_LETTER_MESSAGE = "casetrail.dead-letter"
CHECKPOINT_MESSAGE = "casetrail.ledger-checkpoint"
_NOT_CASE_EVENTS = {DEAD_LETTER_MESSAGE, CHECKPOINT_MESSAGE}
_NOT_HEADERS = {"data", "datacontenttype"}
_DEAD_LETTER_HEADERS = {
    dead_letters.REASON: "Why the group gave up: `<reason>: <detail>`; reasons: "
    + ", ".join(f"`{reason.value}`" for reason in dead_letters.DeadLetterReason)
    + ".",
    dead_letters.GROUP: "The consumer group that gave up on the record.",
    dead_letters.TOPIC: "The topic it was read from.",
    dead_letters.PARTITION: "Its partition there (decimal).",
    dead_letters.OFFSET: "Its offset there (decimal).",
    dead_letters.EXCEPTION: "The type of the error that stopped the group.",
    dead_letters.ATTEMPTS: "How many times the group tried (decimal).",
}
_OPTIONAL_DEAD_LETTER_HEADERS = {
    dead_letters.TRUNCATED: "Only on a letter whose record was too large for the "
    "dead-letter topic: the letter holds the value's first bytes and the first of the "
    "record's headers that fit, this header the whole value's size in bytes (decimal). "
    "Never replayed.",
}


def document(groups: Iterable[str]) -> dict[str, Any]:
    """The AsyncAPI document; ``groups``: the consumer groups whose dead-letter topics exist."""
    files = render()
    catalog = json.loads(files[CATALOG_FILE])
    shared_schemas: dict[str, Any] = {
        HEADERS_SCHEMA: _headers_schema(),
        DEAD_LETTER_HEADERS_SCHEMA: _dead_letter_headers_schema(),
    }
    superseded = {entry["type"] for entry in catalog["events"] if not entry["current"]}
    messages: dict[str, Any] = {}
    for entry in catalog["events"]:
        schema = json.loads(files[entry["schema"]])
        message_id = f"{entry['type']}.v{entry['version']}"
        payload = _inline(schema, shared_schemas)
        structured = _sent_structured(entry, schema, superseded)
        if structured:
            payload = _either_mode(entry, message_id, payload, shared_schemas)
        messages[message_id] = _event_message(entry, payload, structured=structured)
    messages[DEAD_LETTER_MESSAGE] = _dead_letter_message()
    messages[CHECKPOINT_MESSAGE] = _checkpoint_message()
    group_names = sorted(groups)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "casetrail case events",
            "version": "1.0.0",
            "description": (
                "Immutable case events of casetrail's services on Kafka, in the CloudEvents "
                "Kafka protocol binding (binary mode): the value is the event data as JSON, "
                "the key is the subject (the case id; the client id for client events), and "
                f"every other CloudEvents attribute is a `{KAFKA_HEADER_PREFIX}<name>` header. "
                "Records of one key keep their order. One kind of record is sent in "
                "structured mode instead: an event stored under an older schema version whose "
                "stored form (`storeddata`, what the producer's ledger hashed) holds in clear a "
                "value the current version seals comes with the header "
                f"`{KAFKA_CONTENT_TYPE_HEADER}: {STRUCTURED_CONTENT_TYPE}` and the whole "
                "CloudEvent in the JSON format as its value (`data` as the payload schema "
                "says, `storeddata` beside it), so that value never travels in a header; its "
                "other `ce_` headers are kept for routing. Read both modes, as the binding "
                "asks of subscribers: the messages that may come so say it, their "
                f"`{KAFKA_CONTENT_TYPE_HEADER}` header allowing both and their payload one of "
                "the data (binary mode) or the whole CloudEvent (structured mode). Fields "
                "marked "
                "`x-casetrail-sensitive: true` (special-category data) or "
                "`x-casetrail-personal: true` (who the client is) travel sealed with the "
                f"client's key: a `{SEALED_VALUE_DEF}` string (`ct1~...`, see the sealing "
                "contract in the schemas' catalog.json) in place of the value, which every "
                "payload schema allows there. The ledger-checkpoint topic carries no "
                "CloudEvents: its records are the services' signed checkpoint notes as text "
                "(see its channel). Generated from the event catalog by "
                "`python -m events.asyncapi`; do not edit."
            ),
        },
        "defaultContentType": JSON_CONTENT_TYPE,
        "servers": {
            "production": {
                "host": "{bootstrap}",
                "protocol": "kafka-secure",
                "description": "The agency's Kafka (Strimzi), mutual TLS with a KafkaUser's "
                "certificate; outside subscribers get read-only users.",
                "variables": {
                    "bootstrap": {
                        "default": "casetrail-kafka-kafka-bootstrap:9093",
                        "description": "host:port of the TLS listener's bootstrap service.",
                    }
                },
                "security": [{"$ref": "#/components/securitySchemes/mutualTls"}],
            },
            "development": {
                "host": "127.0.0.1:19092",
                "protocol": "kafka",
                "description": "`make servers-start`: one broker, no authentication.",
            },
        },
        "channels": {
            "caseEvents": {
                "address": DEFAULT_CASE_EVENTS_TOPIC,
                "title": "Case events",
                "description": (
                    "Every service's events, kept forever (a new subscriber reads the whole "
                    "history). The topic name is configurable "
                    "(`CASETRAIL_CASE_EVENTS_TOPIC`); this is the default."
                ),
                "messages": {
                    message_id: {"$ref": f"#/components/messages/{message_id}"}
                    for message_id in messages
                    if message_id not in _NOT_CASE_EVENTS
                },
                "bindings": {"kafka": _topic_binding(PRODUCTION_PARTITIONS)},
            },
            "deadLetters": {
                "address": "{group}" + DEAD_LETTER_SUFFIX,
                "title": "Dead letters of a consumer group",
                "description": (
                    "Records a consumer group could not process, kept whole (key, value and "
                    "headers unchanged, so they can be replayed) with the reason in "
                    f"`{dead_letters.HEADER_PREFIX}*` headers."
                ),
                "parameters": {
                    "group": {
                        "description": "The consumer group (casetrail.<service>.<projection>).",
                        "enum": group_names,
                    }
                },
                "messages": {
                    DEAD_LETTER_MESSAGE: {"$ref": f"#/components/messages/{DEAD_LETTER_MESSAGE}"}
                },
                "bindings": {"kafka": _topic_binding(DEAD_LETTER_PARTITIONS)},
            },
            "ledgerCheckpoints": {
                "address": LEDGER_CHECKPOINTS_TOPIC,
                "title": "Ledger checkpoints",
                "description": (
                    "Every service's signed ledger checkpoints, the public record other "
                    "parties (auditors, other agencies) keep: each states the size and root "
                    "hash of the service's log of its events, signed with the service's key. "
                    "One partition, so every log's checkpoints are in one total order; kept "
                    "forever. A log publishes a checkpoint before it stores it, so a note may "
                    "come twice (a publication retried) and one log's notes out of order "
                    "(replicas): a log's largest verified size is where it stands, and a log "
                    "never shrinks."
                ),
                "messages": {
                    CHECKPOINT_MESSAGE: {"$ref": f"#/components/messages/{CHECKPOINT_MESSAGE}"}
                },
                "bindings": {"kafka": _topic_binding(LEDGER_CHECKPOINTS_PARTITIONS)},
            },
        },
        "operations": {
            "receiveCaseEvents": {
                "action": "receive",
                "title": "Subscribe to case events",
                "summary": "Consume with your own consumer group; skip types you do not know.",
                "channel": {"$ref": "#/channels/caseEvents"},
                "bindings": {
                    "kafka": {
                        "groupId": {"type": "string", "description": "Your own group."},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            },
            "receiveDeadLetters": {
                "action": "receive",
                "title": "Inspect dead letters",
                "channel": {"$ref": "#/channels/deadLetters"},
            },
            "receiveLedgerCheckpoints": {
                "action": "receive",
                "title": "Keep the ledger checkpoints",
                "summary": "Read from the beginning; verify each note with its log's key.",
                "channel": {"$ref": "#/channels/ledgerCheckpoints"},
            },
        },
        "components": {
            "messages": messages,
            "schemas": dict(sorted(shared_schemas.items())),
            "securitySchemes": {
                "mutualTls": {
                    "type": "X509",
                    "description": "The client certificate Strimzi issues for a KafkaUser.",
                }
            },
        },
    }


def _topic_binding(partitions: int) -> dict[str, Any]:
    config = TOPIC_RETENTION
    return {
        "partitions": partitions,
        "replicas": PRODUCTION_REPLICATION_FACTOR,
        "topicConfiguration": {
            "cleanup.policy": config["cleanup.policy"].split(","),
            "retention.ms": int(config["retention.ms"]),
            "retention.bytes": int(config["retention.bytes"]),
        },
        "bindingVersion": KAFKA_BINDING_VERSION,
    }


def _sent_structured(entry: dict[str, Any], schema: dict[str, Any], superseded: set[str]) -> bool:
    """Whether records of ``entry`` may come in structured mode: an event stored under a
    superseded version whose stored form holds in clear a value the current version seals
    (``RecordedEvent.stored_in_clear``), so the current version of a type with a superseded
    one, when it seals anything (its schema accepts a sealed value). Which records hold such a
    value (stored before sealing existed or before the field was marked) is known only per
    record, so every such message allows both modes."""
    return (
        entry["current"]
        and entry["type"] in superseded
        and SEALED_VALUE_DEF in schema.get("$defs", {})
    )


def _either_mode(
    entry: dict[str, Any], message_id: str, data: dict[str, Any], shared: dict[str, Any]
) -> dict[str, Any]:
    """The payload of a message that may come in structured mode: ``data`` (binary mode) or
    the JSON-format CloudEvent holding it, with the stored form it was upcast from. ``data``
    moves to ``shared`` as ``message_id``, so that both branches refer to it."""
    if message_id in shared:
        raise ValueError(f"{message_id} is reserved for its message's data in components.schemas")
    shared[message_id] = data
    envelope = envelope_json_schema()
    shared.setdefault(
        STRUCTURED_SCHEMA,
        {key: value for key, value in envelope.items() if key not in {"$schema", "$id"}},
    )
    # A new {"$ref": ...} at each use: one object used twice is written as a YAML alias.
    data_reference = f"#/components/schemas/{message_id}"
    return {
        "description": (
            f"Binary mode ({KAFKA_CONTENT_TYPE_HEADER}: {JSON_CONTENT_TYPE}): the event data. "
            f"Structured mode ({KAFKA_CONTENT_TYPE_HEADER}: {STRUCTURED_CONTENT_TYPE}): the "
            f"whole CloudEvent in the JSON format, data inside, {STORED_VERSION_ATTRIBUTE} "
            f"and {STORED_DATA_ATTRIBUTE} beside it."
        ),
        "oneOf": [
            {"$ref": data_reference},
            {
                "allOf": [
                    {"$ref": f"#/components/schemas/{STRUCTURED_SCHEMA}"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": entry["type"]},
                            "schemaversion": {"const": entry["version"]},
                            "dataschema": {"const": entry["dataschema"]},
                            "data": {"$ref": data_reference},
                        },
                        "required": [STORED_VERSION_ATTRIBUTE, STORED_DATA_ATTRIBUTE],
                    },
                ]
            },
        ],
    }


def _event_message(
    entry: dict[str, Any], payload: dict[str, Any], *, structured: bool
) -> dict[str, Any]:
    fixed = {
        f"{KAFKA_HEADER_PREFIX}type": {"const": entry["type"]},
        f"{KAFKA_HEADER_PREFIX}schemaversion": {"const": str(entry["version"])},
        f"{KAFKA_HEADER_PREFIX}dataschema": {"const": entry["dataschema"]},
    }
    if not structured:
        fixed[KAFKA_CONTENT_TYPE_HEADER] = {"const": JSON_CONTENT_TYPE}
    message: dict[str, Any] = {
        "name": entry["type"],
        "title": f"{entry['type']} v{entry['version']}",
        "summary": entry["description"],
        "contentType": JSON_CONTENT_TYPE,
        "headers": {
            "allOf": [
                {"$ref": f"#/components/schemas/{HEADERS_SCHEMA}"},
                {"type": "object", "properties": fixed},
            ]
        },
        "payload": payload,
        "correlationId": {"location": f"$message.header#/{KAFKA_HEADER_PREFIX}correlationid"},
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "description": f"The subject: the event's `{entry['subject_field']}`.",
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    if not entry["current"]:
        message["description"] = (
            "A superseded version: events stored under it are published upcast to the "
            "current version, the stored form beside it (`storedversion`, `storeddata`); a "
            "record of this version on the topic (written by an earlier release) is upcast by "
            "casetrail's own consumers on read."
        )
    elif structured:
        message["description"] = (
            "Sent in structured mode instead of binary mode when the event is stored under a "
            "superseded version whose stored form holds in clear a value this version seals: "
            f"header {KAFKA_CONTENT_TYPE_HEADER}: {STRUCTURED_CONTENT_TYPE}, the value the "
            "whole CloudEvent (the payload's second branch); its other ce_ headers as in "
            "binary mode."
        )
    if entry["sensitive_fields"]:
        message["x-casetrail-sensitive-fields"] = entry["sensitive_fields"]
    return message


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "dead-letter",
        "title": "Dead letter",
        "summary": "A record a consumer group gave up on, as it was read, plus why.",
        "contentType": JSON_CONTENT_TYPE,
        "headers": {"$ref": f"#/components/schemas/{DEAD_LETTER_HEADERS_SCHEMA}"},
        "payload": {
            "description": "The original record's value, unchanged: usually a case event's "
            "data, but it may be anything (undecodable records are dead-lettered too)."
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original record's key."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _checkpoint_message() -> dict[str, Any]:
    return {
        "name": "ledger-checkpoint",
        "title": "Ledger checkpoint",
        "summary": "A service's signed checkpoint of its ledger.",
        "contentType": checkpoint_notes.CONTENT_TYPE,
        "headers": {
            "type": "object",
            "properties": {
                KAFKA_CONTENT_TYPE_HEADER: {"const": checkpoint_notes.CONTENT_TYPE},
            },
            "required": [KAFKA_CONTENT_TYPE_HEADER],
        },
        "payload": {
            "type": "string",
            "description": checkpoint_notes.NOTE_FORMAT,
            "pattern": f"^{checkpoint_notes.NOTE_PATTERN}$",
        },
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "pattern": f"^{checkpoint_notes.ORIGIN_PATTERN}$",
                    "description": "The log's origin, casetrail/<agency>/<service>: the "
                    "note's first line.",
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _headers_schema() -> dict[str, Any]:
    """The ``ce_*`` headers (and ``content-type``) from the CloudEvents envelope schema."""
    envelope = envelope_json_schema()
    properties: dict[str, Any] = {
        KAFKA_CONTENT_TYPE_HEADER: {
            "enum": [JSON_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE],
            "description": (
                f"CloudEvents datacontenttype ({JSON_CONTENT_TYPE}, binary mode: the value is "
                f"the data) or {STRUCTURED_CONTENT_TYPE} (structured mode: the value is the "
                "whole CloudEvent in the JSON format), which only the messages saying so use."
            ),
        }
    }
    required = [KAFKA_CONTENT_TYPE_HEADER]
    for name, attribute in envelope["properties"].items():
        if name in _NOT_HEADERS:
            continue
        header = f"{KAFKA_HEADER_PREFIX}{name}"
        properties[header] = _as_header(attribute)
        if name in envelope["required"]:
            required.append(header)
    return {
        "type": "object",
        "description": "Kafka headers of a case event: UTF-8 strings. " + envelope["description"],
        "properties": properties,
        "required": required,
    }


def _as_header(attribute: dict[str, Any]) -> dict[str, Any]:
    """A header carries the attribute's string form: integers become decimal strings."""
    header = dict(attribute)
    if "const" in header:
        header["const"] = str(header["const"])
    if header.get("type") == "integer":
        minimum = header.pop("minimum", 0)
        maximum = header.pop("maximum", None)
        # A bound on the number is one on its digits (a pattern cannot state the value).
        more = "*" if maximum is None else f"{{0,{len(str(maximum)) - 1}}}"
        header["type"] = "string"
        header["pattern"] = f"^[1-9][0-9]{more}$" if minimum >= 1 else f"^[0-9]{more}$"
    elif "enum" in header:
        header["type"] = "string"
    else:
        header.setdefault("type", "string")
    return header


def _dead_letter_headers_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The original record's headers (a case event's ce_* headers when it "
        "was one) plus the dead-letter headers.",
        "properties": {
            name: {"type": "string", "description": description}
            for name, description in {
                **_DEAD_LETTER_HEADERS,
                **_OPTIONAL_DEAD_LETTER_HEADERS,
            }.items()
        },
        "required": list(_DEAD_LETTER_HEADERS),
    }


def _inline(schema: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without ``$schema``/``$id``, its ``$defs`` moved into ``shared``: a definition
    differing from the shared one of its name is kept as ``<type>.v<N>.<name>``. Decided to a
    fixed point, a definition referencing a renamed one being renamed too: compared with its
    own references only, one identical to the shared one in text but not in what it refers to
    overwrote the shared entry, changing the payloads of the messages inlined before."""
    inlined = {key: value for key, value in schema.items() if key not in {"$schema", "$id"}}
    definitions: dict[str, Any] = inlined.pop("$defs", {})
    prefix = f"{schema['x-casetrail-event-type']}.v{schema['x-casetrail-schema-version']}."
    renames = {name: name for name in definitions}
    changed = True
    while changed:
        changed = False
        for name, definition in definitions.items():
            existing = shared.get(name)
            if renames[name] == name and existing not in (None, _rewrite_refs(definition, renames)):
                renames[name] = prefix + name
                changed = True
    for name, definition in definitions.items():
        shared.setdefault(renames[name], _rewrite_refs(definition, renames))
    rewritten: dict[str, Any] = _rewrite_refs(inlined, renames)
    return rewritten


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        rewritten = {key: _rewrite_refs(value, renames) for key, value in node.items()}
        reference = rewritten.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            rewritten["$ref"] = "#/components/schemas/" + renames[reference.split("/")[-1]]
        return rewritten
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def dump(document_: dict[str, Any]) -> str:
    return yaml.safe_dump(document_, sort_keys=False, allow_unicode=True, width=100)


def consumer_groups(topology: Path) -> list[str]:
    """The services' consumer groups, from the Helm chart's topology (checked against the code
    by tests/k8s/test_chart_topology.py)."""
    services = yaml.safe_load(topology.read_text(encoding="utf-8"))["services"]
    return sorted(group for service in services.values() for group in service["groups"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m events.asyncapi",
        description="Write (or --check) the AsyncAPI document of casetrail's topics.",
    )
    parser.add_argument("--check", action="store_true", help="only report whether it is stale")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    arguments = parser.parse_args(argv)
    expected = dump(document(consumer_groups(arguments.topology)))
    current = arguments.output.read_text(encoding="utf-8") if arguments.output.is_file() else None
    if arguments.check:
        if current != expected:
            print(
                f"{arguments.output} is out of sync with the event catalog:"
                " run `python -m events.asyncapi`",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != expected:
        arguments.output.write_text(expected, encoding="utf-8")
        print(arguments.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
