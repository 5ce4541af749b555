"""Planning refuses an empty text as "required, 1-N characters", as intake does: the bounds come
from the catalog model (events.validation.reported), whether one field is checked alone or the
whole event is (a rule spanning its fields)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from casetrail_platform.commands import InvalidCommand
from events.catalog.planning import GoalDropped
from services.planning.app.validation import Violations, invalid_command

NOTE_BOUNDS = "required, 1-20000 characters"


def _dropped(reason: str) -> GoalDropped:
    return GoalDropped(case_id="c-1", plan_id="p-1", goal_id="g-1", reason=reason)


def test_planning_field_checked_alone_names_its_bounds() -> None:
    """It said only "required"."""
    violations = Violations()
    violations.field(GoalDropped, "reason", "")
    with pytest.raises(InvalidCommand) as refused:
        violations.raise_if_any()
    assert [(p.field, p.problem) for p in refused.value.violations] == [("reason", NOTE_BOUNDS)]


def test_planning_whole_event_refusal_names_its_bounds() -> None:
    with pytest.raises(ValidationError) as error:
        _dropped("")
    refusal = invalid_command(error.value)
    assert [(p.field, p.problem) for p in refusal.violations] == [("reason", NOTE_BOUNDS)]
