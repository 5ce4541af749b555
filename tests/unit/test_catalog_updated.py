"""A catalog event is changed with ``CaseEvent.updated``, which validates the result as its model
validates any data; ``model_copy(update=...)`` validates nothing, so a change could build an
event its own model refuses, which the store would write (its guard checks only NUL and size)
and no reader could read back."""

from __future__ import annotations

import ast
from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from events.catalog.clients import ClientRegistered, PersonalIdentifier, PersonName

ROOT = Path(__file__).resolve().parents[2]
NON_TEST_CODE = ("events", "casetrail_platform", "services", "cli")

REGISTRATION = ClientRegistered(
    client_id="c-1",
    name=PersonName(given_names="Marco", family_name="Bellini"),
    identifiers=(PersonalIdentifier(scheme="passport", value="X1"),),
)


def test_updated_changes_the_fields_named_and_keeps_the_others() -> None:
    changed = REGISTRATION.updated(date_of_birth=date(1941, 6, 2))
    assert changed.date_of_birth == date(1941, 6, 2)
    assert changed.model_dump(exclude={"date_of_birth"}) == REGISTRATION.model_dump(
        exclude={"date_of_birth"}
    )
    assert type(changed) is ClientRegistered


def test_updated_refuses_what_the_model_refuses() -> None:
    with pytest.raises(ValidationError) as refused:
        REGISTRATION.updated(confirmed_not_duplicate_of=("c-2", "c-2"))
    [detail] = refused.value.errors()
    assert detail["loc"] == ("confirmed_not_duplicate_of",)
    with pytest.raises(ValidationError) as too_long:
        REGISTRATION.updated(client_id="c" * 65)
    assert too_long.value.errors()[0]["loc"] == ("client_id",)


def test_no_catalog_value_is_changed_without_validation_outside_tests() -> None:
    calls = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for package in NON_TEST_CODE
        for path in sorted((ROOT / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("model_copy", "model_construct")
    ]
    assert calls == [], "use CaseEvent.updated (it validates) instead"
