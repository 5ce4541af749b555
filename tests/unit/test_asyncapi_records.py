"""Every record the relay sends validates against its own message in ``events/asyncapi.yaml``
(headers and payload), in binary mode and in structured mode.

Validated with ``jsonschema`` against the committed document, as subscribers and code generated
from it read it. An event stored under a superseded version whose stored form holds in clear a
value the current version seals goes in structured mode (``events.cloudevents``): the document
said so in prose only, its ``content-type`` header a constant ``application/json`` and its
payload the bare data, so a subscriber validating against it refused every such record.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any
from uuid import UUID

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker

from events.asyncapi import DEFAULT_OUTPUT as ASYNCAPI_DOCUMENT
from events.catalog.base import CaseEvent, Role
from events.catalog.examples import example_events, legacy_example_events
from events.catalog_registry import build_registry
from events.cloudevents import (
    JSON_CONTENT_TYPE,
    KAFKA_CONTENT_TYPE_HEADER,
    STRUCTURED_CONTENT_TYPE,
    KafkaRecord,
    to_kafka_binary,
    to_structured,
)
from events.envelope import RecordedEvent, StoredEnvelope
from events.registry import EventRegistry, encode
from tests.unit.keys.support import protected

EXAMPLES = [*example_events(), *legacy_example_events()]
EVENT_ID = UUID("5b0c6d2e-8f1a-4c3b-9d4e-0a1b2c3d4e5f")
STORES = {"in_clear": build_registry, "sealed": protected}
"""How the store kept the example: in clear (stored before sealing existed), or sealed by the
marks of the version it is stored under."""


def _id(event: CaseEvent) -> str:
    return f"{event.event_type}.v{event.schema_version}"


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ASYNCAPI_DOCUMENT.read_text(encoding="utf-8"))
    return document


@cache
def _validator(message_id: str, part: str) -> Draft202012Validator:
    """The message's ``part``; its references point into the whole document, so the document is
    the root resource."""
    schema = {**_document(), "$ref": f"#/components/messages/{message_id}/{part}"}
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _problems(record: KafkaRecord) -> list[str]:
    """``record`` against the message of its ``ce_type`` and ``ce_schemaversion``."""
    headers = {name: value.decode() for name, value in record.headers}
    message_id = f"{headers['ce_type']}.v{headers['ce_schemaversion']}"
    return [
        f"{part} {error.json_path}: {error.message[:200]}"
        for part, instance in (("headers", headers), ("payload", json.loads(record.value)))
        for error in _validator(message_id, part).iter_errors(instance)
    ]


def _stored(event: CaseEvent, registry: EventRegistry) -> RecordedEvent:
    """``event`` as a store (sealing as ``registry`` does) hands it to the relay."""
    return RecordedEvent.stored(
        stream=f"case-{event.subject}",
        sequence=3,
        position=1_003,
        event_type=event.event_type,
        subject=event.subject,
        schema_version=event.schema_version,
        data=registry.seal(event, EVENT_ID, encode(event)),
        registry=registry,
        envelope=StoredEnvelope(
            event_id=str(EVENT_ID),
            source="intake",
            actor_id="worker-ana",
            actor_role=Role.SOCIAL_WORKER.value,
            correlation_id="0f0e0d0c-0b0a-4908-8706-050403020100",
            causation_id=None,
            occurred_at=1_709_573_400_000_007,
            recorded_at=1_709_629_201_250_000,
        ),
    )


def _content_type(record: KafkaRecord) -> str:
    return dict(record.headers)[KAFKA_CONTENT_TYPE_HEADER].decode()


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("event", EXAMPLES, ids=_id)
def test_every_record_sent_validates_against_its_message(event: CaseEvent, store: str) -> None:
    assert _problems(to_kafka_binary(_stored(event, STORES[store]()))) == []


def test_the_examples_include_records_sent_in_each_mode() -> None:
    """So that the test above covers structured mode: every legacy example kept in clear whose
    current version seals a value it holds."""
    modes = {
        _content_type(to_kafka_binary(_stored(event, build_registry())))
        for event in legacy_example_events()
    }
    assert modes == {JSON_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE}


def test_a_message_never_sent_in_structured_mode_refuses_it() -> None:
    """Only the messages that may come in structured mode allow it: the rest keep the exact
    binary-mode contract, content type and bare data."""
    event = next(
        event for event in example_events() if event.event_type == "casetrail.case.reopened"
    )
    stored = _stored(event, build_registry())
    record = to_kafka_binary(stored)
    headers = [
        (name, STRUCTURED_CONTENT_TYPE.encode() if name == KAFKA_CONTENT_TYPE_HEADER else value)
        for name, value in record.headers
    ]
    value = json.dumps(to_structured(stored)).encode()
    problems = _problems(KafkaRecord(record.key, headers, value))
    assert f"headers $['content-type']: '{JSON_CONTENT_TYPE}' was expected" in problems
    assert any(problem.startswith("payload $: Additional properties") for problem in problems)
