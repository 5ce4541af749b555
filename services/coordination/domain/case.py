"""The case as coordination's own ``case-<id>`` stream tells it: who carries it, referrals,
eligibility decisions and insurance claims."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from casetrail_platform.folded import Fold
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import Role
from events.catalog.eligibility import EligibilityDetermined
from events.catalog.funding import ClaimDecision, InsuranceClaimDecided, InsuranceClaimFiled
from events.catalog.referrals import (
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralMade,
    ReferralWithdrawn,
)
from events.catalog.values import Money, NeedCategory, Provider
from events.envelope import RecordedEvent


class ReferralStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    COMPLETED = "completed"
    WITHDRAWN = "withdrawn"


RUNNING_REFERRAL_STATUSES = frozenset({ReferralStatus.PENDING, ReferralStatus.ACCEPTED})
"""A referral still running: the provider may yet take it on, or is working on it. Only such a
referral can be withdrawn, or have services come from it."""


@dataclass(slots=True)
class Referral:
    referral_id: str
    provider: Provider
    need_category: NeedCategory
    service: str
    urgency: str
    status: ReferralStatus = ReferralStatus.PENDING
    changed_at: datetime | None = None
    """When its last event (made, answered, withdrawn) happened, as its command stated: what
    is done to it next cannot have happened before."""
    made_at: datetime | None = None
    """When it was made, as its command stated: no service is booked from it before."""
    ended_at: datetime | None = None
    """When it stopped running (declined, completed or withdrawn), as recorded: the moment
    from which the services booked from it are called off (``app.follow_ups``)."""
    consent_id: str | None = None
    """The consent it was made under (``None``: under an exception, or made before referrals
    carried it): the sensitive categories that consent names may be disclosed to its provider
    by the services booked from it too (``scheduling.decide_schedule``)."""

    @property
    def last_change(self) -> str:
        """What ``changed_at`` is the moment of, in words."""
        done = "made" if self.status is ReferralStatus.PENDING else self.status.value
        return f"referral {self.referral_id} was {done}"


@dataclass(slots=True)
class Claim:
    claim_id: str
    insurer: Provider
    amount_claimed: Money
    service_ids: tuple[str, ...]
    decision: ClaimDecision | None = None
    amount_approved: Money | None = None
    filed_at: datetime | None = None
    """When it was filed, as its command stated: its decision cannot have happened before."""
    decided_at: datetime | None = None
    """When it was decided, as its command stated: denied, it frees its services for another
    claim from then on."""

    @property
    def status(self) -> str:
        return "filed" if self.decision is None else self.decision.value

    @property
    def covers_services(self) -> bool:
        """A denied claim leaves its services free to be claimed again."""
        return self.decision is not ClaimDecision.DENIED


@dataclass(slots=True)
class CaseState:
    version: int = 0
    worker_id: str | None = None
    worker_role: Role | None = None
    worker_team: str | None = None
    """The worker's team, as the assignment recorded it: its supervisors act on the case."""
    assigned_at: datetime | None = None
    """When the case was given to its worker (assigned or transferred), as stated: a transfer
    cannot have happened before."""
    referrals: dict[str, Referral] = field(default_factory=dict)
    eligibility: list[EligibilityDetermined] = field(default_factory=list)
    claims: dict[str, Claim] = field(default_factory=dict)

    def running_referrals(self) -> list[Referral]:
        return [r for r in self.referrals.values() if r.status in RUNNING_REFERRAL_STATUSES]

    def referred_needs(self) -> frozenset[NeedCategory]:
        """Needs an outside provider has taken on (accepted, or done). A referral still
        pending may yet be declined, and the need would then be left with a worker who may not
        meet it (a case manager with a counseling need)."""
        return frozenset(
            referral.need_category
            for referral in self.referrals.values()
            if referral.status in (ReferralStatus.ACCEPTED, ReferralStatus.COMPLETED)
        )


def case_state(history: Iterable[RecordedEvent]) -> CaseState:
    return fold_case(CaseState(), history)


def fold_case(state: CaseState, history: Iterable[RecordedEvent]) -> CaseState:
    """``state`` with ``history`` (the stream's next events) folded in, in place."""
    for recorded in history:
        state.version = recorded.sequence
        _apply(state, recorded)
    return state


CASE = Fold("coordination.case.v1", CaseState, fold_case)
"""A case's state as the closure's follow-up decides on it (``app.follow_ups``)."""


def _apply(state: CaseState, recorded: RecordedEvent) -> None:
    event = recorded.event
    match event:
        case CaseAssigned() | CaseReassigned():
            state.worker_id = event.worker_id
            state.worker_role = event.worker_role
            state.worker_team = event.worker_team
            state.assigned_at = recorded.metadata.occurred_at
        case ReferralMade():
            state.referrals[event.referral_id] = Referral(
                event.referral_id,
                event.provider,
                event.need_category,
                event.service,
                event.urgency.value,
                consent_id=event.consent_id,
                changed_at=recorded.metadata.occurred_at,
                made_at=recorded.metadata.occurred_at,
            )
        case ReferralAccepted():
            _change(state.referrals[event.referral_id], ReferralStatus.ACCEPTED, recorded)
        case ReferralDeclined():
            _end(state.referrals[event.referral_id], ReferralStatus.DECLINED, recorded)
        case ReferralCompleted():
            _end(state.referrals[event.referral_id], ReferralStatus.COMPLETED, recorded)
        case ReferralWithdrawn():
            _end(state.referrals[event.referral_id], ReferralStatus.WITHDRAWN, recorded)
        case EligibilityDetermined():
            state.eligibility.append(event)
        case InsuranceClaimFiled():
            state.claims[event.claim_id] = Claim(
                event.claim_id,
                event.insurer,
                event.amount_claimed,
                event.service_ids,
                filed_at=recorded.metadata.occurred_at,
            )
        case InsuranceClaimDecided():
            claim = state.claims[event.claim_id]
            claim.decision = event.decision
            claim.amount_approved = event.amount_approved
            claim.decided_at = recorded.metadata.occurred_at


def _change(referral: Referral, status: ReferralStatus, recorded: RecordedEvent) -> None:
    referral.status = status
    referral.changed_at = recorded.metadata.occurred_at


def _end(referral: Referral, status: ReferralStatus, recorded: RecordedEvent) -> None:
    _change(referral, status, recorded)
    referral.ended_at = recorded.recorded_at
