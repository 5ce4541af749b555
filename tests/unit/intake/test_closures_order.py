"""Intake's closures learnt from the bus under out-of-order delivery: a closure set aside
(dead-lettered, parked) and delivered after a later one is listed in the order of planning's
stream, as an in-order delivery (a rebuild) lists them."""

from __future__ import annotations

from casetrail_platform.projections.runner import BusProjectionHandler
from events.catalog.cases import CaseClosed, DischargeReason
from services.intake.adapters.case_closures import ClosureLog
from tests.unit.intake.support import recorded


async def test_a_closure_delivered_after_a_later_one_is_listed_first(
    closures: ClosureLog, from_bus: BusProjectionHandler
) -> None:
    first, second = (
        recorded(
            CaseClosed(case_id="case-1", reason=reason),
            "case-case-1",
            sequence,
            source="casetrail/planning",
        )
        for sequence, reason in (
            (2, DischargeReason.CLIENT_MOVED),
            (5, DischargeReason.GOALS_ACHIEVED),
        )
    )
    await from_bus(second)
    await from_bus(first)  # dead-lettered, replayed after the later closure

    listed = [closure.reason for closure in await closures.closures("case-1")]
    assert listed == ["client_moved", "goals_achieved"]
