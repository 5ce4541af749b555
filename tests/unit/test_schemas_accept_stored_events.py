"""The published schemas describe events as they are stored and published: sealed.

Validated with ``jsonschema``, a validator written outside this project, against the committed
files (``events/schemas/`` and the payloads of ``events/asyncapi.yaml``): our own generator
checking itself would share its blind spots, as the plaintext-only schemas showed (every real
event carrying a sealed value failed its own ``dataschema``).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any
from uuid import uuid4

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker

from casetrail_platform.keys.fields import sensitive_plan
from events.asyncapi import DEFAULT_OUTPUT as ASYNCAPI_DOCUMENT
from events.catalog.base import SEALED_MARKS, CaseEvent
from events.catalog.clients import ClientRegistered, PersonName
from events.catalog.examples import example_events, legacy_example_events
from events.registry import encode
from events.schema_export import DEFAULT_DIRECTORY, schema_path
from events.sealed_values import SEALED_DATA_MARK
from tests.unit.keys.support import protected

EXAMPLES = [*example_events(), *legacy_example_events()]
SEALED_EXAMPLES = [event for event in EXAMPLES if sensitive_plan(type(event)) is not None]
FORMATS = FormatChecker()


def _id(event: CaseEvent) -> str:
    return f"{event.event_type}.v{event.schema_version}"


@cache
def _published(event_type: str, version: int) -> dict[str, Any]:
    path = DEFAULT_DIRECTORY / f"{event_type}/v{version}.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


@cache
def _asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ASYNCAPI_DOCUMENT.read_text(encoding="utf-8"))
    return document


def _problems(schema: dict[str, Any], data: Any) -> list[str]:
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=FORMATS)
    return [f"{error.json_path}: {error.message[:200]}" for error in validator.iter_errors(data)]


def _payload_problems(event: CaseEvent, data: Any) -> list[str]:
    """``data`` against the event's AsyncAPI payload; its references point into the whole
    document (``#/components/schemas/...``), so the document is the root resource."""
    message = f"#/components/messages/{event.event_type}.v{event.schema_version}/payload"
    return _problems({**_asyncapi(), "$ref": message}, data)


def _stored(event: CaseEvent) -> Any:
    """``event``'s data as a service stores and publishes it (sealed by a protected registry)."""
    data = protected().seal(event, uuid4(), encode(event))
    assert SEALED_DATA_MARK in data, "the example has no value to seal"
    return json.loads(data)


def test_examples_cover_sealed_current_and_legacy_versions() -> None:
    legacy = {_id(event) for event in legacy_example_events()}
    assert len(SEALED_EXAMPLES) >= 15
    assert legacy & {_id(event) for event in SEALED_EXAMPLES}


@pytest.mark.parametrize("event", SEALED_EXAMPLES, ids=_id)
def test_sealed_event_validates_against_its_published_schema(event: CaseEvent) -> None:
    stored = _stored(event)
    assert _problems(_published(event.event_type, event.schema_version), stored) == []
    assert _payload_problems(event, stored) == []


@pytest.mark.parametrize("event", EXAMPLES, ids=_id)
def test_plaintext_event_validates_against_its_published_schema(event: CaseEvent) -> None:
    schema = _published(event.event_type, event.schema_version)
    plaintext = json.loads(encode(event))
    assert _problems(schema, plaintext) == []
    assert _payload_problems(event, plaintext) == []
    for example in schema["examples"]:
        assert _problems(schema, example) == []


def test_a_sealed_value_of_a_bounded_field_may_exceed_the_plaintext_bound() -> None:
    # Sealing makes a value about 4/3 longer plus its prefix: a 500-character name travels as
    # a string of some 700 characters, which the plaintext's maxLength alone refuses.
    event = ClientRegistered(client_id="client-long", name=PersonName(given_names="M" * 500))
    stored = _stored(event)
    assert len(stored["name"]["given_names"]) > 500
    assert _problems(_published(event.event_type, event.schema_version), stored) == []


def test_a_malformed_sealed_value_is_refused() -> None:
    # A string in place of a code must look like a sealed value, not just any text.
    event = next(event for event in SEALED_EXAMPLES if event.event_type == "casetrail.case.opened")
    stored = _stored(event)
    stored["presenting_needs"][0]["category"] = "ct1~no-version~sealed"
    assert _problems(_published(event.event_type, event.schema_version), stored) != []


def _marked_paths(
    node: Any, definitions: dict[str, Any], path: str, seen: frozenset[str]
) -> set[str]:
    """Where the marks are, as a reader of the schema finds them: a marked node is one sealed
    value (its inside is not searched), anything else is searched through ``$ref``s,
    ``anyOf``, ``properties`` and ``items``."""
    if not isinstance(node, dict):
        return set()
    if any(node.get(mark) for mark in SEALED_MARKS):
        return {path}
    found: set[str] = set()
    reference = node.get("$ref")
    if isinstance(reference, str):
        name = reference.rsplit("/", 1)[-1]
        if name not in seen:
            found |= _marked_paths(definitions.get(name), definitions, path, seen | {name})
    for branch in node.get("anyOf", ()):
        found |= _marked_paths(branch, definitions, path, seen)
    for name, sub in node.get("properties", {}).items():
        found |= _marked_paths(sub, definitions, f"{path}.{name}", seen)
    found |= _marked_paths(node.get("items"), definitions, f"{path}[]", seen)
    return found


def _marks(schema: dict[str, Any]) -> set[str]:
    return _marked_paths(schema, schema.get("$defs", {}), "$", frozenset())


@pytest.mark.parametrize("event", EXAMPLES, ids=_id)
def test_the_published_marks_are_where_the_model_has_them(event: CaseEvent) -> None:
    model_schema = type(event).model_json_schema()
    published = _published(event.event_type, event.schema_version)
    assert _marks(published) == _marks(model_schema)
    assert published["x-casetrail-sensitive-fields"] == sorted(type(event).sensitive_fields())


def test_every_published_version_is_covered() -> None:
    published = {
        path.relative_to(DEFAULT_DIRECTORY).as_posix()
        for path in DEFAULT_DIRECTORY.glob("*/v*.json")
    }
    assert {schema_path(type(event)) for event in EXAMPLES} == published
