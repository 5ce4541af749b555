"""The all-worker views merged from each process's part (``services.caseload.parts``): counts
summed, the lists in the view's order, at most ``limit`` cases, ``truncated`` when more matched
in any part, and only parts read from every partition once make a view."""

from __future__ import annotations

from datetime import date

import pytest

from services.caseload.access import Refused
from services.caseload.domain import OverdueFollowUp
from services.caseload.parts import (
    CaseloadsPart,
    OverduePart,
    merged_caseloads,
    merged_overdue,
    require_whole,
)


def caseloads(partitions: set[int], unassigned: tuple[str, ...], truncated: bool) -> CaseloadsPart:
    workers = {f"w-{p}": p + 1 for p in partitions}
    return CaseloadsPart(
        partitions=frozenset(partitions),
        truncated=truncated,
        workers=workers,
        unassigned=unassigned,
    )


def test_the_lists_are_merged_in_order_and_truncated_when_any_part_held_more() -> None:
    # Read with limit 2: the first part held a third unassigned case it does not name.
    parts = [caseloads({0, 2}, ("u-3", "u-5"), True), caseloads({1}, (), False)]
    assert merged_caseloads(parts, 2) == ({"w-0": 1, "w-1": 2, "w-2": 3}, ("u-3", "u-5"), True)
    parts = [caseloads({0}, ("u-3", "u-5"), False), caseloads({1}, ("u-1",), False)]
    assert merged_caseloads(parts, 2) == ({"w-0": 1, "w-1": 2}, ("u-1", "u-3"), True)
    assert merged_caseloads(parts, 3) == ({"w-0": 1, "w-1": 2}, ("u-1", "u-3", "u-5"), False)

    def follow_up(day: int, case: str) -> OverdueFollowUp:
        return OverdueFollowUp(date(2030, 1, day), case, "w", 31 - day)

    today = date(2030, 1, 31)
    old, older = follow_up(5, "b"), follow_up(2, "c")
    overdue = [
        OverduePart(partitions=frozenset({0}), truncated=False, today=today, overdue=(old,)),
        OverduePart(partitions=frozenset({1}), truncated=False, today=today, overdue=(older,)),
    ]
    assert merged_overdue(overdue, 1) == ((older,), True)
    assert merged_overdue(overdue, 2) == ((older, old), False)
    assert overdue[0].pinned() == {"today": "2030-01-31"}  # the others count from that day


@pytest.mark.parametrize(
    ("read", "whole"),
    [
        ([{0, 1}, {2}], True),
        ([{0, 1, 2}, set()], True),  # a process holding none of them
        ([{0, 1}, {1, 2}], False),  # read under different assignments
        ([{0}, {2}], False),  # a partition nobody read
        ([{0, 1, 2, 3}], False),
    ],
)
def test_a_view_is_whole_only_when_its_parts_read_every_partition_once(
    read: list[set[int]], whole: bool
) -> None:
    parts = [caseloads(partitions, (), False) for partitions in read]
    if whole:
        require_whole(parts, 3)
        return
    with pytest.raises(Refused) as refused:
        require_whole(parts, 3)
    assert (refused.value.status, refused.value.code) == (503, "OWNER_UNAVAILABLE")
