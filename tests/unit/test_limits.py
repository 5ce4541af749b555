"""The bounds of every input are written once, in ``casetrail_platform.limits``."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import pytest

from casetrail_platform import limits
from services.console import pages

ROOT = Path(__file__).resolve().parents[2]
CODE = ("casetrail_platform", "events", "services", "cli", "bench")
BOUND_COPIES = re.compile(r"\b(1900-01-01|2199|2200)\b|\(1900, 1, 1\b")
"""The moments' bounds as a copy would spell them (in code, a message or a docstring)."""


def test_no_copy_of_the_moments_bounds_outside_limits() -> None:
    copies = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in CODE
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "casetrail_platform" / "limits.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BOUND_COPIES.search(line)
    ]
    assert copies == []


@pytest.mark.parametrize(
    ("moment", "within"),
    [
        (limits.EARLIEST_MOMENT - timedelta(microseconds=1), False),
        (limits.EARLIEST_MOMENT, True),
        (limits.LATEST_MOMENT - timedelta(microseconds=1), True),
        (limits.LATEST_MOMENT, False),
        (date(1899, 12, 31), False),
        (date(1900, 1, 1), True),
        (date(2199, 12, 31), True),
        (date(2200, 1, 1), False),
    ],
)
def test_a_moment_or_a_day_within_the_bounds(moment: date, within: bool) -> None:
    assert limits.within_moment_bounds(moment) is within


def test_the_console_takes_every_moment_the_services_take() -> None:
    # The console kept its own last moment (2199-12-31 23:59:59) and refused the last second's
    # fractions, which audit takes.
    last = limits.LATEST_MOMENT - timedelta(microseconds=1)
    assert pages.moment(last.isoformat(), "at") == last
    with pytest.raises(pages.BadInput) as refused:
        pages.moment(limits.LATEST_MOMENT.isoformat(), "at")
    assert refused.value.problems == {"at": limits.MOMENT_RANGE}
    assert limits.MOMENT_RANGE == "between 1900-01-01 and 2199-12-31"
