"""What coordination knows of a case from intake (via the bus): whose it is and what they need."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from casetrail_platform.commands import COMMAND_MOMENT, require_not_before
from events.catalog.values import NeedCategory
from services.coordination.domain import errors


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    """A time the case was closed, from its closure until its reopening."""

    closed_at: datetime
    reopened_at: datetime

    def holds(self, moment: datetime) -> bool:
        return self.closed_at <= moment < self.reopened_at


@dataclass(frozen=True, slots=True)
class CaseFacts:
    case_id: str
    client_id: str
    needs: tuple[NeedCategory, ...]
    """Presenting and assessed needs, each once, in the order they were first recorded."""
    closed: bool = False
    opened_at: datetime | None = None
    """When intake says the case was opened; no command on it can have happened before.
    ``None`` for facts projected before this was kept."""
    closed_at: datetime | None = None
    """When the case was last closed, while it is closed: the line between wrap-up of what
    happened before the closure and new work, which is refused (README, "Closure")."""
    last_closed_at: datetime | None = None
    """When the case was last closed, whether it is closed or was reopened since: a reopened
    case's work follows it. ``None`` for a case never closed."""
    closed_periods: tuple[ClosedPeriod, ...] = ()
    """The times the case was closed and then reopened, in order (the closure it is in now, if
    closed, is ``closed_at``)."""

    @property
    def last_reopened_at(self) -> datetime | None:
        """When the case was last reopened (``None``: never): a reopened case's work follows
        it."""
        return self.closed_periods[-1].reopened_at if self.closed_periods else None


def check_occurred_at(facts: CaseFacts, occurred_at: datetime | None) -> None:
    """``occurred_at``: the command's moment (``CommandContext.moment``: stated, else now;
    ``None``: not known, not checked). A command on the case cannot have happened before the
    case was opened: a backdated moment would otherwise let rules checked on it (a licence then
    still valid) pass. A command starting new work is also checked against the case's closures
    (``check_new_work``); the wrap-up of what happened before a closure (README, "Closure") is
    checked only against what it follows (a claim's filing, a reservation, a referral's last
    event...), so it is dated when it happened, entered while the case is closed or after it
    was reopened alike."""
    if occurred_at is not None:
        check_not_before_opening(facts, occurred_at, COMMAND_MOMENT)


def check_new_work(facts: CaseFacts, occurred_at: datetime | None) -> None:
    """The check of every command starting new work on the case, and the one place that says
    which commands do (README, "Closure"): refused ``CASE_CLOSED`` while the case is closed,
    and on a reopened case not dated (``occurred_at``, as ``check_occurred_at``) before its
    last closure or its last reopening, as planning refuses: between the two it would be work
    done on the closed case, which this refuses, and audit's state as it happened would show
    it so."""
    if facts.closed:
        raise errors.case_closed(facts.case_id)
    case_id = facts.case_id
    require_not_before(occurred_at, f"case {case_id} was last closed", facts.last_closed_at)
    require_not_before(occurred_at, f"case {case_id} was last reopened", facts.last_reopened_at)


def check_not_before_opening(facts: CaseFacts, moment: datetime, field: str) -> None:
    """``moment`` (given as ``field``) is not before the case's opening. A service's start too:
    backdated, it would be care the case never gave, yet delivered and claimed from an insurer."""
    require_not_before(moment, f"case {facts.case_id} was opened", facts.opened_at, field)


def check_not_while_closed(facts: CaseFacts, moment: datetime) -> None:
    """``moment`` (a service's start) is in no time the case was closed and then reopened:
    care booked, moved or delivered there would be care the case never gave, as before its
    opening (``check_not_before_opening``), yet delivered and claimed from an insurer. The
    closure the case is in now is each command's own check (``CASE_CLOSED``)."""
    for period in facts.closed_periods:
        if period.holds(moment):
            raise errors.case_closed(facts.case_id, period.closed_at, period.reopened_at)


def check_given_while_open(facts: CaseFacts, starts_at: datetime) -> None:
    """Care starting at ``starts_at`` (a delivery, or a claim for one) was given while the case
    was open: not at or after the closure it is in now (a visit made before it may still be
    written up), nor in a time it was closed before a reopening (``check_not_while_closed``)."""
    if facts.closed_at is not None and starts_at >= facts.closed_at:
        raise errors.case_closed(facts.case_id, after=facts.closed_at)
    check_not_while_closed(facts, starts_at)


def case_stream(case_id: str) -> str:
    return f"case-{case_id}"


def schedule_stream(client_id: str) -> str:
    """All of a client's services, across their cases, are one stream: the overlap rule spans
    them, and one stream makes the check exact under concurrent schedulers."""
    return f"schedule-{client_id}"


def budget_stream(budget_line: str) -> str:
    """All reservations on a budget line are one stream, so the line is never overspent."""
    return f"budget-{budget_line}"
