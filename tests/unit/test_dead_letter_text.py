"""What a dead letter and the log say about the error that failed an event: a topic of dead
letters is kept forever, so a message that may quote the event's values is withheld."""

from __future__ import annotations

import pytest

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.commands import RuleBroken
from events.errors import FieldProblem, InvalidEventError

SECRET = "diagnosed with PTSD after the assault"


def _raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


@pytest.mark.parametrize(
    "error",
    [ValueError(f"cannot apply {SECRET!r}"), KeyError(SECRET), RuntimeError(SECRET)],
)
def test_a_foreign_error_is_named_with_its_place_and_its_message_withheld(
    error: Exception,
) -> None:
    text = failure_text(_raised(error))

    assert SECRET not in text
    assert text.startswith(f"{type(error).__name__} at test_dead_letter_text.py:")
    assert text.endswith("(message withheld: it may quote event data)")


def test_our_errors_which_name_fields_and_rules_are_quoted() -> None:
    invalid = InvalidEventError("casetrail.case.opened", [FieldProblem("data.x", "required")])

    assert failure_text(invalid) == str(invalid)
    assert failure_text(RuleBroken("PLAN_HAS_NO_GOALS", "a plan needs a goal")) == (
        "PLAN_HAS_NO_GOALS: a plan needs a goal"
    )
    assert failure_text(ConnectionRefusedError(111, "Connection refused")).endswith(
        "Connection refused"
    )
