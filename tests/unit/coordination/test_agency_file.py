"""The agency configuration file: example when absent, precise errors when wrong."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.limits import (
    MAX_AMOUNT_MINOR_UNITS,
    MAX_VALID_FOR_DAYS,
    within_moment_bounds,
)
from events.catalog.base import Role
from events.catalog.eligibility import EligibilityDetermined, EligibilityFacts
from events.catalog.values import Money, NeedCategory
from services.coordination.adapters.agency_file import AgencyConfigError, load_agency
from services.coordination.adapters.example_agency import example_agency
from services.coordination.domain.commands import DetermineEligibility
from services.coordination.domain.eligibility import decide_eligibility
from services.coordination.domain.facts import CaseFacts


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


def _refused(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "agency.json"
    path.write_text(json.dumps(config))
    with pytest.raises(AgencyConfigError) as refused:
        load_agency(path)
    return str(refused.value)


def test_a_validity_whose_last_day_the_catalog_cannot_hold_is_refused_at_start(
    tmp_path: Path,
) -> None:
    # 3,000,000 days loaded, then every positive decision on it failed INTERNAL (date overflow).
    config = example_agency().model_dump(mode="json")
    config["programs"][0]["valid_for_days"] = 3_000_000
    assert "programs.0.valid_for_days" in _refused(tmp_path, config)
    config["programs"][0]["valid_for_days"] = MAX_VALID_FOR_DAYS + 1
    assert "programs.0.valid_for_days" in _refused(tmp_path, config)

    config["programs"][0]["valid_for_days"] = MAX_VALID_FOR_DAYS
    path = tmp_path / "agency.json"
    path.write_text(json.dumps(config))
    program = load_agency(path).programs[0]
    facts = CaseFacts("case-1", "client-1", (NeedCategory.HOME_CARE,))
    eligible = DetermineEligibility(
        case_id="case-1",
        program_id=program.program_id,
        facts=EligibilityFacts(
            age=70,
            monthly_income=Money(amount_minor_units=100, currency="USD"),
            residence=program.residence_in[0],
        ),
    )
    [decision] = decide_eligibility(facts, program, eligible, date(2099, 12, 31))
    assert isinstance(decision, EligibilityDetermined)
    assert decision.valid_until is not None
    assert within_moment_bounds(decision.valid_until)


def test_an_amount_the_apis_cannot_carry_is_refused_at_start(tmp_path: Path) -> None:
    # A line of 2**64 cents loaded, then ReserveBudget recorded and failed INTERNAL building
    # the int64 of what was left (on every retry), and GetBudgetLine failed alike.
    config = example_agency().model_dump(mode="json")
    config["budget_lines"][0]["amount"]["amount_minor_units"] = 2**64
    config["programs"][0]["max_monthly_income"]["amount_minor_units"] = 2**63
    message = _refused(tmp_path, config)
    assert "budget_lines.0.amount" in message
    assert "programs.0.max_monthly_income" in message

    config["budget_lines"][0]["amount"]["amount_minor_units"] = MAX_AMOUNT_MINOR_UNITS
    config["programs"][0]["max_monthly_income"]["amount_minor_units"] = MAX_AMOUNT_MINOR_UNITS
    path = tmp_path / "agency.json"
    path.write_text(json.dumps(config))
    assert load_agency(path).budget_lines[0].amount.amount_minor_units == MAX_AMOUNT_MINOR_UNITS
