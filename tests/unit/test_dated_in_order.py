"""The one rule every service uses to refuse a command dated before the event it follows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from casetrail_platform.commands import InvalidCommand, require_not_before

OPENED = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_a_moment_before_the_earlier_event_is_refused_naming_the_field_and_the_event() -> None:
    with pytest.raises(InvalidCommand) as refused:
        require_not_before(OPENED - timedelta(seconds=1), "case c-1 was opened", OPENED)
    [problem] = refused.value.violations
    assert problem.field == "context.occurred_at"
    # Said so that a caller who stated no moment (the command happened now) knows what to do.
    assert problem.problem == (
        "must not be before case c-1 was opened (2026-03-01T09:00:00+00:00), and the command"
        " happens at 2026-03-01T08:59:59+00:00 (the moment it states, else now): state a moment"
        " at or after 2026-03-01T09:00:00+00:00"
    )


def test_the_field_can_be_named() -> None:
    with pytest.raises(InvalidCommand) as refused:
        require_not_before(OPENED - timedelta(days=1), "case c-1 was opened", OPENED, "starts_at")
    [problem] = refused.value.violations
    assert (problem.field, problem.problem) == (
        "starts_at",
        "must not be before case c-1 was opened (2026-03-01T09:00:00+00:00)",
    )


@pytest.mark.parametrize(
    ("moment", "earlier"),
    [
        (OPENED, OPENED),
        (OPENED + timedelta(microseconds=1), OPENED),
        (None, OPENED),
        (OPENED, None),
    ],
    ids=["same-moment", "after", "moment-not-known", "earlier-not-known"],
)
def test_the_same_moment_a_later_one_or_an_unknown_one_passes(
    moment: datetime | None, earlier: datetime | None
) -> None:
    require_not_before(moment, "case c-1 was opened", earlier)
