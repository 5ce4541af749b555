"""A budget line's snapshot (``BUDGET_LINE.snapshots``) gives back the state it was made of:
every reservation in the order made (``newest`` lists the last) and when it was made (a release
is not dated before it), the totals kept as folded."""

from __future__ import annotations

from datetime import UTC, datetime

from services.coordination.domain.budget import BUDGET_LINE, BudgetLineState, Reservation


def test_a_budget_line_state_comes_back_from_its_snapshot_as_it_was() -> None:
    snapshots = BUDGET_LINE.snapshots
    assert snapshots is not None
    state = BudgetLineState(
        9,
        {
            "r-2": Reservation(
                "r-2", "case-1", "service-1", 50_000, 20_000, datetime(2026, 3, 2, 9, tzinfo=UTC)
            ),
            "r-1": Reservation("r-1", "case-2", None, 30_000),
        },
        committed=60_000,
        reservations_total=2,
    )

    again = snapshots.decode(snapshots.encode(state))

    assert again == state
    assert list(again.newest(1).reservations) == ["r-1"]
