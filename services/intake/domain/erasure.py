"""Erasing a client (GDPR Art. 17) and the retention holds that forbid it, decided on the
client's stream.

An erasure is decided once: a client already erased is not erased again (the command then
records nothing and only completes the key destruction, which is idempotent). While a
retention hold applies (not released, and its ``until`` not past), erasure is refused naming
the hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from casetrail_platform.commands import InvalidCommand, NotFound, RuleBroken, require_not_before
from events.catalog.base import CaseEvent
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered
from events.catalog.erasure import ClientErased, RetentionHoldPlaced, RetentionHoldReleased
from events.envelope import RecordedEvent
from events.errors import FieldProblem

RETENTION_HOLD = "RETENTION_HOLD"
CLIENT_ERASED = "CLIENT_ERASED"
"""Also the rule the key ring's ``ClientErasedError.RULE`` is answered with (the platform's
backstop, when a command reaches sealing for a client erased after it was decided)."""
HOLD_ALREADY_RELEASED = "RETENTION_HOLD_ALREADY_RELEASED"


@dataclass(slots=True)
class ClientRecord:
    registered_at: datetime | None = None
    """When the client was registered (as its command stated it); None: no client."""
    holds: dict[str, RetentionHoldPlaced] = field(default_factory=dict)
    """Holds in force, by id, in the order they were placed."""
    placed_at: dict[str, datetime] = field(default_factory=dict)
    """When each hold in force was placed, by id."""
    released: set[str] = field(default_factory=set)
    erased: ClientErased | None = None
    last_change: str = ""
    """What ``changed_at`` is the moment of, in words: the latest change of the record."""
    changed_at: datetime | None = None
    """The latest moment the record's events state (registration, corrections, holds)."""

    def changed(self, what: str, at: datetime) -> None:
        if self.changed_at is None or at >= self.changed_at:
            self.last_change, self.changed_at = what, at


def client_record(history: Sequence[RecordedEvent]) -> ClientRecord:
    record = ClientRecord()
    for recorded in history:
        event = recorded.event
        if isinstance(event, ClientErased):
            record.erased = event
            continue
        at = recorded.metadata.occurred_at
        if isinstance(event, ClientRegistered):
            record.registered_at = at
            record.changed(f"client {event.client_id} was registered", at)
        elif isinstance(event, ClientDateOfBirthCorrected):
            record.changed(f"the date of birth of client {event.client_id} was corrected", at)
        elif isinstance(event, RetentionHoldPlaced):
            record.holds[event.hold_id] = event
            record.placed_at[event.hold_id] = at
            record.changed(f"retention hold {event.hold_id} was placed", at)
        elif isinstance(event, RetentionHoldReleased):
            record.holds.pop(event.hold_id, None)
            record.placed_at.pop(event.hold_id, None)
            record.released.add(event.hold_id)
            record.changed(f"retention hold {event.hold_id} was released", at)
    return record


def require_not_erased(erased: ClientErased | None) -> None:
    """Nothing new is recorded about an erased client: their keys are destroyed, so nothing
    could be sealed for them, and recording (a case, an assessment, a consent to disclose,
    an emergency access) would act on a person the agency has forgotten."""
    if erased is not None:
        raise RuleBroken(
            CLIENT_ERASED,
            f"client {erased.client_id} was erased; nothing more is recorded about them",
            subject=f"client/{erased.client_id}",
        )


def decide_hold(
    history: Sequence[RecordedEvent], hold: RetentionHoldPlaced, *, occurred_at: datetime | None
) -> list[CaseEvent]:
    """``occurred_at``: when the hold was placed (as the command states it, else now), not
    before the client was registered."""
    record = _registered(history, hold.client_id)
    require_not_erased(record.erased)
    if hold.hold_id in record.holds:
        return []
    require_not_before(occurred_at, f"client {hold.client_id} was registered", record.registered_at)
    return [hold]


def decide_release(
    history: Sequence[RecordedEvent],
    client_id: str,
    hold_id: str,
    reason: str | None,
    *,
    occurred_at: datetime | None,
) -> list[CaseEvent]:
    """``occurred_at``: when the hold was released (as the command states it, else now), not
    before it was placed: audit's client record as it happened would show it still in force."""
    record = _registered(history, client_id)
    # A hold whose ``until`` had passed let the erasure through unreleased: releasing it now
    # would record more about a person the agency has forgotten.
    require_not_erased(record.erased)
    if hold_id in record.released:
        raise RuleBroken(
            HOLD_ALREADY_RELEASED,
            f"retention hold {hold_id} was already released",
            subject=f"retention-hold/{hold_id}",
        )
    if hold_id not in record.holds:
        raise NotFound("retention hold", hold_id)
    require_not_before(
        occurred_at, f"retention hold {hold_id} was placed", record.placed_at[hold_id]
    )
    return [RetentionHoldReleased(client_id=client_id, hold_id=hold_id, reason=reason)]


def check_hold_until(until: date | None, today: date | None) -> None:
    """A hold whose obligation already ended would hold nothing (erasure ignores it).
    ``today``: ``None`` for the retry of a hold placed before, whose day may since have passed
    (``read_timely_command``)."""
    if until is not None and today is not None and until < today:
        raise InvalidCommand(
            [
                FieldProblem(
                    "until",
                    f"must be today ({today.isoformat()}) or later: the day the obligation ends",
                )
            ]
        )


def holds_in_force(record: ClientRecord, today: date) -> list[RetentionHoldPlaced]:
    """The holds not released whose ``until``, when given, is not past: the obligation ends on
    that day (catalog: "it is released then"), so erasure may go ahead the day after, whether
    or not someone remembered to release the hold."""
    return [hold for hold in record.holds.values() if hold.until is None or hold.until >= today]


def decide_erasure(
    history: Sequence[RecordedEvent],
    erasure: ClientErased,
    today: date,
    *,
    occurred_at: datetime | None,
    cases_worked: tuple[str, datetime] | None = None,
) -> list[CaseEvent]:
    """``today``: the server's day (never the caller's stated moment, which may be backdated),
    which the holds' ends are checked on. ``cases_worked``: the latest moment of intake's events
    of the client's cases, in words and time; the erasure ends them too, so it is not dated
    before it either (audit's state as it happened showed a case opened and assessed for a
    client already erased, which intake refuses). ``occurred_at``: when the erasure happened (as the
    command states it, else now), not before the latest change of the client's record: it
    ends the record, and audit's client record as it happened would show the client erased
    while still being corrected or held."""
    record = _registered(history, erasure.client_id)
    if record.erased is not None:
        return []
    for hold in holds_in_force(record, today):
        # Named by its id and end, never its legal basis: the basis is sealed personal data
        # (a lawsuit the client is part of), and error messages reach logs and callers.
        until = "until it is released" if hold.until is None else f"until {hold.until.isoformat()}"
        raise RuleBroken(
            RETENTION_HOLD,
            f"retention hold {hold.hold_id} forbids erasing client {erasure.client_id} {until}",
            subject=f"retention-hold/{hold.hold_id}",
            hold_id=hold.hold_id,
            until="" if hold.until is None else hold.until.isoformat(),
        )
    require_not_before(occurred_at, record.last_change, record.changed_at)
    if cases_worked is not None:
        require_not_before(occurred_at, *cases_worked)
    return [erasure]


def _registered(history: Sequence[RecordedEvent], client_id: str) -> ClientRecord:
    record = client_record(history)
    if record.registered_at is None:
        raise NotFound("client", client_id)
    return record
