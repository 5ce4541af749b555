"""One agency budget line as its ``budget-<line>`` stream tells it: what is reserved, by whom."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import islice

from casetrail_platform.folded import Fold, Snapshots
from events.catalog.funding import BudgetReleased, BudgetReserved
from events.envelope import RecordedEvent


@dataclass(slots=True)
class Reservation:
    reservation_id: str
    case_id: str
    service_id: str | None
    reserved: int
    released: int = 0
    reserved_at: datetime | None = None
    """When it was made, as its command stated: a release of it cannot have happened before.
    ``None`` in a state folded before this was kept (snapshot schema 1, refolded)."""

    @property
    def remaining(self) -> int:
        return self.reserved - self.released


@dataclass(slots=True)
class BudgetLineState:
    version: int
    reservations: dict[str, Reservation]
    committed: int = 0
    """What the reservations still hold, kept as they are folded: a line's state is kept
    between commands (``BUDGET_LINE``), and summing tens of thousands of reservations on
    every command would make it grow with the line again."""
    reservations_total: int = 0
    """Reservations ever made on the line (a copy by ``newest`` holds only some of them)."""

    def newest(self, listed: int) -> BudgetLineState:
        """A copy for a reader to keep (the kept state changes with the next command), with
        the ``listed`` newest reservations only and the totals of all."""
        newest = list(islice(reversed(self.reservations.items()), listed))
        return BudgetLineState(
            self.version,
            {key: replace(value) for key, value in reversed(newest)},
            self.committed,
            self.reservations_total,
        )


def budget_state(history: Iterable[RecordedEvent]) -> BudgetLineState:
    return fold_budget(BudgetLineState(0, {}), history)


def fold_budget(state: BudgetLineState, history: Iterable[RecordedEvent]) -> BudgetLineState:
    """``state`` with ``history`` (the line's next events) folded in, in place."""
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
                    reserved_at=recorded.metadata.occurred_at,
                )
                state.committed += event.amount.amount_minor_units
                state.reservations_total += 1
            case BudgetReleased():
                state.reservations[event.reservation_id].released += event.amount.amount_minor_units
                state.committed -= event.amount.amount_minor_units
    return state


def _encode(state: BudgetLineState) -> bytes:
    reservations = [
        [r.reservation_id, r.case_id, r.service_id, r.reserved, r.released, _moment(r)]
        for r in state.reservations.values()
    ]
    whole = [state.version, state.committed, state.reservations_total, reservations]
    return json.dumps(whole, separators=(",", ":")).encode()


def _decode(data: bytes) -> BudgetLineState:
    version, committed, total, reservations = json.loads(data)
    # In the order they were made: ``newest`` lists the last ones.
    kept = {row[0]: _reservation(*row) for row in reservations}
    return BudgetLineState(version, kept, committed, total)


def _moment(reservation: Reservation) -> str | None:
    made = reservation.reserved_at
    return None if made is None else made.isoformat()


def _reservation(
    reservation_id: str,
    case_id: str,
    service_id: str | None,
    reserved: int,
    released: int,
    reserved_at: str | None,
) -> Reservation:
    made = None if reserved_at is None else datetime.fromisoformat(reserved_at)
    return Reservation(reservation_id, case_id, service_id, reserved, released, made)


BUDGET_LINE = Fold(
    "coordination.budget-line",
    lambda: BudgetLineState(0, {}),
    fold_budget,
    Snapshots(schema_version=2, encode=_encode, decode=_decode),
)
"""A budget line's state, kept folded between commands (``casetrail_platform.folded``): lines
grow all year with every reservation. Holds no sealed value (amounts, ids), so it is written to
snapshots too: change ``schema_version`` with any change to ``BudgetLineState``, ``Reservation``
or ``fold_budget`` (2: each reservation's ``reserved_at``)."""
