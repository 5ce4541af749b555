"""The rules a published schema version is held to (``make api-check``): it may widen, never
narrow. Each rule with a widening it lets through and a narrowing it refuses, named by file,
instance path and rule."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from events.catalog_registry import current_models, legacy_models
from events.schema_compat import RULES, Narrowing, narrowings, narrowings_between
from events.schema_export import DEFAULT_DIRECTORY, accepting_sealed_values

FILE = "casetrail.example.thing/v1.json"
REPOSITORY = Path(__file__).resolve().parents[2]


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties}


STRING = {"type": "string"}
LIST = {"type": "array", "items": STRING}

# rule -> (a widening it accepts, a narrowing it refuses at path), old and new schema each.
CASES: dict[str, tuple[tuple[Any, Any], tuple[Any, Any, str]]] = {
    "type-changed": (
        (_object(a={"type": "integer"}), _object(a={"type": ["number", "null"]})),
        (_object(a={"type": ["string", "null"]}), _object(a=STRING), "$.a"),
    ),
    "enum-narrowed": (
        (_object(a={"enum": ["x"]}), _object(a={"enum": ["x", "y"]})),
        (_object(a={"enum": ["x", "y"]}), _object(a={"enum": ["x"]}), "$.a"),
    ),
    "bound-tightened": (
        (_object(a={**STRING, "maxLength": 10}), _object(a={**STRING, "maxLength": 20})),
        (_object(a={**STRING, "maxLength": 20}), _object(a={**STRING, "maxLength": 10}), "$.a"),
    ),
    "pattern-changed": (
        (_object(a={**STRING, "pattern": "^x$"}), _object(a=STRING)),
        (_object(a={**STRING, "pattern": "^x"}), _object(a={**STRING, "pattern": "^x$"}), "$.a"),
    ),
    "format-changed": (
        (_object(a={**STRING, "format": "date"}), _object(a=STRING)),
        (_object(a=STRING), _object(a={**STRING, "format": "date"}), "$.a"),
    ),
    "required-added": (
        ({**_object(a=STRING), "required": ["a"]}, _object(a=STRING)),
        (_object(a=STRING), {**_object(a=STRING), "required": ["a"]}, "$.a"),
    ),
    "property-removed": (
        (_object(a=STRING), _object(a=STRING, b=STRING)),
        (_object(a=STRING, b=STRING), _object(a=STRING), "$.b"),
    ),
    "additional-properties-closed": (
        (_object(a=STRING), {"type": "object", "properties": {"a": STRING}}),
        ({"type": "object", "properties": {"a": STRING}}, _object(a=STRING), "$.*"),
    ),
    "keyword-changed": (
        (_object(a={**STRING, "not": {"const": "x"}}), _object(a=STRING)),
        (_object(a=STRING), _object(a={**STRING, "not": {"const": "x"}}), "$.a"),
    ),
}


def test_every_rule_has_a_case() -> None:
    assert set(CASES) | {"file-removed"} == set(RULES)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_a_widening_is_accepted(rule: str) -> None:
    old, new = CASES[rule][0]
    assert narrowings(FILE, old, new) == []


@pytest.mark.parametrize("rule", sorted(CASES))
def test_a_narrowing_is_refused_naming_file_path_and_rule(rule: str) -> None:
    old, new, path = CASES[rule][1]
    [found] = narrowings(FILE, old, new)
    assert (found.file, found.path, found.rule) == (FILE, path, rule)
    assert str(found).startswith(f"{FILE}: {path}: {rule}: ")


@pytest.mark.parametrize(
    ("keyword", "old", "new"),
    [
        ("maxLength", 20, 10),
        ("minLength", 1, 2),
        ("maximum", 10, 9),
        ("minimum", 0, 1),
        ("maxItems", 5, 4),
        ("minItems", 0, 1),
    ],
)
def test_each_bound_may_loosen_or_go_but_not_tighten_or_appear(
    keyword: str, old: int, new: int
) -> None:
    base = {"type": "array"} if "Items" in keyword else STRING
    if keyword in {"maximum", "minimum"}:
        base = {"type": "number"}
    loose, tight, absent = {**base, keyword: old}, {**base, keyword: new}, dict(base)
    assert narrowings(FILE, tight, loose) == []
    assert narrowings(FILE, loose, absent) == []
    for narrower in ((loose, tight), (absent, tight)):
        assert [found.rule for found in narrowings(FILE, *narrower)] == ["bound-tightened"]


def test_a_removed_schema_file_is_refused_and_a_new_one_accepted(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for directory, names in ((old, ["a/v1.json"]), (new, ["b/v1.json", "catalog.json"])):
        for name in names:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(json.dumps(STRING), encoding="utf-8")
    assert narrowings_between(new, old) == [
        Narrowing("b/v1.json", "$", "file-removed", "a published schema no longer exists")
    ]
    (new / "a").mkdir()
    (new / "a" / "v1.json").write_text(json.dumps({}), encoding="utf-8")
    assert narrowings_between(old, new) == []


def test_choices_and_references_are_followed_to_the_instance_path() -> None:
    definitions = {"Need": {"enum": ["housing", "food"], "type": "string"}}
    old = {**_object(needs={"type": "array", "items": {"$ref": "#/$defs/Need"}})}
    old["$defs"] = definitions
    sealed = {"anyOf": [{"$ref": "#/$defs/Need"}, {"type": "string", "pattern": "^ct1~"}]}
    widened = {**_object(needs={"type": "array", "items": sealed}), "$defs": definitions}
    assert narrowings(FILE, old, widened) == []
    narrowed = json.loads(json.dumps(old))
    narrowed["$defs"]["Need"]["enum"] = ["housing"]
    [found] = narrowings(FILE, old, narrowed)
    assert (found.path, found.rule) == ("$.needs[*]", "enum-narrowed")
    assert '"food"' in found.message
    # A choice that went away: null no longer accepted.
    optional = _object(a={"anyOf": [STRING, {"type": "null"}]})
    [gone] = narrowings(FILE, optional, _object(a=STRING))
    assert (gone.path, gone.rule) == ("$.a", "type-changed")


def test_recursive_definitions_terminate() -> None:
    node = {
        "type": "object",
        "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
    }
    schema = {"$ref": "#/$defs/Node", "$defs": {"Node": node}}
    assert narrowings(FILE, schema, schema) == []


def test_dropping_an_enum_value_of_a_published_version_is_refused() -> None:
    # rev21's repro: DischargeReason lost client_moved with case.closed still at v1.
    published = json.loads((DEFAULT_DIRECTORY / "casetrail.case.closed/v1.json").read_text())
    narrowed = json.loads(json.dumps(published))
    reason = narrowed["$defs"]["DischargeReason"]
    reason["enum"].remove("client_moved")
    assert [
        str(found) for found in narrowings("casetrail.case.closed/v1.json", published, narrowed)
    ] == ['casetrail.case.closed/v1.json: $.reason: enum-narrowed: no longer allows "client_moved"']


@pytest.mark.parametrize(
    "model",
    [*current_models(), *legacy_models()],
    ids=lambda model: f"{model.event_type}.v{model.schema_version}",
)
def test_accepting_sealed_values_only_widens(model: Any) -> None:
    plaintext = model.model_json_schema()
    assert narrowings(FILE, plaintext, accepting_sealed_values(plaintext)) == []


def _check_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """infra/api/check.py, a script rather than a module of a package (registered while the
    test runs: its dataclass looks its module up)."""
    spec = importlib.util.spec_from_file_location("api_check", REPOSITORY / "infra/api/check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_accepted_schema_breaks_are_listed_by_rule_file_and_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = _check_script(monkeypatch)
    entries = check.accepted_breaks(check.ACCEPTED_SCHEMA_BREAKS, frozenset({"file", "path"}))
    assert isinstance(entries, list)
    found = Narrowing(FILE, "$.a", "enum-narrowed", "no longer allows 1")
    listed = [{"rule": "enum-narrowed", "file": FILE, "path": "$.a", "reason": "never sent"}]
    assert check.is_accepted_narrowing(found, listed)
    assert not check.is_accepted_narrowing(found, [{**listed[0], "path": "$.b"}])
