"""Ages from dates of birth: one rule for every service that decides on one (intake's
plausibility of a date of birth, coordination's eligibility)."""

from __future__ import annotations

from datetime import date


def age_on(birth: date, on: date) -> int:
    """Whole years completed on ``on``: a birthday counts from its day (29 February from
    1 March in other years)."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
