"""The published JSON Schemas under events/schemas match the catalog, byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from events.catalog.base import PERSONAL_MARK, SENSITIVE_MARK
from events.catalog_registry import all_event_types, current_models, legacy_models
from events.cloudevents import ENVELOPE_SCHEMA_URI, dataschema_uri
from events.schema_export import DEFAULT_DIRECTORY, check, main, render, write

REPOSITORY = Path(__file__).resolve().parents[2]


def _load(relative: str) -> Any:
    return json.loads((DEFAULT_DIRECTORY / relative).read_text(encoding="utf-8"))


def test_committed_schemas_are_in_sync() -> None:
    problems = check(DEFAULT_DIRECTORY)
    assert problems == [], "run `python -m events.schema_export` and commit the result"


def test_check_command_exits_zero_when_in_sync() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "events.schema_export", "--check"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr


def test_check_lists_every_file_out_of_sync(tmp_path: Path, capsys: Any) -> None:
    write(tmp_path)
    assert check(tmp_path) == []
    (tmp_path / "casetrail.case.closed" / "v1.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "casetrail.case.opened" / "v1.json").unlink()
    (tmp_path / "casetrail.case.vanished").mkdir()
    (tmp_path / "casetrail.case.vanished" / "v1.json").write_text("{}\n", encoding="utf-8")
    assert check(tmp_path) == [
        "casetrail.case.closed/v1.json: differs from the catalog",
        "casetrail.case.opened/v1.json: missing",
        "casetrail.case.vanished/v1.json: no longer in the catalog",
    ]
    assert main(["--check", "--directory", str(tmp_path)]) == 1
    assert "casetrail.case.opened/v1.json: missing" in capsys.readouterr().err
    assert main(["--directory", str(tmp_path)]) == 0
    assert check(tmp_path) == []


def test_output_is_deterministic() -> None:
    first, second = render(), render()
    assert first == second
    for content in first.values():
        assert content.endswith("}\n")
        assert not content.endswith("\n\n")
        document = json.loads(content)
        assert content == json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_one_schema_per_type_and_version() -> None:
    expected = {
        f"{model.event_type}/v{model.schema_version}.json"
        for model in (*current_models(), *legacy_models())
    }
    assert expected | {"catalog.json", "envelope.cloudevents.json"} == set(render())
    assert "casetrail.case.opened/v1.json" in expected
    assert "casetrail.case.opened/v2.json" in expected
    assert "casetrail.case.opened/v3.json" in expected


def test_schema_ids_are_the_cloudevents_dataschema() -> None:
    for model in (*current_models(), *legacy_models()):
        schema = _load(f"{model.event_type}/v{model.schema_version}.json")
        assert schema["$id"] == dataschema_uri(model.event_type, model.schema_version)
        assert schema["x-casetrail-event-type"] == model.event_type
        assert schema["x-casetrail-schema-version"] == model.schema_version
        assert schema["description"]
        assert len(schema["examples"]) == 1
    assert _load("envelope.cloudevents.json")["$id"] == ENVELOPE_SCHEMA_URI


def test_catalog_index_lists_every_version_with_its_sensitive_fields() -> None:
    index = _load("catalog.json")
    entries = {(entry["type"], entry["version"]): entry for entry in index["events"]}
    assert {event_type for event_type, _ in entries} == set(all_event_types())
    assert entries[("casetrail.case.opened", 1)]["current"] is False
    assert entries[("casetrail.case.opened", 2)]["current"] is False
    assert entries[("casetrail.case.opened", 3)]["current"] is True
    for model in (*current_models(), *legacy_models()):
        entry = entries[(model.event_type, model.schema_version)]
        assert entry["sensitive_fields"] == sorted(model.sensitive_fields())
        assert (DEFAULT_DIRECTORY / entry["schema"]).is_file()
        assert entry["description"]
    assessment = entries[("casetrail.initial_assessment.recorded", 1)]
    assert assessment["sensitive_fields"] == ["factors", "needs", "risks"]


def test_sensitive_marks_are_published() -> None:
    schema_text = (DEFAULT_DIRECTORY / "casetrail.contact.logged" / "v1.json").read_text()
    summary = json.loads(schema_text)["properties"]["summary"]
    assert summary[SENSITIVE_MARK] is True


def test_personal_marks_are_published() -> None:
    schema_text = (DEFAULT_DIRECTORY / "casetrail.client.registered" / "v2.json").read_text()
    schema = json.loads(schema_text)
    for field in ("date_of_birth", "identifiers", "contact"):
        assert schema["properties"][field][PERSONAL_MARK] is True, field
    assert schema["$defs"]["PersonName"]["properties"]["given_names"][PERSONAL_MARK] is True
