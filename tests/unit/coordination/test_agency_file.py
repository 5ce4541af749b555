"""The agency configuration file: example when absent, precise errors when wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from events.catalog.base import Role
from services.coordination.adapters.agency_file import AgencyConfigError, load_agency
from services.coordination.adapters.example_agency import example_agency


def test_without_a_file_the_example_agency_is_used(tmp_path: Path) -> None:
    agency = load_agency(tmp_path / "agency.json")
    assert agency == example_agency()
    roles = {worker.role for worker in agency.workers}
    assert {Role.SOCIAL_WORKER, Role.CASE_MANAGER} <= roles
    licences = {c.name for w in agency.workers for c in w.credentials if c.kind == "licence"}
    assert {"LBSW", "LMSW", "LCSW"} <= licences
    assert agency.program("home-care-medicaid-waiver") is not None


def test_the_example_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / "agency.json"
    path.write_text(example_agency().model_dump_json(exclude_none=True))
    assert load_agency(path) == example_agency()


def test_a_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agency.json"
    path.write_text("{workers: [")
    with pytest.raises(AgencyConfigError, match=r"agency\.json"):
        load_agency(path)


def test_every_bad_field_is_named(tmp_path: Path) -> None:
    config = example_agency().model_dump(mode="json")
    config["budget_lines"][0]["amount"]["currency"] = "dollars"
    config["workers"].append(dict(config["workers"][0]))
    path = tmp_path / "agency.json"
    path.write_text(json.dumps(config))
    with pytest.raises(AgencyConfigError) as refused:
        load_agency(path)
    message = str(refused.value)
    assert "budget_lines.0.amount.currency" in message
    assert "worker_id must be unique" in message


def test_age_bounds_must_be_in_order(tmp_path: Path) -> None:
    config = example_agency().model_dump(mode="json")
    config["programs"][0]["max_age"] = 60
    path = tmp_path / "agency.json"
    path.write_text(json.dumps(config))
    with pytest.raises(AgencyConfigError, match="home-care-medicaid-waiver: min_age is above"):
        load_agency(path)
