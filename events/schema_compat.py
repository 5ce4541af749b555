"""Published schema versions only widen: the rules ``make api-check`` holds them to.

A ``events/schemas/<type>/v<N>.json`` is the contract of data already stored and published
under that version: subscribers validate against it, and stored events are never rewritten.
So a later commit may change it only in ways every event valid under the old file stays valid
under the new one. ``narrowings`` compares two versions of one schema and reports each change
an old event could fail, with the rule it breaks and the instance path where (``$.name``,
``$.needs[*]``, ``$.*`` for additional properties). A change to the data's shape needs a new
``schema_version`` (and an upcaster), which publishes a new file instead.

Rules (``RULES``): ``file-removed``, ``type-changed``, ``enum-narrowed``, ``bound-tightened``,
``pattern-changed``, ``format-changed``, ``required-added``, ``property-removed``,
``additional-properties-closed``, ``keyword-changed``. The comparison is structural and
conservative: it follows ``$ref`` into each document's own ``$defs``, matches each old
``anyOf``/``oneOf`` choice with a new one that accepts it, and refuses a change to any
validation keyword it has no rule for. Annotations (``title``, ``description``, ``default``,
``examples``, ``x-...`` marks) may change freely.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RULES = (
    "file-removed",
    "type-changed",
    "enum-narrowed",
    "bound-tightened",
    "pattern-changed",
    "format-changed",
    "required-added",
    "property-removed",
    "additional-properties-closed",
    "keyword-changed",
)

NOT_A_SCHEMA = frozenset({"catalog.json"})
"""Published files that are not schemas (the index; its entries follow the schema files)."""

_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"}
    | {"$comment", "$schema", "$id", "$defs"}
)
_UPPER_BOUNDS = ("maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum")
_LOWER_BOUNDS = ("minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum")
_HANDLED = frozenset(
    {"type", "enum", "const", "pattern", "format", "multipleOf", "uniqueItems", "required"}
    | {"properties", "additionalProperties", "items", "prefixItems", "anyOf", "oneOf", "allOf"}
    | {"$ref", *_UPPER_BOUNDS, *_LOWER_BOUNDS}
)


@dataclass(frozen=True)
class Narrowing:
    """A change to a published schema that an event valid under the old one can fail."""

    file: str
    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.rule}: {self.message}"


def narrowings(file: str, old: Any, new: Any) -> list[Narrowing]:
    """Every narrowing from ``old`` to ``new`` (two versions of the schema ``file``)."""
    comparison = _Comparison(file, old, new)
    return list(comparison.compare(old, new, "$", frozenset()))


def narrowings_between(old_directory: Path, new_directory: Path) -> list[Narrowing]:
    """Every narrowing of a schema file published in ``old_directory`` (the files of an
    earlier commit) as ``new_directory`` holds it, a removed file included."""
    found: list[Narrowing] = []
    for old_path in sorted(old_directory.rglob("*.json")):
        relative = old_path.relative_to(old_directory).as_posix()
        if relative in NOT_A_SCHEMA:
            continue
        new_path = new_directory / relative
        if not new_path.is_file():
            found.append(
                Narrowing(relative, "$", "file-removed", "a published schema no longer exists")
            )
            continue
        old = json.loads(old_path.read_text(encoding="utf-8"))
        new = json.loads(new_path.read_text(encoding="utf-8"))
        found.extend(narrowings(relative, old, new))
    return found


class _Comparison:
    def __init__(self, file: str, old_document: Any, new_document: Any) -> None:
        self._file = file
        self._old_definitions = _definitions(old_document)
        self._new_definitions = _definitions(new_document)

    def _found(self, path: str, rule: str, message: str) -> Narrowing:
        return Narrowing(self._file, path, rule, message)

    def compare(self, old: Any, new: Any, path: str, seen: frozenset[Any]) -> Iterator[Narrowing]:
        """What an instance at ``path`` valid under ``old`` may fail under ``new``."""
        visit = (_reference(old), _reference(new))
        if visit != (None, None):
            if visit in seen:
                return  # a recursive definition already being compared at this pair
            seen = seen | {visit}
        old_choices = self._choices(old, self._old_definitions)
        new_choices = self._choices(new, self._new_definitions)
        for old_choice in old_choices:
            if old_choice is False:
                continue  # accepts nothing: nothing to keep accepting
            attempts = [list(self._leaf(old_choice, choice, path, seen)) for choice in new_choices]
            if any(not attempt for attempt in attempts):
                continue
            # No choice accepts it: report why the closest one (same type) does not.
            old_types = _types(old_choice) or _value_types(old_choice)
            closest = next(
                (
                    attempt
                    for choice, attempt in zip(new_choices, attempts, strict=True)
                    if not old_types or (_types(choice) or old_types) & old_types
                ),
                None,
            )
            if closest is None:
                yield self._found(
                    path, "type-changed", f"no longer accepts {_describe(old_choice)}"
                )
            else:
                yield from closest

    def _choices(self, schema: Any, definitions: dict[str, Any]) -> list[Any]:
        """``schema`` as a list of alternatives (``anyOf``/``oneOf`` flattened, ``$ref``s
        resolved); an instance is valid when one of them accepts it."""
        schema = _resolved(schema, definitions)
        if not isinstance(schema, dict):
            return [schema]
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                rest = {key: value for key, value in schema.items() if key != combinator}
                return [
                    choice if not isinstance(choice, dict) else {**rest, **choice}
                    for branch in schema[combinator]
                    for choice in self._choices(branch, definitions)
                ]
        return [schema]

    def _leaf(self, old: Any, new: Any, path: str, seen: frozenset[Any]) -> Iterator[Narrowing]:
        if new is True or new == {}:
            return
        if old is True:
            old = {}
        if new is False:
            yield self._found(path, "type-changed", "accepts nothing any more")
            return
        for sub in new.get("allOf", ()):
            yield from self.compare(old, sub, path, seen)
        yield from self._type(old, new, path)
        yield from self._values(old, new, path)
        yield from self._bounds(old, new, path)
        for keyword, rule in (("pattern", "pattern-changed"), ("format", "format-changed")):
            if keyword in new and new[keyword] != old.get(keyword):
                was = f"{old[keyword]!r}" if keyword in old else "none"
                yield self._found(path, rule, f"{keyword} {new[keyword]!r} (was {was})")
        yield from self._object(old, new, path, seen)
        yield from self._array(old, new, path, seen)
        for keyword in sorted(new.keys() - _HANDLED - _ANNOTATIONS):
            if not keyword.startswith("x-") and new[keyword] != old.get(keyword):
                yield self._found(
                    path, "keyword-changed", f"{keyword} {json.dumps(new[keyword])} is new"
                )

    def _type(self, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Narrowing]:
        new_types = _types(new)
        if new_types is None:
            return
        old_types = _types(old)
        if old_types is None:
            old_types = _value_types(old) or {"any type"}
        lost = old_types - new_types - ({"integer"} if "number" in new_types else set())
        if lost:
            yield self._found(
                path,
                "type-changed",
                f"type {sorted(new_types)} no longer accepts {', '.join(sorted(lost))}",
            )

    def _values(self, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Narrowing]:
        new_values = _allowed_values(new)
        if new_values is None:
            return
        old_values = _allowed_values(old)
        if old_values is None:
            yield self._found(path, "enum-narrowed", "values now restricted to a list")
            return
        lost = [value for value in old_values if value not in new_values]
        if lost:
            listed = ", ".join(json.dumps(value) for value in lost)
            yield self._found(path, "enum-narrowed", f"no longer allows {listed}")

    def _bounds(self, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Narrowing]:
        for keywords, tighter in ((_UPPER_BOUNDS, _lower), (_LOWER_BOUNDS, _higher)):
            for keyword in keywords:
                if keyword in new and (keyword not in old or tighter(new[keyword], old[keyword])):
                    was = old.get(keyword, "none")
                    yield self._found(
                        path, "bound-tightened", f"{keyword} {new[keyword]} (was {was})"
                    )
        if "multipleOf" in new and new["multipleOf"] != old.get("multipleOf"):
            yield self._found(path, "bound-tightened", f"multipleOf {new['multipleOf']} is new")
        if new.get("uniqueItems") and not old.get("uniqueItems"):
            yield self._found(path, "bound-tightened", "items must now be unique")

    def _object(
        self, old: dict[str, Any], new: dict[str, Any], path: str, seen: frozenset[Any]
    ) -> Iterator[Narrowing]:
        old_properties: dict[str, Any] = old.get("properties", {})
        new_properties: dict[str, Any] = new.get("properties", {})
        old_additional = old.get("additionalProperties", True)
        new_additional = new.get("additionalProperties", True)
        for name in sorted(set(new.get("required", ())) - set(old.get("required", ()))):
            yield self._found(f"{path}.{name}", "required-added", "newly required")
        for name, old_property in old_properties.items():
            if name in new_properties:
                yield from self.compare(old_property, new_properties[name], f"{path}.{name}", seen)
            else:
                yield self._found(f"{path}.{name}", "property-removed", "no longer declared")
        for name, new_property in new_properties.items():
            if name not in old_properties and old_additional is not False:
                # The old schema let any value stand here under this name.
                yield from self.compare(old_additional, new_property, f"{path}.{name}", seen)
        if new_additional is False and old_additional is not False:
            yield self._found(
                f"{path}.*", "additional-properties-closed", "other properties no longer allowed"
            )
        elif new_additional is not False and old_additional is not False:
            yield from self.compare(old_additional, new_additional, f"{path}.*", seen)

    def _array(
        self, old: dict[str, Any], new: dict[str, Any], path: str, seen: frozenset[Any]
    ) -> Iterator[Narrowing]:
        old_prefix: list[Any] = old.get("prefixItems", [])
        new_prefix: list[Any] = new.get("prefixItems", [])
        for index in range(max(len(old_prefix), len(new_prefix))):
            yield from self.compare(
                old_prefix[index] if index < len(old_prefix) else old.get("items", True),
                new_prefix[index] if index < len(new_prefix) else new.get("items", True),
                f"{path}[{index}]",
                seen,
            )
        if "items" in new:
            yield from self.compare(old.get("items", True), new["items"], f"{path}[*]", seen)


def _definitions(document: Any) -> dict[str, Any]:
    definitions = document.get("$defs", {}) if isinstance(document, dict) else {}
    return definitions if isinstance(definitions, dict) else {}


def _reference(schema: Any) -> str | None:
    reference = schema.get("$ref") if isinstance(schema, dict) else None
    return reference if isinstance(reference, str) else None


def _resolved(schema: Any, definitions: dict[str, Any]) -> Any:
    """``schema`` with its local ``$ref`` replaced by the definition (siblings kept)."""
    seen: set[str] = set()
    while (reference := _reference(schema)) is not None and reference not in seen:
        seen.add(reference)
        if not reference.startswith("#/$defs/"):
            raise ValueError(f"only local #/$defs references are compared, not {reference}")
        target = definitions[reference.removeprefix("#/$defs/")]
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        schema = target if not siblings else {**target, **siblings}
    return schema


def _types(schema: Any) -> set[str] | None:
    """The JSON types ``schema`` names (``None``: it names none, so it does not limit them)."""
    if not isinstance(schema, dict) or "type" not in schema:
        return None
    declared = schema["type"]
    return {declared} if isinstance(declared, str) else set(declared)


def _allowed_values(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return list(enum) if isinstance(enum, list) else None


def _value_types(schema: Any) -> set[str]:
    """The types of an untyped schema's allowed values (an enum of strings: string)."""
    if not isinstance(schema, dict):
        return set()
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    values = _allowed_values(schema) or []
    return {"null" if value is None else names.get(type(value), "object") for value in values}


def _describe(schema: Any) -> str:
    types = _types(schema) if isinstance(schema, dict) else None
    if types:
        return "/".join(sorted(types))
    values = _allowed_values(schema) if isinstance(schema, dict) else None
    if values is not None:
        return "values " + ", ".join(json.dumps(value) for value in values)
    return "what it accepted"


def _lower(new: float, old: float) -> bool:
    return new < old


def _higher(new: float, old: float) -> bool:
    return new > old
