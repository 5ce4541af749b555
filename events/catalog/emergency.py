"""Break the glass: a time-boxed emergency access to a case, and its review by a supervisor.

An emergency access is recorded before anything is disclosed under it; the access policy lets
its grantee read the case for purpose ``emergency`` from ``opened_at`` until ``expires_at``
(or until it is closed, if earlier), and every read under it names its
``emergency_access_id``. Each one waits for a review.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field, model_validator

from events.catalog.base import CaseEvent, Identifier, Role, Sensitive

MAX_EMERGENCY_ACCESS = timedelta(hours=24)
"""The longest time box an emergency access may have."""

MAX_REASON_CHARS = 1000
MAX_REVIEW_NOTE_CHARS = 2000

EmergencyReason = Annotated[
    str,
    Sensitive,
    Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description="Why the glass was broken, in the grantee's words (may name the situation).",
    ),
]
ReviewNote = Annotated[str, Sensitive, Field(min_length=1, max_length=MAX_REVIEW_NOTE_CHARS)]


class EmergencyAccessOpened(CaseEvent):
    """Someone entitled to break the glass opened an emergency access to a case: for purpose
    ``emergency`` they may read it, whatever their relationship to it, until ``expires_at``."""

    event_type: ClassVar[str] = "casetrail.emergency_access.opened"

    case_id: Identifier
    emergency_access_id: Identifier
    grantee_id: Identifier = Field(description="Who may read under it: the token's subject.")
    grantee_role: Role
    grantee_agency_id: Identifier
    grantee_team: Identifier | None = None
    entitlement: Identifier = Field(
        description="The token's entitlement that allowed breaking the glass (break_glass)."
    )
    reason: EmergencyReason
    opened_at: AwareDatetime
    expires_at: AwareDatetime = Field(
        description="The end of the time box: at most 24 hours after opened_at."
    )

    @model_validator(mode="after")
    def _time_box(self) -> EmergencyAccessOpened:
        # The length compared, not opened_at + 24 h: a moment near 9999-12-31 overflows
        # datetime, and an OverflowError is no ValidationError to a decoder of untrusted data.
        if not timedelta(0) < self.expires_at - self.opened_at <= MAX_EMERGENCY_ACCESS:
            raise ValueError("expires_at must be after opened_at, by at most 24 hours")
        return self


class EmergencyAccessOutcome(StrEnum):
    """What the reviewer found."""

    JUSTIFIED = "justified"
    NOT_JUSTIFIED = "not_justified"
    """The access was not warranted: a matter for the agency's confidentiality officer."""
    ESCALATED = "escalated"
    """The reviewer could not decide alone and passed it on."""


class EmergencyAccessReviewed(CaseEvent):
    """A supervisor of the case's team, or an auditor, reviewed an emergency access."""

    event_type: ClassVar[str] = "casetrail.emergency_access.reviewed"

    case_id: Identifier
    emergency_access_id: Identifier
    reviewer_id: Identifier
    reviewer_role: Role
    outcome: EmergencyAccessOutcome
    note: ReviewNote | None = None


class EmergencyAccessClosed(CaseEvent):
    """An emergency access was closed before its time box ended: from ``closed_at`` nothing
    more is read under it. It still waits for its review."""

    event_type: ClassVar[str] = "casetrail.emergency_access.closed"

    case_id: Identifier
    emergency_access_id: Identifier
    closed_by_id: Identifier = Field(description="The grantee, or a supervisor or auditor.")
    closed_by_role: Role
    closed_at: AwareDatetime
