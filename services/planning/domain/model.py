"""A case as planning sees it: its plan folded from planning's own events, plus the facts
planning learned about the case from other services on the bus.

Plan versions: every change of the plan makes its next version, whatever was agreed: version 1
is the draft, and each goal added, revised or dropped adds one, so a version names one content
of the plan and the client agrees to the version they were shown only while it is the current
one. A reader not shown the case's sensitive values (a coordinator) is shown a version counted
from the changes they are shown only (``Plan.version_shown``): those of a goal withheld from
them whole as special data go uncounted, or the number would tell them of it. Agreeing
records the current version and changes nothing; achieving a goal is progress, not a change of
the plan. The agreements themselves are numbered apart (``PlanAgreed``'s
``plan_version``: 1 for the first, then +1, as the event catalog states, and as stores kept
before every change made a version numbered them too), so the versions are counted from the
plan's changes alone (``PLAN_VERSION_CHANGES``), the same whenever a store was written.

Each goal also knows whether the client agreed to it as it stands: a goal added or revised
after the last agreement is not agreed until the next one, so it cannot be achieved or
evaluated before (the plan is built with the client, not for them).

The moments of what the plan's work needs are kept with it (a goal's last change, the
agreement to it as it stands and the first, its latest evaluation, the plan's latest change or
achievement): audit folds a case's history by the moments its events state, so work dated
before what it needs would show, as of that moment, something planning never allowed: the
decisions refuse it.

A closure ends the plan's cycle: a reopened case (the client needs help again) starts with no
plan, and a new one is drafted with the client; the earlier plans stay in the case's history,
their ids (and their goals' ids) used up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from casetrail_platform.folded import Fold
from casetrail_platform.policy.redaction import is_sensitive_code
from events.catalog.assignment import WorkerCredential
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseClosed, DischargePlanned
from events.catalog.monitoring import ContactLogged, ProgressEvaluated
from events.catalog.planning import (
    PLAN_CHANGES,
    PLAN_VERSION_CHANGES,
    Goal,
    GoalAchieved,
    GoalAdded,
    GoalDropped,
    GoalRevised,
    PlanAgreed,
    PlanDrafted,
)
from events.catalog.values import NeedCategory
from events.envelope import RecordedEvent


class GoalStatus(StrEnum):
    ACTIVE = "active"
    ACHIEVED = "achieved"
    DROPPED = "dropped"


def is_latest(occurred_at: datetime | None, latest_at: datetime | None) -> bool:
    """Whether work stated as happening at ``occurred_at`` is the latest, the one known latest
    having happened at ``latest_at`` (the later of two at one moment; ``None``: not known)."""
    return occurred_at is not None and occurred_at >= (latest_at or occurred_at)


@dataclass
class GoalState:
    goal: Goal
    status: GoalStatus = GoalStatus.ACTIVE
    agreed: bool = False
    """The client agreed to the goal as it now stands (the last agreement named it, and it
    was not revised since)."""
    changed: str = ""
    changed_at: datetime | None = None
    """How the goal came to stand as it does (``plan plan-1 was drafted``, ``goal goal-walk
    was revised``: its drafting, addition or last revision), and when (``None``: not known)."""
    agreed_at: datetime | None = None
    """When the client agreed to the goal as it now stands (``None``: not agreed, or not
    known): it is achieved from then on."""
    first_agreed_at: datetime | None = None
    """When the client first agreed to the goal, as it stood then (``None``: never, or not
    known): it is evaluated from then on, so an evaluation written up late may be dated before
    a later revision (the one it asked for)."""
    evaluated: str = ""
    evaluated_at: datetime | None = None
    """Which evaluation rating the goal is stated as happening latest, and when: the goal is
    not dropped before it (a dropped goal is not evaluated)."""
    changes: int = 0
    """The plan's changes of this goal: its addition, revisions and drop (a drafted goal's
    drafting is the plan's own change)."""

    @property
    def special(self) -> bool:
        """Whether the goal's need is special data (``substance_use``): a reader not entitled to
        sensitive values is shown the plan without it (``redaction``)."""
        return is_sensitive_code(self.goal.need_category.value)


@dataclass
class Plan:
    plan_id: str
    goals: dict[str, GoalState] = field(default_factory=dict)
    version: int = 0
    """The version being worked on: one more for each of its changes (``PLAN_VERSION_CHANGES``,
    its drafting the first)."""
    agreed_version: int = 0
    """The version the client last agreed to (0: never)."""
    drafted_at: datetime | None = None
    """When the plan was drafted (``None`` when not known: events applied without it)."""
    agreements_named: list[tuple[tuple[str, ...], datetime | None]] = field(default_factory=list)
    """The goals each agreement named, and when it was made (``None``: not known), in order."""
    last_work: str = ""
    last_work_at: datetime | None = None
    """What of the plan's own work (its drafting, goals added, revised, achieved or dropped,
    agreements) is stated as happening latest, and when: the plan is not changed nor agreed
    before it. Evaluations are not counted: one needs nothing newer than the first agreements
    to it and its goals, and a change does not undo those (a goal is not dropped before its
    own evaluations: ``GoalState.evaluated_at``)."""

    @property
    def agreements(self) -> int:
        """How many times the client agreed to the plan: the next agreement's number."""
        return len(self.agreements_named)

    @property
    def ever_agreed(self) -> bool:
        return self.agreements > 0

    @property
    def changed_since_agreement(self) -> bool:
        """True for a draft never agreed, and after any change since the last agreement: every
        change makes the next version, and an agreement is to the version then current."""
        return self.version != self.agreed_version

    def changed(self) -> None:
        """Note a change of what the plan holds: its next version, awaiting agreement."""
        self.version += 1

    def agreements_shown(self, sensitive_shown: bool) -> list[datetime | None]:
        """When each agreement shown to a reader was made (``None``: not known), in order: to
        one not entitled to sensitive values, an agreement naming none but goals withheld from
        them whole (``GoalState.special``) is not shown, the plan reading as it did before it
        (the case view alike, ``case_document.plan_versions``): a plan agreed with no goal in
        it they are shown would tell of one."""
        withheld = {goal_id for goal_id, goal in self.goals.items() if goal.special}
        return [
            made_at
            for goal_ids, made_at in self.agreements_named
            if sensitive_shown or not withheld.issuperset(goal_ids)
        ]

    def version_shown(self, sensitive_shown: bool) -> int:
        """The version as shown to a reader (``sensitive_shown``: one entitled to sensitive
        values): to one who is not, without the changes of the goals withheld from them whole
        (``GoalState.special``), which the case view counts alike (``case_document``). A goal
        revised into a special-data need takes its earlier changes out of the count with it."""
        if sensitive_shown:
            return self.version
        withheld = sum(goal.changes for goal in self.goals.values() if goal.special)
        return self.version - withheld

    def worked_on(self, work: str, occurred_at: datetime | None) -> None:
        """Note ``work`` done on the plan, stated as happening at ``occurred_at``."""
        if is_latest(occurred_at, self.last_work_at):
            self.last_work, self.last_work_at = work, occurred_at

    def evaluated(self, event: ProgressEvaluated, work: str, occurred_at: datetime | None) -> None:
        """Note the goals ``event`` rates as evaluated by ``work`` at ``occurred_at``."""
        for entry in event.goal_progress:
            goal = self.goals[entry.goal_id]
            if is_latest(occurred_at, goal.evaluated_at):
                goal.evaluated, goal.evaluated_at = work, occurred_at

    def active_goal_ids(self) -> tuple[str, ...]:
        return tuple(
            goal_id for goal_id, goal in self.goals.items() if goal.status is GoalStatus.ACTIVE
        )


@dataclass
class CasePlanning:
    """Planning's own record of one case (its event stream, folded)."""

    case_id: str
    plan: Plan | None = None
    """The plan of the current cycle (since the case was opened or last reopened)."""
    closures: int = 0
    past_ids: set[str] = field(default_factory=set)
    """The ids of the plans of earlier cycles and of their goals: an id names one thing of
    the case (a service names the goal it serves by its id alone)."""
    closed_at: datetime | None = None
    """When the case was last closed: a reopened case's new cycle starts after it."""
    last_work: str = ""
    last_work_at: datetime | None = None
    """What of planning's own events of the current cycle is stated as happening latest (``plan
    plan-1 was agreed``), and when (``None``: none, or none applied with its moment): the
    cycle's closure does not come before it."""
    contact_ids: set[str] = field(default_factory=set)
    evaluation_ids: set[str] = field(default_factory=set)
    version_changes: deque[tuple[int, int, int]] = field(
        default_factory=lambda: deque(maxlen=VERSION_CHANGES_KEPT)
    )
    """(sequence, plan version after it, that version as shown to a reader not entitled to
    sensitive values) of the latest events that changed the plan's version: a retried command
    answers its plan version from these (``plan_version_at``) instead of reading the case up
    to its events again."""
    version_changes_from: int = 0
    """Every change at or after this sequence is in ``version_changes`` (0: every one)."""

    @property
    def plan_version(self) -> int:
        """The version of the current plan (0: no plan)."""
        return self.plan_version_shown(sensitive_shown=True)

    def plan_version_shown(self, sensitive_shown: bool) -> int:
        """The version of the current plan as shown to a reader (``Plan.version_shown``)."""
        return 0 if self.plan is None else self.plan.version_shown(sensitive_shown)

    def plan_version_at(self, sequence: int, sensitive_shown: bool) -> int | None:
        """The plan's version right after event ``sequence`` (which this record holds), as
        shown to a reader (``Plan.version_shown``); ``None`` when that is older than the
        changes kept."""
        if sequence < self.version_changes_from:
            return None
        before = [
            version if sensitive_shown else shown
            for at, version, shown in self.version_changes
            if at <= sequence
        ]
        return before[-1] if before else 0

    def apply(self, event: CaseEvent, occurred_at: datetime | None = None) -> None:
        """Apply ``event``, stated as happening at ``occurred_at``."""
        work = cycle_work(event)
        if work and is_latest(occurred_at, self.last_work_at):
            self.last_work, self.last_work_at = work, occurred_at
        match event:
            case PlanDrafted():
                goals = {
                    g.goal_id: GoalState(g, changed=work, changed_at=occurred_at)
                    for g in event.goals
                }
                self.plan = Plan(event.plan_id, goals, drafted_at=occurred_at)
            case GoalAdded() if self.plan is not None:
                added = GoalState(event.goal, changed=work, changed_at=occurred_at)
                self.plan.goals[event.goal.goal_id] = added
            case GoalRevised() if self.plan is not None:
                revised = self.plan.goals[event.goal.goal_id]
                revised.goal = event.goal
                revised.agreed, revised.agreed_at = False, None
                revised.changed, revised.changed_at = work, occurred_at
            case GoalAchieved() if self.plan is not None:
                self.plan.goals[event.goal_id].status = GoalStatus.ACHIEVED
            case GoalDropped() if self.plan is not None:
                self.plan.goals[event.goal_id].status = GoalStatus.DROPPED
            case PlanAgreed() if self.plan is not None:
                # The event numbers the agreement (1 for the first, then +1), not the version:
                # the version agreed is the current one.
                self.plan.agreed_version = self.plan.version
                self.plan.agreements_named.append((event.goal_ids, occurred_at))
                for goal_id in event.goal_ids:
                    agreed = self.plan.goals[goal_id]
                    if not agreed.agreed:
                        agreed.agreed, agreed.agreed_at = True, occurred_at
                        agreed.first_agreed_at = agreed.first_agreed_at or occurred_at
            case ContactLogged():
                self.contact_ids.add(event.contact_id)
            case ProgressEvaluated():
                self.evaluation_ids.add(event.evaluation_id)
                if self.plan is not None:
                    self.plan.evaluated(event, work, occurred_at)
            case CaseClosed():
                self.closures += 1
                self.closed_at = occurred_at
                self.last_work, self.last_work_at = "", None
                if self.plan is not None:
                    self.past_ids.update((self.plan.plan_id, *self.plan.goals))
                    self.plan = None
            case _:
                pass
        if isinstance(event, PLAN_VERSION_CHANGES) and self.plan is not None:
            self.plan.changed()
            if not isinstance(event, PlanDrafted):
                self.plan.goals[_changed_goal_id(event)].changes += 1
        if isinstance(event, PLAN_CHANGES) and self.plan is not None:
            # Planning works on its current plan only: the event is this plan's.
            self.plan.worked_on(work, occurred_at)


def _changed_goal_id(event: GoalAdded | GoalRevised | GoalDropped) -> str:
    return event.goal_id if isinstance(event, GoalDropped) else event.goal.goal_id


def cycle_work(event: CaseEvent) -> str:
    """What ``event`` of planning's stream did in the case's cycle, as an ordering refusal names
    it (``""``: not work of the cycle, a closure ending it)."""
    match event:
        case PlanDrafted():
            return f"plan {event.plan_id} was drafted"
        case PlanAgreed():
            return f"plan {event.plan_id} was agreed"
        case GoalAdded() | GoalRevised():
            done = "added" if isinstance(event, GoalAdded) else "revised"
            return f"goal {event.goal.goal_id} was {done}"
        case GoalAchieved():
            return f"goal {event.goal_id} was achieved"
        case GoalDropped():
            return f"goal {event.goal_id} was dropped"
        case ContactLogged():
            return f"contact {event.contact_id} was logged"
        case ProgressEvaluated():
            return f"evaluation {event.evaluation_id} was made"
        case DischargePlanned():
            return "the discharge was planned"
        case _:
            return ""


def fold(case_id: str, history: Iterable[RecordedEvent]) -> CasePlanning:
    return evolve(CasePlanning(case_id), history)


def evolve(record: CasePlanning, history: Iterable[RecordedEvent]) -> CasePlanning:
    """``record`` with ``history`` (the case's next events) applied, in place."""
    changes = record.version_changes
    for recorded in history:
        before = record.plan_version
        record.apply(recorded.event, recorded.metadata.occurred_at)
        if record.plan_version != before:
            if len(changes) == changes.maxlen:
                # The oldest change goes: versions before the next one are no longer known.
                changes.popleft()
                record.version_changes_from = changes[0][0] if changes else recorded.sequence
            shown = record.plan_version_shown(sensitive_shown=False)
            changes.append((recorded.sequence, record.plan_version, shown))
    return record


def case_fold(case_id: str) -> Fold[CasePlanning]:
    """The case's record, kept folded between commands (``casetrail_platform.folded``): a
    case worked for years gathers every contact and evaluation. Holds opened sealed values
    (goals), so a kept record goes when the client's keys do."""
    return Fold(FOLD_NAME, lambda: CasePlanning(case_id), evolve)


FOLD_NAME = "planning.case.v1"

VERSION_CHANGES_KEPT = 64
"""Plan version changes a kept record remembers (one per draft, goal added, revised or dropped,
or closure): a retry of a command older than the oldest reads the case up to its events."""


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """What other services said about the case, as planning learned it from the bus."""

    known: bool
    """Intake opened the case."""
    opened_at: datetime | None = None
    """When intake says the case was opened; no command on it can have happened before.
    ``None`` for views projected before this was kept."""
    worker_id: str | None = None
    assessed: bool = False
    """Intake recorded the initial assessment of the case's current episode (after its last
    reopening: a reopened case is assessed again)."""
    assessed_at: datetime | None = None
    """When intake says the case's latest initial assessment was made: the plan, which builds
    on it, follows it. ``None``: none, or a view kept before this was (not checked)."""
    assigned_at: datetime | None = None
    """When coordination says the case was first assigned a worker (who stays through a
    closure and a reopening until another is assigned): the plan follows it too. ``None``:
    never, or a view kept before this was (not checked)."""
    reopens: int = 0
    reopened_at: datetime | None = None
    """When intake says the case was last reopened: the current cycle's work follows it."""
    scheduled_service_ids: tuple[str, ...] = ()
    running_referral_ids: tuple[str, ...] = ()
    """Referrals made and not yet declined or completed (pending or accepted)."""
    referred_needs: frozenset[NeedCategory] = frozenset()
    """Needs an outside provider took on (its referral accepted, or completed)."""
    special_entry_ids: frozenset[str] = frozenset()
    """Those of ``scheduled_service_ids`` and ``running_referral_ids`` of a special-data kind
    or need, which the case's view withholds whole from a reader not entitled to sensitive
    values: a closure's refusal names them to no such caller (``errors.still_scheduled``)."""

    def is_closed(self, record: CasePlanning) -> bool:
        # Planning closes cases in its own stream; a reopening comes from elsewhere on the bus.
        # Every reopening follows a closure, so counting both tells which came last.
        return record.closures > self.reopens


UNKNOWN_CASE = CaseFacts(known=False)


@dataclass(frozen=True, slots=True)
class StaffMember:
    """A worker as planning learned them from the bus: the role and credentials of the latest
    case assignment (``CaseAssigned``, ``CaseReassigned``) that named them."""

    worker_id: str
    role: Role
    credentials: tuple[WorkerCredential, ...] = ()
