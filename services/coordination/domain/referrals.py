"""Referrals (orientation) to outside agencies and professionals: made, then answered by the
provider they were made to, or withdrawn by the agency (or by the case's closure) while they
still run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime

from casetrail_platform.commands import NotFound, RuleBroken, require_not_before
from casetrail_platform.policy.vocabulary import Decision
from events.catalog.assignment import COUNSELING_NEEDS
from events.catalog.base import CaseEvent
from events.catalog.referrals import (
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralMade,
    ReferralWithdrawn,
)
from events.envelope import Actor
from services.coordination.domain import errors
from services.coordination.domain.agency import Agency
from services.coordination.domain.assignment import counseling_licence, counseling_shown
from services.coordination.domain.case import (
    RUNNING_REFERRAL_STATUSES,
    CaseState,
    Referral,
    ReferralStatus,
)
from services.coordination.domain.commands import (
    AcceptReferral,
    CompleteReferral,
    DeclineReferral,
    MakeReferral,
    WithdrawReferral,
)
from services.coordination.domain.facts import CaseFacts, check_new_work
from services.coordination.domain.permissions import (
    Action,
    require_case_worker,
    require_own_provider,
)
from services.coordination.domain.scheduling import CLOSURE_REASON


def decide_referral(
    facts: CaseFacts,
    command: MakeReferral,
    referral_id: str,
    disclosure: Decision,
    occurred_at: datetime | None = None,
) -> list[CaseEvent]:
    """``disclosure``: the access policy's decision on disclosing the case to the provider.
    ``occurred_at``: the command's moment (stated, else now), checked as new work's
    (``check_new_work``)."""
    check_new_work(facts, occurred_at)
    if not disclosure.allowed:
        raise errors.consent_required(
            facts.case_id, command.provider.provider_id, disclosure.reason
        )
    return [
        ReferralMade(
            case_id=facts.case_id,
            referral_id=referral_id,
            provider=command.provider,
            need_category=command.need_category,
            service=command.service,
            urgency=command.urgency,
            reason=command.reason,
            disclosure_basis=command.disclosure_basis,
            # A disclosure rests on one consent at most (decide_disclosure).
            consent_id=next(iter(disclosure.consent_ids), None),
        )
    ]


def decide_answer(
    state: CaseState,
    facts: CaseFacts,
    command: AcceptReferral | DeclineReferral | CompleteReferral,
    acting_for: str | None,
    occurred_at: datetime | None = None,
) -> list[CaseEvent]:
    """On a closed case a provider may still decline (it takes nothing on) or report the
    outcome of work it had accepted before the closure; accepting is refused, since it is what
    lets the provider read the case (README, "Closure"). ``acting_for``: the partner agency of
    the verified caller, which must be the referral's provider. ``occurred_at``: the command's
    moment (stated, else now), not before the referral's last event (an acceptance's also
    checked as new work's, ``check_new_work``)."""
    referral = _answerable(state, command, acting_for)
    answer = _answer(referral, facts, command, occurred_at)
    require_not_before(occurred_at, referral.last_change, referral.changed_at)
    return answer


def _answer(
    referral: Referral,
    facts: CaseFacts,
    command: AcceptReferral | DeclineReferral | CompleteReferral,
    occurred_at: datetime | None,
) -> list[CaseEvent]:
    match command:
        case AcceptReferral():
            check_new_work(facts, occurred_at)
            _require_status(referral, ReferralStatus.PENDING, errors.REFERRAL_NOT_PENDING)
            return [
                ReferralAccepted(
                    case_id=command.case_id,
                    referral_id=referral.referral_id,
                    provider_id=command.provider_id,
                    expected_start_date=command.expected_start_date,
                    contact_person=command.contact_person,
                )
            ]
        case DeclineReferral():
            _require_status(referral, ReferralStatus.PENDING, errors.REFERRAL_NOT_PENDING)
            return [
                ReferralDeclined(
                    case_id=command.case_id,
                    referral_id=referral.referral_id,
                    provider_id=command.provider_id,
                    reason=command.reason,
                )
            ]
        case CompleteReferral():
            _require_status(referral, ReferralStatus.ACCEPTED, errors.REFERRAL_NOT_ACCEPTED)
            return [
                ReferralCompleted(
                    case_id=command.case_id,
                    referral_id=referral.referral_id,
                    provider_id=command.provider_id,
                    outcome=command.outcome,
                )
            ]


def decide_withdrawal(
    state: CaseState,
    command: WithdrawReferral,
    actor: Actor,
    facts: CaseFacts | None = None,
    agency: Agency | None = None,
    on: date | None = None,
    occurred_at: datetime | None = None,
    *,
    sensitive_shown: bool = False,
) -> list[CaseEvent]:
    """The agency calls off a referral still running (pending or accepted); one that ended
    (declined, completed, withdrawn) stays as it ended. Allowed on a closed case too: it takes
    nothing on, it ends a partner's part in the case.

    Given the case's ``facts``, the ``agency``'s file and its date ``on``, an accepted referral
    that is all that keeps a counseling need off a worker who may not counsel is not withdrawn
    (``withdrawal_leaves_counseling``): assignment lets a case manager carry such a case only
    while a provider has the need. The closure's withdrawals are not decided here: a closed case
    asks nothing of its worker. ``occurred_at``: the command's moment (stated, else now), not
    before the referral's last event; ``sensitive_shown``: whether the caller may see the case's
    sensitive values, without which that refusal tells of counseling only when the referral's
    need is shown to them (``assignment.counseling_shown``)."""
    require_case_worker(actor, Action.WITHDRAW_REFERRAL, state.worker_id)
    referral = state.referrals.get(command.referral_id)
    if referral is None:
        raise NotFound("referral", command.referral_id)
    if referral.status not in RUNNING_REFERRAL_STATUSES:
        raise RuleBroken(
            errors.REFERRAL_NOT_RUNNING,
            f"referral {referral.referral_id} is {referral.status.value}; only a pending or"
            " accepted referral can be withdrawn",
            subject=f"referral/{referral.referral_id}",
            status=referral.status.value,
        )
    if facts is not None and agency is not None and on is not None:
        _require_counseling_kept(state, referral, facts, agency, on, sensitive_shown)
    require_not_before(occurred_at, referral.last_change, referral.changed_at)
    return [_withdrawn(command.case_id, referral, command.reason)]


def _require_counseling_kept(
    state: CaseState,
    referral: Referral,
    facts: CaseFacts,
    agency: Agency,
    on: date,
    sensitive_shown: bool,
) -> None:
    """Refuse to hand the referral's need back to the case's worker when it calls for counseling
    and they may not counsel on ``on`` (a case manager, a licence lapsed): it is still the
    case's, open, and no other referral a provider took on meets it. A pending referral meets no
    need yet: withdrawn, it leaves the worker nothing they did not already carry."""
    need = referral.need_category
    if (
        referral.status is not ReferralStatus.ACCEPTED
        or need not in COUNSELING_NEEDS
        or need not in facts.needs
        or facts.closed
        or state.worker_id is None
    ):
        return
    others = replace(state, referrals={**state.referrals})
    del others.referrals[referral.referral_id]
    if need in others.referred_needs():
        return
    worker = agency.worker(state.worker_id)
    if worker is not None and counseling_licence(worker, on) is not None:
        return
    role = worker.role if worker is not None else state.worker_role
    refusal = (
        errors.withdrawal_leaves_counseling
        if counseling_shown((need,), sensitive_shown=sensitive_shown)
        else errors.withdrawal_lacks_credential
    )
    raise refusal(
        facts.case_id,
        referral.referral_id,
        state.worker_id,
        "" if role is None else role.value,
    )


def decide_closure_withdrawals(state: CaseState, case_id: str) -> list[CaseEvent]:
    """What the case's closure withdraws: its referrals still pending or accepted. Planning
    refuses a closure while it knows of such a referral, but knows of it only through the bus,
    so a referral made as the case closed would otherwise run on a closed case for ever."""
    return [_withdrawn(case_id, referral, CLOSURE_REASON) for referral in state.running_referrals()]


def withdrawals_not_before(state: CaseState, withdrawals: Sequence[CaseEvent]) -> datetime | None:
    """The moment the closure's ``withdrawals`` cannot be dated before: the latest moment one
    of the referrals they withdraw was made or accepted (``None``: none known), as
    ``decide_withdrawal`` refuses a command's. A referral may state a moment ahead of the
    clock (the skew commands are allowed), and a withdrawal dated before it would show, as of
    that moment, a referral withdrawn before it was made."""
    changed = (
        state.referrals[event.referral_id].changed_at
        for event in withdrawals
        if isinstance(event, ReferralWithdrawn)
    )
    return max((moment for moment in changed if moment is not None), default=None)


def _withdrawn(case_id: str, referral: Referral, reason: str) -> ReferralWithdrawn:
    return ReferralWithdrawn(
        case_id=case_id,
        referral_id=referral.referral_id,
        provider_id=referral.provider.provider_id,
        reason=reason,
    )


def _answerable(
    state: CaseState,
    command: AcceptReferral | DeclineReferral | CompleteReferral,
    acting_for: str | None,
) -> Referral:
    """The referral, answered by the partner agency it was made to. Another partner learns
    nothing of it (NOT_THE_PROVIDER, before the provider named in the request is compared): it
    sees only its own referrals, and which agency the client was referred to tells of the
    client's needs."""
    referral = addressed_referral(state, command.referral_id, acting_for)
    if referral is None:
        raise NotFound("referral", command.referral_id)
    provider_id = referral.provider.provider_id
    if provider_id != command.provider_id:
        raise RuleBroken(
            errors.REFERRAL_PROVIDER_MISMATCH,
            f"referral {referral.referral_id} of case {command.case_id} was made to "
            f"{provider_id}, not {command.provider_id}",
            subject=f"referral/{referral.referral_id}",
            referral_provider_id=provider_id,
        )
    return referral


def addressed_referral(
    state: CaseState, referral_id: str, acting_for: str | None
) -> Referral | None:
    """The case's referral (``None``: no such referral), refused to a partner agency
    (``acting_for``) it is not addressed to, a missing one alike (``require_own_provider``)."""
    referral = state.referrals.get(referral_id)
    provider_id = None if referral is None else referral.provider.provider_id
    require_own_provider(acting_for, provider_id, f"referral {referral_id}")
    return referral


def _require_status(referral: Referral, status: ReferralStatus, rule: str) -> None:
    if referral.status is not status:
        raise RuleBroken(
            rule,
            f"referral {referral.referral_id} is {referral.status.value}, not {status.value}",
            subject=f"referral/{referral.referral_id}",
            status=referral.status.value,
        )
