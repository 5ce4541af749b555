"""The state of a case folded from its events: a pure function of the history it is given.

Which events and in which order is the caller's choice (``history.view``), so the same fold
answers "as it was" and "as it was known". Events of other services may arrive in any order on
the bus; the fold tolerates a follow-up event whose antecedent it has not seen (a referral
declined without the referral in view, say) by recording what the follow-up tells.
Sensitive free text (needs' descriptions, goal statements, notes) is never copied into the
state: the timeline holds it for those entitled to read it. Sensitive codes (need categories,
service kinds) are, since showing them is what a case state is for; reading a state is
recorded as an access like any other disclosure. The client's own record (``ClientRecord``:
date of birth, retention holds, erasure) is folded apart from the client's events, which are
not the case's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum

from casetrail_platform.policy.redaction import is_sensitive_code
from events.catalog import (
    access,
    assessment,
    assignment,
    cases,
    clients,
    erasure,
    planning,
    referrals,
    scheduling,
)
from events.catalog.base import CaseEvent
from events.envelope import RecordedEvent
from services.audit.domain.history import TimeBasis, moment_of


class CaseStatus(StrEnum):
    UNKNOWN = "unknown"
    """No lifecycle event of the case is in view."""
    OPENED = "opened"
    ASSIGNED = "assigned"
    PLANNED = "planned"
    CLOSED = "closed"
    REOPENED = "reopened"


@dataclass(frozen=True)
class Need:
    category: str
    urgency: str | None = None


@dataclass(frozen=True)
class Assignment:
    worker_id: str
    worker_role: str
    since: datetime


@dataclass(frozen=True)
class PlanGoal:
    goal_id: str
    term: str
    need_category: str
    status: str = "active"


@dataclass(frozen=True)
class Agreement:
    version: int
    """The plan version agreed, counted as planning counts it."""
    goal_ids: tuple[str, ...]
    signed_by_client: bool


@dataclass(frozen=True)
class Plan:
    plan_id: str
    goals: tuple[PlanGoal, ...] = ()
    version: int = 0
    """The version being worked on, counted from the plan's changes as planning counts it
    (``planning.PLAN_VERSION_CHANGES``)."""
    agreements: tuple[Agreement, ...] = ()
    """Each agreement to the plan, in order."""
    changed_goal_ids: tuple[str, ...] = ()
    """The goal each change of the plan was of, in order (``""``: its drafting)."""

    @property
    def agreed_version(self) -> int:
        """The version last agreed (0: never)."""
        return self.agreements[-1].version if self.agreements else 0

    def agreement_shown(self, sensitive: bool) -> Agreement | None:
        """The latest agreement as planning showed it to a reader (``sensitive``: one entitled
        to sensitive values; ``None``: none): to one who is not, an agreement naming none but
        goals withheld from them whole as special data is not shown, the plan reading as it did
        before it (planning's ``Plan.agreements_shown``)."""
        withheld = set() if sensitive else self._withheld_goal_ids()
        shown = [agreed for agreed in self.agreements if not withheld.issuperset(agreed.goal_ids)]
        return shown[-1] if shown else None

    def agreed_version_shown(self, sensitive: bool) -> int:
        """The version agreed as planning showed it to a reader (``sensitive``: one entitled to
        sensitive values): to one who is not, that of the latest agreement shown them
        (``agreement_shown``), counted without the changes of the goals withheld from them
        whole as special data (planning's ``Plan.version_shown``)."""
        agreement = self.agreement_shown(sensitive)
        if agreement is None:
            return 0
        if sensitive:
            return agreement.version
        withheld = self._withheld_goal_ids()
        agreed = self.changed_goal_ids[: agreement.version]
        return sum(1 for goal_id in agreed if goal_id not in withheld)

    def _withheld_goal_ids(self) -> set[str]:
        return {goal.goal_id for goal in self.goals if is_sensitive_code(goal.need_category)}


@dataclass(frozen=True)
class ScheduledService:
    service_id: str
    status: str
    kind: str = ""
    provider_id: str = ""
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    referral_id: str = ""


@dataclass(frozen=True)
class Referral:
    referral_id: str
    status: str
    provider_id: str = ""
    need_category: str = ""


@dataclass(frozen=True)
class Consent:
    consent_id: str
    status: str
    recipient_agency_id: str = ""
    scope: tuple[str, ...] = ()
    expires_at: datetime | None = None

    def active_at(self, moment: datetime) -> bool:
        return self.status == "granted" and (self.expires_at is None or moment < self.expires_at)


@dataclass(frozen=True)
class ClientRecord:
    """The client's own record at a moment, folded from the client's events (``client_fold``):
    what the case's decisions about the person (their age) rested on then."""

    date_of_birth: date | None = None
    """Of the registration or the latest correction; None when none was given, and once
    erased (a sealed date reads as null then)."""
    retention_hold_ids: tuple[str, ...] = ()
    """The holds standing, in the order they were placed."""
    erased: bool = False


@dataclass(frozen=True)
class CaseState:
    case_id: str
    status: CaseStatus = CaseStatus.UNKNOWN
    client_id: str | None = None
    presenting_needs: tuple[Need, ...] = ()
    assessed_needs: tuple[Need, ...] = ()
    assignment: Assignment | None = None
    plan: Plan | None = None
    services: tuple[ScheduledService, ...] = ()
    referrals: tuple[Referral, ...] = ()
    consents: tuple[Consent, ...] = ()
    closure_reason: str | None = None
    events_applied: int = 0
    last_event_at: datetime | None = None
    client: ClientRecord = ClientRecord()
    unagreed_status: CaseStatus = CaseStatus.UNKNOWN
    """The status as it would be had no agreement made the case planned."""

    def status_shown(self, sensitive: bool) -> CaseStatus:
        """The status as planning showed it to a reader (``sensitive``: one entitled to
        sensitive values): to one who is not shown any agreement to the plan
        (``Plan.agreement_shown``), the case is not planned."""
        if self.status is not CaseStatus.PLANNED or sensitive:
            return self.status
        if self.plan is not None and self.plan.agreement_shown(sensitive) is not None:
            return self.status
        return self.unagreed_status


def client_fold(ordered: Iterable[RecordedEvent]) -> ClientRecord:
    """The client's record after ``ordered``, the client's own events (already filtered and
    sorted on the case's clock); other events change nothing in it."""
    born: date | None = None
    holds: dict[str, None] = {}
    erased = False
    for recorded in ordered:
        event = recorded.event
        match event:
            case clients.ClientRegistered() | clients.ClientDateOfBirthCorrected():
                born = event.date_of_birth
            case erasure.RetentionHoldPlaced():
                holds[event.hold_id] = None
            case erasure.RetentionHoldReleased():
                holds.pop(event.hold_id, None)
            case erasure.ClientErased():
                erased = True
    # Read after an erasure, every sealed date is null already; one read before it (a key
    # still cached) is not shown for a moment after it either.
    return ClientRecord(None if erased else born, tuple(holds), erased)


def fold(case_id: str, ordered: Iterable[RecordedEvent], basis: TimeBasis) -> CaseState:
    """The case after ``ordered`` (already filtered and sorted on ``basis``)."""
    folding = CaseFold(case_id, basis)
    for recorded in ordered:
        folding.apply(recorded)
    return folding.state()


class CaseFold:
    """``fold`` given its events a page at a time (a case of 100,000 events is never held
    whole): each page in ``basis``'s order, after the pages before it."""

    def __init__(self, case_id: str, basis: TimeBasis) -> None:
        self._folding = _Folding(case_id)
        self._basis = basis

    def apply(self, recorded: RecordedEvent) -> None:
        self._folding.apply(recorded)
        self._folding.events_applied += 1
        self._folding.last_event_at = moment_of(recorded, self._basis)

    def state(self) -> CaseState:
        return self._folding.freeze()


@dataclass
class _Folding:
    """Mutable while folding, frozen for callers: rebuilding tuples per event would make a
    long history quadratic."""

    case_id: str
    status: CaseStatus = CaseStatus.UNKNOWN
    client_id: str | None = None
    presenting_needs: tuple[Need, ...] = ()
    assessed_needs: tuple[Need, ...] = ()
    assignment: Assignment | None = None
    plan: Plan | None = None
    goals: dict[str, PlanGoal] = field(default_factory=dict)
    ended_plan_ids: set[str] = field(default_factory=set)
    """The plans of the cycles a reopening ended: planning keeps each among the case's previous
    plans whatever comes of it later."""
    services: dict[str, ScheduledService] = field(default_factory=dict)
    referrals: dict[str, Referral] = field(default_factory=dict)
    consents: dict[str, Consent] = field(default_factory=dict)
    closure_reason: str | None = None
    events_applied: int = 0
    last_event_at: datetime | None = None
    unagreed_status: CaseStatus = CaseStatus.UNKNOWN
    """``status`` as the lifecycle alone sets it, no agreement making the case planned (shown
    to a reader from whom every agreement to the plan is withheld: ``CaseState.status_shown``)."""

    def freeze(self) -> CaseState:
        plan = None if self.plan is None else replace(self.plan, goals=tuple(self.goals.values()))
        return CaseState(
            case_id=self.case_id,
            status=self.status,
            client_id=self.client_id,
            presenting_needs=self.presenting_needs,
            assessed_needs=self.assessed_needs,
            assignment=self.assignment,
            plan=plan,
            services=tuple(self.services.values()),
            referrals=tuple(self.referrals.values()),
            consents=tuple(self.consents.values()),
            closure_reason=self.closure_reason,
            events_applied=self.events_applied,
            last_event_at=self.last_event_at,
            unagreed_status=self.unagreed_status,
        )

    def apply(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if self._lifecycle(event, recorded.metadata.occurred_at):
            return
        if self._planning(event):
            return
        if self._services(event):
            return
        self._referrals_and_consents(event)

    def _lifecycle(self, event: CaseEvent, occurred_at: datetime) -> bool:
        match event:
            case cases.CaseOpened():
                self.status = self.unagreed_status = CaseStatus.OPENED
                self.client_id = event.client_id
                self.presenting_needs = tuple(
                    Need(n.category.value) for n in event.presenting_needs
                )
            case assessment.InitialAssessmentRecorded():
                self.assessed_needs = tuple(
                    Need(n.category.value, n.urgency.value) for n in event.needs
                )
            case assignment.CaseAssigned() | assignment.CaseReassigned():
                self.assignment = Assignment(event.worker_id, event.worker_role.value, occurred_at)
                self.status = _assigned(self.status)
                self.unagreed_status = _assigned(self.unagreed_status)
            case cases.CaseClosed():
                self.status = self.unagreed_status = CaseStatus.CLOSED
                self.closure_reason = event.reason.value
                # A closure sets the status, not the assignment: the worker stays on record
                # through a reopening until someone is assigned, as in coordination, planning
                # and the policy's facts (a state that forgot them would differ from theirs).
            case cases.CaseReopened():
                self.status = self.unagreed_status = CaseStatus.REOPENED
                self.closure_reason = None
                # A closure ends the plan's cycle: the reopened case has no plan until one is
                # drafted, as in planning (the old plan among its previous plans). States as
                # of a moment before the reopening still show it.
                if self.plan is not None:
                    self.ended_plan_ids.add(self.plan.plan_id)
                self.plan = None
                self.goals = {}
            case _:
                return False
        return True

    def _planning(self, event: CaseEvent) -> bool:
        if isinstance(event, planning.PLAN_CHANGES) and event.plan_id in self.ended_plan_ids:
            # An ended cycle's plan event stated after the reopening (a closure stated before
            # its cycle's work, as stores kept before that was refused hold): the plan stays
            # ended, as planning keeps it (a plan belongs to the cycle it was made in), and the
            # reopened case is not planned by it.
            return True
        match event:
            case planning.PlanDrafted():
                self._plan(event.plan_id)
                for drafted in event.goals:
                    self.goals[drafted.goal_id] = _goal(drafted)
            case planning.GoalAdded() | planning.GoalRevised():
                self._plan(event.plan_id)
                self.goals[event.goal.goal_id] = _goal(event.goal)
            case planning.GoalAchieved() | planning.GoalDropped():
                self._plan(event.plan_id)
                status = "achieved" if isinstance(event, planning.GoalAchieved) else "dropped"
                goal = self.goals.get(event.goal_id) or PlanGoal(event.goal_id, "", "")
                self.goals[event.goal_id] = replace(goal, status=status)
            case planning.PlanAgreed():
                plan = self._plan(event.plan_id)
                # The event numbers the agreement; the version agreed is the current one.
                agreed = Agreement(plan.version, event.goal_ids, event.signed_by_client)
                self.plan = replace(plan, agreements=(*plan.agreements, agreed))
                if self.status is not CaseStatus.CLOSED:
                    self.status = CaseStatus.PLANNED
            case _:
                return False
        if isinstance(event, planning.PLAN_VERSION_CHANGES) and self.plan is not None:
            changed = (*self.plan.changed_goal_ids, _changed_goal_id(event))
            self.plan = replace(self.plan, version=len(changed), changed_goal_ids=changed)
        return True

    def _plan(self, plan_id: str) -> Plan:
        if self.plan is None or self.plan.plan_id != plan_id:
            # A new plan replaces the old one; its goals are its own.
            self.plan = Plan(plan_id)
            self.goals = {}
        return self.plan

    def _services(self, event: CaseEvent) -> bool:
        match event:
            case scheduling.ServiceScheduled():
                self.services[event.service_id] = ScheduledService(
                    event.service_id,
                    "scheduled",
                    event.kind.value,
                    event.provider.provider_id,
                    event.starts_at,
                    event.ends_at,
                    event.referral_id or "",
                )
            case scheduling.ServiceRescheduled() | scheduling.ServiceDelivered():
                status = (
                    "delivered" if isinstance(event, scheduling.ServiceDelivered) else "rescheduled"
                )
                service = self._service(event.service_id)
                self.services[event.service_id] = replace(
                    service, status=status, starts_at=event.starts_at, ends_at=event.ends_at
                )
            case scheduling.ServiceCancelled():
                service = self._service(event.service_id)
                self.services[event.service_id] = replace(service, status="cancelled")
            case _:
                return False
        return True

    def _service(self, service_id: str) -> ScheduledService:
        return self.services.get(service_id) or ScheduledService(service_id, "scheduled")

    def _referrals_and_consents(self, event: CaseEvent) -> None:
        match event:
            case referrals.ReferralMade():
                self.referrals[event.referral_id] = Referral(
                    event.referral_id, "made", event.provider.provider_id, event.need_category.value
                )
            case referrals.ReferralAccepted():
                self._referral(event.referral_id, event.provider_id, "accepted")
            case referrals.ReferralDeclined():
                self._referral(event.referral_id, event.provider_id, "declined")
            case referrals.ReferralCompleted():
                self._referral(event.referral_id, event.provider_id, "completed")
            case referrals.ReferralWithdrawn():
                self._referral(event.referral_id, event.provider_id, "withdrawn")
            case access.ConsentGranted():
                self.consents[event.consent_id] = Consent(
                    event.consent_id,
                    "granted",
                    event.recipient.recipient_id,
                    tuple(section.value for section in event.scope),
                    event.expires_at,
                )
            case access.ConsentRevoked():
                consent = self.consents.get(event.consent_id) or Consent(event.consent_id, "")
                self.consents[event.consent_id] = replace(consent, status="revoked")
            case _:
                # Eligibility, funding, contacts, progress, discharge planning and accesses
                # are history, not state.
                pass

    def _referral(self, referral_id: str, provider_id: str, status: str) -> None:
        referral = self.referrals.get(referral_id) or Referral(referral_id, status, provider_id)
        self.referrals[referral_id] = replace(referral, status=status)


def _assigned(status: CaseStatus) -> CaseStatus:
    """``status`` once the case is assigned: a case not yet planned nor closed is assigned."""
    if status in (CaseStatus.UNKNOWN, CaseStatus.OPENED, CaseStatus.REOPENED):
        return CaseStatus.ASSIGNED
    return status


def _changed_goal_id(
    event: planning.PlanDrafted | planning.GoalAdded | planning.GoalRevised | planning.GoalDropped,
) -> str:
    match event:
        case planning.PlanDrafted():
            return ""
        case planning.GoalDropped():
            return event.goal_id
        case _:
            return event.goal.goal_id


def _goal(goal: planning.Goal) -> PlanGoal:
    return PlanGoal(goal.goal_id, goal.term.value, goal.need_category.value)
