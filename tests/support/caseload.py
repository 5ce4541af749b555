"""The caseload app of a unit test, as Faust leaves it once a rebalance's tables are recovered."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.caseload.processor import CaseloadApp


def recovered(app: CaseloadApp) -> None:
    """Tells ``app`` what Faust tells it in a rebalance whose tables it restored (its start,
    the assignment, the end): it is ready, and the views answer from the tables."""
    app.readiness.rebalance_started()
    app.readiness.assigned()
    app.readiness.recovered()
