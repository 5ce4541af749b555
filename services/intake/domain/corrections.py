"""Correcting the client's recorded date of birth (rectification, GDPR Art. 16), decided on
the client's stream.

A wrong date of birth decides ages (coordination's eligibility refuses an age that contradicts
it) and duplicate detection, so it must be correctable; the registration is never rewritten:
the correction is a new event, and the record reads the corrected date from it on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from casetrail_platform.ages import age_on
from casetrail_platform.commands import InvalidCommand, NotFound, RuleBroken
from events.catalog.base import CaseEvent
from events.catalog.clients import ClientDateOfBirthCorrected
from events.envelope import RecordedEvent
from events.errors import FieldProblem
from services.intake.domain.clients import client_from
from services.intake.domain.erasure import client_record, require_not_erased

CLIENT_CASES_CLOSED = "CLIENT_CASES_CLOSED"
OLDEST_AGE = 150
"""The oldest age a date of birth may give (coordination's eligibility decisions hold ages up
to this one): an older date is a typing error, not a client."""


def check_corrected_date_of_birth(date_of_birth: date | None, today: date) -> None:
    """Refuse a date no one could be born on: missing, after ``today`` (the agency's date) or
    giving an age over ``OLDEST_AGE``. The value itself is never repeated (personal data)."""
    if date_of_birth is None:
        raise InvalidCommand([FieldProblem("date_of_birth", "required")])
    if date_of_birth > today:
        raise InvalidCommand([FieldProblem("date_of_birth", "must not be in the future")])
    if age_on(date_of_birth, today) > OLDEST_AGE:
        raise InvalidCommand(
            [FieldProblem("date_of_birth", f"gives an age over {OLDEST_AGE}: not a plausible one")]
        )


def decide_correction(
    history: Sequence[RecordedEvent],
    correction: ClientDateOfBirthCorrected,
    cases_closed: bool,
    *,
    occurred_at: datetime | None,
) -> list[CaseEvent]:
    """``cases_closed``: the client has cases and every one of them is closed.
    ``occurred_at``: when the correction was made (as the command states it, else now), not
    before the registration nor the latest correction (``ClientRecord.require_in_order``)."""
    client = client_from(history)
    if client is None:
        raise NotFound("client", correction.client_id)
    require_not_erased(client_record(history).erased)
    client.require_in_order(occurred_at)
    if cases_closed:
        raise RuleBroken(
            CLIENT_CASES_CLOSED,
            f"every case of client {correction.client_id} is closed: reopen one (ReopenCase)"
            " to correct the client's record",
            subject=f"client/{correction.client_id}",
        )
    if client.registration.date_of_birth == correction.date_of_birth:
        raise InvalidCommand(
            [
                FieldProblem(
                    "date_of_birth",
                    "is already the client's recorded date of birth: there is nothing to correct",
                )
            ]
        )
    return [correction]
