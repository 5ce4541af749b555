"""One agency budget line as its ``budget-<line>`` stream tells it: what is reserved, by whom."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from events.catalog.funding import BudgetReleased, BudgetReserved
from events.envelope import RecordedEvent


@dataclass(slots=True)
class Reservation:
    reservation_id: str
    case_id: str
    service_id: str | None
    reserved: int
    released: int = 0

    @property
    def remaining(self) -> int:
        return self.reserved - self.released


@dataclass(slots=True)
class BudgetLineState:
    version: int
    reservations: dict[str, Reservation]

    @property
    def committed(self) -> int:
        return sum(reservation.remaining for reservation in self.reservations.values())


def budget_state(history: Iterable[RecordedEvent]) -> BudgetLineState:
    state = BudgetLineState(0, {})
    for recorded in history:
        state.version = recorded.sequence
        event = recorded.event
        match event:
            case BudgetReserved():
                state.reservations[event.reservation_id] = Reservation(
                    event.reservation_id,
                    event.case_id,
                    event.service_id,
                    event.amount.amount_minor_units,
                )
            case BudgetReleased():
                state.reservations[event.reservation_id].released += event.amount.amount_minor_units
    return state
