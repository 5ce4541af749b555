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
