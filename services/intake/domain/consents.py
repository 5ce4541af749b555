"""The client's consents to disclosure, kept in the case's stream (42 CFR Part 2 / GDPR).

A consent must name a recipient, a purpose, what may be disclosed and an expiry in the future;
a revocation must name a consent of the case that is still in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from casetrail_platform.commands import InvalidCommand, NotFound, RuleBroken, require_not_before
from events.catalog.access import ConsentGranted, ConsentRevoked
from events.catalog.base import CaseEvent
from events.catalog.erasure import ClientErased
from events.envelope import RecordedEvent
from events.errors import FieldProblem
from services.intake.domain.cases import CaseRecord, case_from
from services.intake.domain.erasure import require_not_erased

CONSENT_ALREADY_REVOKED = "CONSENT_ALREADY_REVOKED"
CONSENT_EXPIRED = "CONSENT_EXPIRED"


def check_consent(consent: ConsentGranted, now: datetime | None) -> None:
    """Part 2 asks for an expiry: a consent without one, or already expired, is refused.
    ``now``: ``None`` for the retry of a consent recorded before, which the clock may since
    have passed (``read_timely_command``)."""
    problems = []
    if consent.expires_at is None:
        problems.append(FieldProblem("expires_at", "required: when the consent ends"))
    elif now is not None and consent.expires_at <= now:
        problems.append(FieldProblem("expires_at", "must be in the future"))
    if consent.document_reference is None:
        problems.append(
            FieldProblem("document_reference", "required: where the signed consent is kept")
        )
    if problems:
        raise InvalidCommand(problems)


def decide_consent(
    history: Sequence[RecordedEvent],
    consent: ConsentGranted,
    erased: ClientErased | None,
    *,
    occurred_at: datetime | None,
    closures: Sequence[datetime],
) -> list[CaseEvent]:
    """``erased``: the client's erasure, if they were erased: nothing is disclosed of them.
    ``occurred_at``: when the consent was given (as the command states it, else now);
    ``closures``: the case's (``CaseRecord.require_after_reopened_closure``)."""
    case = _require_case(history, consent.case_id)
    require_not_erased(erased)
    case.require_in_order(occurred_at)
    case.require_after_reopened_closure(occurred_at, closures)
    return [consent]


def decide_revocation(
    history: Sequence[RecordedEvent],
    case_id: str,
    consent_id: str,
    reason: str | None,
    *,
    occurred_at: datetime | None,
    closures: Sequence[datetime],
) -> list[CaseEvent]:
    """``occurred_at``: when the consent was withdrawn (as the command states it, else now),
    not before it was given: audit's state as it happened would show it still in force; nor
    from its expiry on: it disclosed nothing more by then, and a revocation recorded would tell
    the client and audit that their withdrawal ended it.
    ``closures``: the case's (``CaseRecord.require_after_reopened_closure``)."""
    case = _require_case(history, case_id)
    case.require_in_order(occurred_at)
    case.require_after_reopened_closure(occurred_at, closures)
    granted = {
        r.event.consent_id: (r.event, r.metadata.occurred_at)
        for r in history
        if isinstance(r.event, ConsentGranted)
    }
    revoked = {r.event.consent_id for r in history if isinstance(r.event, ConsentRevoked)}
    if consent_id not in granted:
        raise NotFound("consent", consent_id)
    consent, granted_at = granted[consent_id]
    require_not_before(occurred_at, f"consent {consent_id} was granted", granted_at)
    if consent_id in revoked:
        raise RuleBroken(
            CONSENT_ALREADY_REVOKED,
            f"consent {consent_id} was already revoked",
            subject=f"consent/{consent_id}",
        )
    _require_not_expired(consent, occurred_at)
    return [
        ConsentRevoked(
            case_id=case_id,
            client_id=case.opened.client_id,
            consent_id=consent_id,
            reason=reason,
        )
    ]


def _require_not_expired(consent: ConsentGranted, occurred_at: datetime | None) -> None:
    """A consent is revoked while it is in force (``Consent.in_force``: until its expiry); a
    consent kept before expiries were required never expires."""
    expires_at = consent.expires_at
    if expires_at is not None and occurred_at is not None and occurred_at >= expires_at:
        raise RuleBroken(
            CONSENT_EXPIRED,
            f"consent {consent.consent_id} expired at {expires_at.isoformat()}: it was no"
            f" longer in force at the revocation's moment ({occurred_at.isoformat()})",
            subject=f"consent/{consent.consent_id}",
            expires_at=expires_at.isoformat(),
        )


def _require_case(history: Sequence[RecordedEvent], case_id: str) -> CaseRecord:
    case = case_from(history)
    if case is None:
        raise NotFound("case", case_id)
    return case
