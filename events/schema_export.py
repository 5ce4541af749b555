"""Publish the catalog as JSON Schema files for subscribers in any language.

``python -m events.schema_export`` writes, under ``events/schemas/``:

* ``<event_type>/v<N>.json``: the data schema of every current and superseded version; its
  ``$id`` is the ``dataschema`` attribute of the CloudEvents that carry it. It describes the
  data as stored and published: every node marked sensitive or personal also accepts a sealed
  value (``$defs/SealedValue``, see ``SEALING_CONTRACT``);
* ``envelope.cloudevents.json``: the CloudEvents context attributes casetrail sends;
* ``catalog.json``: the index (type, version, schema path, sensitive fields, description).

``--check`` writes nothing and exits 1 listing every file that is missing, different or no
longer produced (CI runs it). Output is deterministic: sorted keys, two-space indent, one
trailing newline.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from events.catalog.base import PERSONAL_MARK, SEALED_MARKS, SENSITIVE_MARK, CaseEvent
from events.catalog.examples import example_events, legacy_example_events
from events.catalog_registry import current_models, legacy_models
from events.cloudevents import SCHEMA_BASE_URI, dataschema_uri, envelope_json_schema
from events.ordering_contract import ONE_KEY_STREAM_KINDS

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "schemas"
CATALOG_FILE = "catalog.json"
ENVELOPE_FILE = "envelope.cloudevents.json"
SEALED_VALUE_DEF = "SealedValue"
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated"})
"""Keywords that describe a marked node rather than constrain its plaintext: they stay on the
node beside the marks, where tools and readers look for them."""


def schema_path(model: type[CaseEvent]) -> str:
    """Path of the model's schema relative to the schemas directory (and to SCHEMA_BASE_URI)."""
    return f"{model.event_type}/v{model.schema_version}.json"


def event_schema(model: type[CaseEvent], example: CaseEvent | None) -> dict[str, Any]:
    schema = accepting_sealed_values(model.model_json_schema())
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = dataschema_uri(model.event_type, model.schema_version)
    schema["x-casetrail-event-type"] = model.event_type
    schema["x-casetrail-schema-version"] = model.schema_version
    schema["x-casetrail-subject-field"] = model.subject_field
    schema["x-casetrail-sensitive-fields"] = sorted(model.sensitive_fields())
    if example is not None:
        schema["examples"] = [example.model_dump(mode="json")]
    return schema


def accepting_sealed_values(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (a model's plaintext JSON Schema) as the data travels: every node marked
    sensitive or personal accepts its plaintext or a sealed value.

    The platform seals exactly the marked nodes (a marked list whole, a marked item each), so
    a schema of the plaintext alone rejects every stored or published event holding one. The
    marks and annotations stay on the node itself, so whoever finds sealed fields by the marks
    (``casetrail_platform.keys.fields``' walk, a subscriber's tooling) finds the same ones."""
    marked = False

    def widen(node: Any) -> Any:
        nonlocal marked
        if isinstance(node, list):
            return [widen(item) for item in node]
        if not isinstance(node, dict):
            return node
        if not any(node.get(mark) for mark in SEALED_MARKS):
            return {key: widen(value) for key, value in node.items()}
        marked = True
        outer = {key: value for key, value in node.items() if key in _ANNOTATIONS}
        outer.update({mark: node[mark] for mark in SEALED_MARKS if mark in node})
        # Not widened further: a mark inside a marked node is sealed with it, never alone.
        plaintext = {key: value for key, value in node.items() if key not in outer}
        sealed = {"$ref": f"#/$defs/{SEALED_VALUE_DEF}"}
        # An optional value is already a choice (the value or null): one more branch there.
        branches = plaintext["anyOf"] if plaintext.keys() == {"anyOf"} else [plaintext]
        return {**outer, "anyOf": [*branches, sealed]}

    widened: dict[str, Any] = widen(schema)
    if marked:
        definitions = widened.setdefault("$defs", {})
        if SEALED_VALUE_DEF in definitions:
            raise ValueError(f"{SEALED_VALUE_DEF} is reserved for sealed values in $defs")
        definitions[SEALED_VALUE_DEF] = {
            "type": "string",
            "pattern": SEALING_CONTRACT["pattern"],
            "description": (
                "A sensitive or personal value sealed with the client's key, in place of the "
                "value (catalog.json, sealing)."
            ),
        }
    return widened


def render() -> dict[str, str]:
    """Every file the catalog publishes: path relative to the schemas directory -> content."""
    current = current_models()
    examples = {
        (event.event_type, event.schema_version): event
        for event in (*example_events(), *legacy_example_events())
    }
    files: dict[str, str] = {}
    index: list[dict[str, Any]] = []
    for model in (*current, *legacy_models()):
        path = schema_path(model)
        if path in files:
            raise ValueError(f"{model.event_type} v{model.schema_version} is listed twice")
        files[path] = _dump(
            event_schema(model, examples.get((model.event_type, model.schema_version)))
        )
        index.append(
            {
                "type": model.event_type,
                "version": model.schema_version,
                "current": model in current,
                "schema": path,
                "dataschema": dataschema_uri(model.event_type, model.schema_version),
                "subject_field": model.subject_field,
                "sensitive_fields": sorted(model.sensitive_fields()),
                "description": _description(model),
            }
        )
    index.sort(key=lambda entry: (entry["type"], entry["version"]))
    files[ENVELOPE_FILE] = _dump(envelope_json_schema())
    files[CATALOG_FILE] = _dump(
        {
            "base_uri": SCHEMA_BASE_URI,
            "envelope": ENVELOPE_FILE,
            "sensitive_mark": SENSITIVE_MARK,
            "personal_mark": PERSONAL_MARK,
            "sealing": SEALING_CONTRACT,
            "ordering": ORDERING_CONTRACT,
            "events": index,
        }
    )
    return files


SEALING_CONTRACT: dict[str, Any] = {
    "applies_to": (
        f"Every value the schemas mark {SENSITIVE_MARK} (special-category data, withheld from "
        f"readers not entitled to it) or {PERSONAL_MARK} (who the client is: name, date of "
        "birth, identifiers, contact; disclosed by the ordinary rules), at any depth, in the "
        "data as stored, published on Kafka (including dead-letter topics) and exported."
    ),
    "encoding": (
        "The value is replaced by one JSON string ct1~<owner>~<key version>~<base64url without "
        "padding of: 12-byte nonce, then the AES-256-GCM ciphertext and 16-byte tag>. The "
        "plaintext is the value's own JSON encoding; owner is the client id (case:<case id> "
        "when the client is unknown to the key table)."
    ),
    "pattern": r"^ct1~[^~]+~[0-9]+~[A-Za-z0-9_-]+$",
    "associated_data": (
        "casetrail-field/1 NUL <event id> NUL <field path, e.g. presenting_needs[0].category> "
        "NUL <owner> NUL <key version>"
    ),
    "data_form": "Data holding sealed values is compact JSON with sorted keys.",
    "erased": (
        "After the client's erasure (casetrail.client.erased) the key is destroyed: services "
        'read such a value as "[erased]" (text), "erased" (a code), [] (a list sealed whole) '
        "or null (anything else sealed whole: a date, an object)."
    ),
}
"""How sensitive values travel (``casetrail_platform.keys.fields``): part of the public contract."""

ORDERING_CONTRACT: dict[str, Any] = {
    "per_key": (
        "Events of one producing service (source) with the same key (subject: the case id, "
        "the client id for client events; the Kafka record key) are delivered in the order "
        "that service stored them: read a partition in offset order. The same event (same id) "
        "may be delivered again later; skip ids already seen."
    ),
    "one_key_stream_kinds": list(ONE_KEY_STREAM_KINDS),
    "one_key_streams": (
        "A stream named <kind>-<subject>, kind in one_key_stream_kinds, holds events of that "
        "subject only, so all of them travel under one key. Per (source, stream) its "
        "sequence starts at 1 and rises by exactly 1 from one event to the next in delivery "
        "order, repeats aside."
    ),
    "gap_detection": (
        "Keep the last sequence seen per (source, stream) of a one-key stream. An event with a "
        "sequence at or below it is a repeat; one more than one above it is early: a gap. "
        "Hold it (and the later ones of its stream) until the missing ones arrive, do not "
        "apply it. A gap is not expected: a producer whose broker refuses a record for good "
        "parks it with every later event of its case (nothing of that case is published "
        "after it until an operator retries), so a gap that does not fill within minutes "
        "means something to report."
    ),
    "streams_spanning_cases": (
        "Other streams (schedule-<client id>, budget-<budget line>) hold events of several "
        "cases, so several keys and partitions: their sequence orders events within the "
        "stream, but delivery may interleave them across cases. Deduplicate by id."
    ),
}
"""What a subscriber can rely on about order, and how it tells a gap (catalog.json)."""


def write(directory: Path) -> list[str]:
    """Bring ``directory`` in line with ``render()``; returns the paths changed or removed."""
    changed: list[str] = []
    expected = render()
    for relative, content in expected.items():
        target = directory / relative
        if not target.is_file() or target.read_text(encoding="utf-8") != content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            changed.append(relative)
    for relative in _published_files(directory) - expected.keys():
        (directory / relative).unlink()
        changed.append(f"{relative} (removed)")
    return sorted(changed)


def check(directory: Path) -> list[str]:
    """Every file out of sync with the catalog, with what is wrong; empty when in sync."""
    expected = render()
    problems: list[str] = []
    for relative, content in sorted(expected.items()):
        target = directory / relative
        if not target.is_file():
            problems.append(f"{relative}: missing")
        elif target.read_text(encoding="utf-8") != content:
            problems.append(f"{relative}: differs from the catalog")
    for relative in sorted(_published_files(directory) - expected.keys()):
        problems.append(f"{relative}: no longer in the catalog")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m events.schema_export",
        description="Write (or --check) the JSON Schemas of the public event catalog.",
    )
    parser.add_argument("--check", action="store_true", help="only report files out of sync")
    parser.add_argument("--directory", type=Path, default=DEFAULT_DIRECTORY)
    arguments = parser.parse_args(argv)
    if arguments.check:
        problems = check(arguments.directory)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(
                "event schemas are out of sync: run `python -m events.schema_export`",
                file=sys.stderr,
            )
            return 1
        return 0
    for changed in write(arguments.directory):
        print(changed)
    return 0


def _published_files(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*.json")
        if path.is_file()
    }


def _description(model: type[CaseEvent]) -> str:
    first_paragraph = (model.__doc__ or "").strip().split("\n\n", 1)[0]
    return " ".join(first_paragraph.split())


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
