"""Break the glass: emergency accesses to a case, kept in the case's stream, and their review.

Who may open one is the access policy's decision
(``casetrail_platform.policy.decide_emergency_opening``); who may review one is decided here on the
policy's oversight rule: reading the case's trail (``team-supervisor`` for purpose supervision,
``auditor-review`` for confidentiality_review), and never the grantee themself. Who may close
one early: its grantee, or whoever may review it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from casetrail_platform.commands import (
    InvalidCommand,
    NotAllowed,
    NotFound,
    RuleBroken,
    require_not_before,
)
from casetrail_platform.identity.principal import Principal
from events.catalog.access import AccessPurpose
from events.catalog.base import CaseEvent, Role
from events.catalog.emergency import (
    MAX_EMERGENCY_ACCESS,
    EmergencyAccessClosed,
    EmergencyAccessOpened,
    EmergencyAccessReviewed,
)
from events.catalog.erasure import ClientErased
from events.envelope import RecordedEvent
from events.errors import FieldProblem
from services.intake.domain.cases import case_from
from services.intake.domain.erasure import require_not_erased

DEFAULT_EMERGENCY_ACCESS = timedelta(minutes=60)
SHORTEST_EMERGENCY_ACCESS = timedelta(seconds=1)
DEFAULT_REVIEW_WITHIN = timedelta(hours=72)
"""An emergency access not reviewed this long after it was opened is overdue."""

OVERSIGHT_PURPOSE = {
    Role.SUPERVISOR: AccessPurpose.SUPERVISION,
    Role.AUDITOR: AccessPurpose.CONFIDENTIALITY_REVIEW,
}
"""The reviewers' roles, and the purpose each states to see the queue (and reviews under)."""

GRANTEE_SUPERVISOR_RULE = "grantee-supervisor"
"""The rule that lets a supervisor oversee (list, review, close) an emergency access to a case no
team carries, when the grantee is a member of the supervisor's team: a case broken into before
anyone was assigned has no team supervisor, and its break-glass must still reach a supervisor."""
ALREADY_REVIEWED = "EMERGENCY_ACCESS_ALREADY_REVIEWED"
ALREADY_ENDED = "EMERGENCY_ACCESS_ENDED"
SELF_REVIEW_RULE = "self-review-not-allowed"
"""The rule a refused self-review is recorded under (its ErrorInfo reason, upper-cased)."""
SELF_REVIEW_REASON = "nobody reviews their own emergency access"


class SelfReview(NotAllowed):
    """The grantee asked to review their own emergency access."""

    reason = SELF_REVIEW_RULE.upper().replace("-", "_")


class NotTheGrantee(NotAllowed):
    """Someone who may not oversee the case asked to close an emergency access that is not
    theirs (or that does not exist: they learn nothing of it)."""


def is_grantee(opened: EmergencyAccessOpened, caller: Principal) -> bool:
    """Whether ``caller`` is who the access was opened for: its ``sub`` and its agency both, as
    the policy matches a grant (``EmergencyAccess.granted_to``). A token's ``sub`` names
    someone within its agency only: another agency's caller of the same ``sub`` is someone
    else."""
    return opened.grantee_id == caller.subject and opened.grantee_agency_id == caller.agency


def time_box(duration: timedelta | None) -> timedelta:
    """The access's length: the default when not given, else 1 second to 24 hours."""
    if duration is None:
        return DEFAULT_EMERGENCY_ACCESS
    if not SHORTEST_EMERGENCY_ACCESS <= duration <= MAX_EMERGENCY_ACCESS:
        raise InvalidCommand([FieldProblem("duration", "must be from 1 second to 24 hours")])
    return duration


def reviewer_refusal(role: Role, purpose: AccessPurpose | None = None) -> str | None:
    """The policy refusal (``casetrail_platform.policy.matrix.REFUSALS``) for a caller in ``role``
    who would see or review emergency accesses, stating ``purpose`` (``None``: a review, which
    states none); ``None`` when the role and purpose are a reviewer's. Which cases they oversee is
    the policy's decision per case."""
    oversight = OVERSIGHT_PURPOSE.get(role)
    if oversight is None:
        return "role-not-allowed"
    if purpose is not None and purpose is not oversight:
        return "purpose-not-permitted"
    return None


def supervises_grantee(
    supervisor: Principal,
    *,
    home_agency: str,
    case_team: str | None,
    grantee_id: str,
    grantee_agency_id: str,
    grantee_team: str | None,
) -> bool:
    """Whether ``supervisor`` oversees an emergency access by the grantee's team
    (``GRANTEE_SUPERVISOR_RULE``): only while no team carries the case (``case_team``), since
    a team that does has its own supervisors; never the grantee themself."""
    return (
        case_team is None
        and supervisor.role is Role.SUPERVISOR
        and supervisor.team is not None
        and supervisor.team == grantee_team
        and supervisor.agency == home_agency == grantee_agency_id
        and supervisor.subject != grantee_id
    )


def opened_access(history: Sequence[RecordedEvent], access_id: str) -> EmergencyAccessOpened | None:
    """The opening of emergency access ``access_id`` in the case's history, if any."""
    return _opened(history, access_id)


def decide_opening(
    history: Sequence[RecordedEvent],
    opened: EmergencyAccessOpened,
    erased: ClientErased | None,
    *,
    occurred_at: datetime | None,
    closures: Sequence[datetime],
) -> list[CaseEvent]:
    """``erased``: the case's client's erasure, if they were erased: nothing is left to read.
    ``occurred_at``: when it happened (as the command states it, else now), as for the others;
    ``closures``: the case's (``CaseRecord.require_after_reopened_closure``)."""
    case = case_from(history)
    if case is None:
        raise NotFound("case", opened.case_id)
    require_not_erased(erased)
    case.require_in_order(occurred_at)
    case.require_after_reopened_closure(occurred_at, closures)
    return [opened]


def decide_review(
    history: Sequence[RecordedEvent],
    review: EmergencyAccessReviewed,
    *,
    occurred_at: datetime | None,
    closures: Sequence[datetime],
) -> list[CaseEvent]:
    case = case_from(history)
    if case is None:
        raise NotFound("case", review.case_id)
    case.require_in_order(occurred_at)
    case.require_after_reopened_closure(occurred_at, closures)
    access_id = review.emergency_access_id
    opened = _opened(history, access_id)
    if opened is None:
        raise NotFound("emergency access", access_id)
    _require_after_opening(history, access_id, occurred_at)
    # ``sub`` alone, unlike ``is_grantee``: only the agency's staff oversee, so none of another
    # agency gets here, and taking a namesake for the grantee refuses a review, never allows one.
    if opened.grantee_id == review.reviewer_id:
        raise SelfReview(
            review.reviewer_role.value, "review an emergency access", SELF_REVIEW_REASON
        )
    if _any(history, EmergencyAccessReviewed, access_id):
        raise RuleBroken(
            ALREADY_REVIEWED,
            f"emergency access {access_id} was already reviewed",
            subject=f"emergency-access/{access_id}",
        )
    return [review]


def decide_close(
    history: Sequence[RecordedEvent],
    closing: EmergencyAccessClosed,
    *,
    closer: Principal,
    may_oversee: bool,
    occurred_at: datetime | None,
    closures: Sequence[datetime],
) -> list[CaseEvent]:
    """Close the access early: ``closer`` is its grantee (``is_grantee``) or ``may_oversee`` the
    case (the policy's oversight decision); only while it is still open."""
    access_id = closing.emergency_access_id
    opened = _opened(history, access_id)
    if not may_oversee and (opened is None or not is_grantee(opened, closer)):
        raise NotTheGrantee(closing.closed_by_role.value, "close an emergency access")
    case = case_from(history)
    if case is None:
        raise NotFound("case", closing.case_id)
    case.require_in_order(occurred_at)
    case.require_after_reopened_closure(occurred_at, closures)
    if opened is None:
        raise NotFound("emergency access", access_id)
    _require_after_opening(history, access_id, occurred_at)
    if opened.expires_at <= closing.closed_at or _any(history, EmergencyAccessClosed, access_id):
        raise RuleBroken(
            ALREADY_ENDED,
            f"emergency access {access_id} has already ended",
            subject=f"emergency-access/{access_id}",
        )
    return [closing]


def _opened(history: Sequence[RecordedEvent], access_id: str) -> EmergencyAccessOpened | None:
    return next(
        (
            r.event
            for r in history
            if isinstance(r.event, EmergencyAccessOpened)
            and r.event.emergency_access_id == access_id
        ),
        None,
    )


def _require_after_opening(
    history: Sequence[RecordedEvent], access_id: str, occurred_at: datetime | None
) -> None:
    """A review or a closing is not stated as happening before the access was opened (as its
    opening stated): audit's state as it happened would show the access reviewed, or ended,
    before it began."""
    opened_at = next(
        r.metadata.occurred_at
        for r in history
        if isinstance(r.event, EmergencyAccessOpened) and r.event.emergency_access_id == access_id
    )
    require_not_before(occurred_at, f"emergency access {access_id} was opened", opened_at)


def _any(
    history: Sequence[RecordedEvent],
    kind: type[EmergencyAccessReviewed | EmergencyAccessClosed],
    access_id: str,
) -> bool:
    return any(
        isinstance(r.event, kind) and r.event.emergency_access_id == access_id for r in history
    )
