"""The AsyncAPI document's shared schemas (``components.schemas``): a message's definitions
are moved there, and one differing from the shared definition of its name is kept apart."""

from __future__ import annotations

from typing import Any

from events.asyncapi import _inline


def _payload(event_type: str, categories: list[str]) -> dict[str, Any]:
    """A payload whose ``Need`` is the same text for every type, its ``Category`` not."""
    return {
        "x-casetrail-event-type": event_type,
        "x-casetrail-schema-version": 1,
        "type": "object",
        "properties": {"need": {"$ref": "#/$defs/Need"}},
        "$defs": {
            "Need": {"type": "object", "properties": {"category": {"$ref": "#/$defs/Category"}}},
            "Category": {"enum": categories},
        },
    }


def test_a_definition_referring_to_a_renamed_one_is_renamed_and_the_shared_one_kept() -> None:
    """``Need`` is textually the shared one but refers to a narrower ``Category``, renamed:
    the shared ``Need`` was overwritten with a copy referring to it, narrowing the payload of
    the message inlined first."""
    shared: dict[str, Any] = {}
    first = _inline(_payload("casetrail.a", ["housing", "food"]), shared)
    shared_before = {name: dict(definition) for name, definition in shared.items()}
    later = _inline(_payload("casetrail.b", ["housing"]), shared)

    assert {name: shared[name] for name in shared_before} == shared_before
    assert first["properties"]["need"] == {"$ref": "#/components/schemas/Need"}
    assert later["properties"]["need"] == {"$ref": "#/components/schemas/casetrail.b.v1.Need"}
    assert shared["casetrail.b.v1.Need"]["properties"]["category"] == {
        "$ref": "#/components/schemas/casetrail.b.v1.Category"
    }
    assert shared["casetrail.b.v1.Category"] == {"enum": ["housing"]}


def test_a_message_identical_to_the_shared_definitions_adds_none() -> None:
    shared: dict[str, Any] = {}
    _inline(_payload("casetrail.a", ["housing"]), shared)
    later = _inline(_payload("casetrail.b", ["housing"]), shared)
    assert sorted(shared) == ["Category", "Need"]
    assert later["properties"]["need"] == {"$ref": "#/components/schemas/Need"}


def test_the_contract_tells_subscribers_of_the_records_sent_in_structured_mode() -> None:
    """An event whose stored form holds in clear a value the current version seals is sent in
    structured mode (never that value in a header); the document described binary mode only,
    so a subscriber reading only ``ce_`` headers and a value of bare data met a record it was
    never told of."""
    from events.asyncapi import document
    from events.cloudevents import KAFKA_CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE

    description = document(()).get("info", {})["description"]
    assert f"`{KAFKA_CONTENT_TYPE_HEADER}: {STRUCTURED_CONTENT_TYPE}`" in description
    assert "Read both modes" in description
