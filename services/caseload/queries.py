"""Reading the caseload tables: caseloads, overdue follow-ups, contacts per day.

Each answer covers the table partitions this process holds. With one worker process that is
all of them; with several, the web views route per-worker questions to the owner (see
``routing``) and gather the all-worker lists from every process's part (see ``gathering``).
The ``held-cases`` table keeps one record per case held (``domain.held_key``): a worker's
caseload is the records under its name, found by reading the keys of the partitions held here
(the whole table, in memory).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from services.caseload.domain import (
    UNASSIGNED,
    CaseState,
    OverdueFollowUp,
    contacts_counted,
    held_by,
    held_key,
    overdue_of,
)
from services.caseload.processor import CaseloadApp


@dataclass(frozen=True, slots=True)
class Caseload:
    worker_id: str
    case_ids: tuple[str, ...]

    @property
    def open_cases(self) -> int:
        return len(self.case_ids)

    def to_json(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "open_cases": self.open_cases,
            "case_ids": list(self.case_ids),
        }


def caseload(app: CaseloadApp, worker_id: str) -> Caseload:
    """The open cases ``worker_id`` holds (``UNASSIGNED``: open cases without a worker)."""
    mine = held_key(worker_id, "")
    held = (key.removeprefix(mine) for key in app.held_cases if key.startswith(mine))
    return Caseload(worker_id, tuple(sorted(held)))


def caseloads(app: CaseloadApp) -> dict[str, int]:
    """Open cases per worker, without the unassigned ones."""
    held = Counter(held_by(key)[0] for key in app.held_cases)
    return {worker: count for worker, count in sorted(held.items()) if worker != UNASSIGNED}


def unassigned(app: CaseloadApp) -> tuple[str, ...]:
    """Open cases that no worker holds."""
    return caseload(app, UNASSIGNED).case_ids


def overdue(app: CaseloadApp, today: date, worker_id: str | None = None) -> list[OverdueFollowUp]:
    """Open cases whose next follow-up was due before ``today`` and has had no newer contact,
    oldest due date first; of one worker if ``worker_id`` is given."""
    held: Iterable[tuple[str, Any]] = app.held_cases.items()
    if worker_id is not None:
        mine = held_key(worker_id, "")
        held = ((key, entry) for key, entry in held if key.startswith(mine))
    return overdue_of(held, today)


def contacts_per_day(app: CaseloadApp, worker_id: str, days: Iterable[date]) -> dict[date, int]:
    """Contacts ``worker_id`` logged on each of ``days`` (UTC days, by when they happened).
    Days older than the window's expiry read as 0."""
    table = app.contacts.table
    window = table.window
    counts: dict[date, int] = {}
    for day in days:
        moment = datetime.combine(day, time(12), tzinfo=UTC).timestamp()
        counts[day] = contacts_counted(table.get((worker_id, window.current(moment))))
    return counts


def case_state(app: CaseloadApp, case_id: str) -> CaseState | None:
    stored = app.cases.get(case_id)
    return None if stored is None else CaseState.from_json(stored)
