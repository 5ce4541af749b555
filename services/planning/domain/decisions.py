"""Planning's decisions: from a case's state and a command to new events, or a refusal.

Pure functions: no I/O, no clock. Checks run in the order a caller can act on: the role, the
actor being the assigned worker, the case being known, the case being open, the command's moment
not before the case's opening, then the rules of the command itself. Assignment comes before
existence so that a case-carrying worker is told the same for a case that does not exist as for
one assigned to someone else: the answer must not reveal which case ids are real (nor when a
case was opened).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime

from casetrail_platform.commands import AlreadyExists, NotFound, RuleBroken, require_not_before
from casetrail_platform.limits import MAX_GOALS_PER_PLAN, MAX_PLAN_GOALS_BYTES
from events.catalog.base import CaseEvent
from events.catalog.cases import CaseClosed, DischargePlanned, DischargeReason
from events.catalog.monitoring import ContactLogged, ProgressEvaluated
from events.catalog.planning import (
    Goal,
    GoalAchieved,
    GoalAdded,
    GoalDropped,
    GoalRevised,
    PlanAgreed,
    PlanDrafted,
)
from events.envelope import Actor
from services.planning.domain import errors
from services.planning.domain.commands import (
    AchieveGoal,
    AddGoal,
    CloseCase,
    Command,
    DraftPlan,
    DropGoal,
    EvaluateProgress,
    LogContact,
    PlanDischarge,
    RecordAgreement,
    ReviseGoal,
)
from services.planning.domain.model import (
    CaseFacts,
    CasePlanning,
    GoalState,
    GoalStatus,
    Plan,
    StaffMember,
)
from services.planning.domain.qualifications import (
    PlacedGoal,
    require_carried_by_licensed_worker,
    require_qualified_owners,
    task_workers,
)
from services.planning.domain.rules import Action, require_assignment

ACTIONS: dict[type[Command], Action] = {
    DraftPlan: Action.DRAFT_PLAN,
    AddGoal: Action.DRAFT_PLAN,
    ReviseGoal: Action.DRAFT_PLAN,
    AchieveGoal: Action.DRAFT_PLAN,
    DropGoal: Action.DRAFT_PLAN,
    RecordAgreement: Action.RECORD_AGREEMENT,
    LogContact: Action.LOG_CONTACT,
    EvaluateProgress: Action.EVALUATE_PROGRESS,
    PlanDischarge: Action.PLAN_DISCHARGE,
    CloseCase: Action.CLOSE_CASE,
}


def decide(
    record: CasePlanning,
    facts: CaseFacts,
    actor: Actor,
    command: Command,
    occurred_at: datetime | None = None,
    staff: Mapping[str, StaffMember] | None = None,
    day: date | None = None,
    *,
    sensitive_shown: bool = False,
) -> list[CaseEvent]:
    """``occurred_at``: when the command happens, the moment its events carry (the one it
    states, else now: ``CommandContext.moment``; ``None``: not known, not checked).
    ``staff``: the workers planning knows of among those ``deciding_workers`` names (the
    command's tasks', and for work on the plan's goals their tasks'). ``day``: the
    command's day (its stated moment's, else the server's), from which on a counseling task's
    worker must be licensed whatever the task's date (``require_qualified_owners``; ``None``:
    on the task's date alone). ``sensitive_shown``: whether the caller may see the case's
    sensitive values, without which no refusal names an entry withheld from them: a closure's
    lists none (``_close``), a goal of a special-data need is refused as unknown to a command
    naming it (``_shown_goal``), and an ordering refusal names no goal (``_work_told``)."""
    known_staff = staff or {}
    action = ACTIONS[type(command)]
    require_assignment(actor, action, facts.worker_id)
    if not facts.known:
        raise NotFound("case", command.case_id)
    if facts.is_closed(record):
        raise errors.case_closed(command.case_id)
    if occurred_at is not None:
        _require_in_order(record, facts, command, occurred_at, sensitive_shown)
    match command:
        case DraftPlan():
            return [_draft(record, facts, command, known_staff, day)]
        case AddGoal():
            return [_add_goal(record, facts, command, known_staff, day)]
        case ReviseGoal():
            return [_revise_goal(record, facts, command, known_staff, day, sensitive_shown)]
        case AchieveGoal():
            return [_achieve_goal(record, facts, command, known_staff, day, sensitive_shown)]
        case DropGoal():
            return [_drop_goal(record, command, sensitive_shown)]
        case RecordAgreement():
            return [_agree(record, facts, command, known_staff, day)]
        case LogContact():
            return [_log_contact(record, command)]
        case EvaluateProgress():
            return [_evaluate(record, facts, command, known_staff, day, sensitive_shown)]
        case PlanDischarge():
            return [_plan_discharge(record, command)]
        case CloseCase():
            return [_close(record, facts, command, sensitive_shown)]


def _require_in_order(
    record: CasePlanning,
    facts: CaseFacts,
    command: Command,
    occurred_at: datetime,
    sensitive_shown: bool,
) -> None:
    """A command happens in the case's current cycle: not before the case was opened, nor
    before its last closure or its last reopening (a reopened case's work follows it: dated
    between the two, audit's state as it happened showed a plan made on a closed case); work
    on the plan not before the plan was drafted (an agreement dated before there was a
    plan); the plan not before the assessment and the assignment it needs (audit's state as of
    it showed a plan of a case neither assessed nor assigned); and the closure not before the
    cycle's latest work (a closure for goals achieved showed as of it a plan never agreed).
    The plan's work keeps the order it was done in (``_require_plan_work_in_order``). The
    latest work is named only to a caller shown sensitive values (``_work_told``)."""
    case_id = command.case_id
    require_not_before(occurred_at, f"case {case_id} was opened", facts.opened_at)
    require_not_before(occurred_at, f"case {case_id} was last closed", record.closed_at)
    require_not_before(occurred_at, f"case {case_id} was last reopened", facts.reopened_at)
    plan = record.plan
    if plan is not None and isinstance(command, PLAN_WORK):
        require_not_before(occurred_at, f"plan {plan.plan_id} was drafted", plan.drafted_at)
        _require_plan_work_in_order(plan, command, occurred_at, sensitive_shown)
    if isinstance(command, DraftPlan):
        require_not_before(occurred_at, f"case {case_id} was assessed", facts.assessed_at)
        assigned = f"case {case_id} was first assigned a worker"
        require_not_before(occurred_at, assigned, facts.assigned_at)
    if isinstance(command, CloseCase):
        said = f"the latest planning work of case {case_id}"
        latest = _work_told(record.last_work, said, sensitive_shown)
        require_not_before(occurred_at, latest, record.last_work_at)


def _require_plan_work_in_order(
    plan: Plan, command: Command, occurred_at: datetime, sensitive_shown: bool
) -> None:
    """A goal is achieved not before its last revision nor the client's agreement to it as it
    stands, evaluated not before the client first agreed to it and to the plan, and dropped not
    before its latest evaluation; a change to the plan (a goal added, revised or dropped, an
    agreement) not before the plan's latest change or achievement. So whatever work planning
    accepted, read in the order of its moments, is work planning allows. Audit folds the plan
    so: an achievement dated before the agreement it needs showed, as of it, a goal achieved on
    a plan never agreed, and one dated before a revision (and the agreement to it) left the
    goal active in audit for good, achieved in planning. An achievement written up late may
    still be dated before later work on other goals.

    Evaluations and changes need not wait for each other: an evaluation rates the goals as they
    stood when it was held, and the review that asked for a revision is often written up after
    the revision and its agreement, dated when it was held (as a revision agreed at a meeting
    may be entered after an evaluation made since). Nothing folds them together (audit's state
    leaves evaluations out, the case view orders them among themselves); a goal's first
    agreement, which no change undoes, and its drop, after which it is not evaluated, are all
    that order them."""
    if isinstance(command, PLAN_CHANGES):
        said = f"the latest change of plan {plan.plan_id}"
        latest = _work_told(plan.last_work, said, sensitive_shown)
        require_not_before(occurred_at, latest, plan.last_work_at)
    # An unknown goal (None), or one withheld from the caller, is refused as such.
    match command:
        case DropGoal() if (
            dropped := _shown_goal(plan, command.goal_id, sensitive_shown)
        ) is not None:
            require_not_before(occurred_at, dropped.evaluated, dropped.evaluated_at)
        case AchieveGoal() if (
            achieved := _shown_goal(plan, command.goal_id, sensitive_shown)
        ) is not None:
            require_not_before(occurred_at, achieved.changed, achieved.changed_at)
            agreed = f"the client agreed to goal {command.goal_id} as it stands"
            require_not_before(occurred_at, agreed, achieved.agreed_at)
        case EvaluateProgress():
            first_agreed = f"plan {plan.plan_id} was first agreed"
            shown = plan.agreements_shown(sensitive_shown)
            require_not_before(occurred_at, first_agreed, shown[0] if shown else None)
            for entry in command.goal_progress:
                if (rated := _shown_goal(plan, entry.goal_id, sensitive_shown)) is not None:
                    agreed = f"the client first agreed to goal {entry.goal_id}"
                    require_not_before(occurred_at, agreed, rated.first_agreed_at)
        case _:
            pass


PLAN_WORK = (
    AddGoal,
    ReviseGoal,
    AchieveGoal,
    DropGoal,
    RecordAgreement,
    EvaluateProgress,
    PlanDischarge,
)
"""The commands that work on the current plan."""

PLAN_CHANGES = (AddGoal, ReviseGoal, DropGoal, RecordAgreement)
"""The commands that change the plan or agree to it: each follows the plan's changes and
achievements (``Plan.last_work``), so its changes and agreements are dated in the order they
were made."""

TOLD_AS_SHOWN = (*PLAN_CHANGES, AchieveGoal, EvaluateProgress, CloseCase)
"""The commands decided on whether their caller is shown the case's sensitive values
(``decide``'s ``sensitive_shown``): each names the plan's goals, or its refusal may name a goal,
service or referral withheld from such a caller as special data."""


CARRY_ON_GOALS = (RecordAgreement, AchieveGoal, EvaluateProgress)
"""The commands that carry on the plan's goals as they stand: each counseling task's worker,
the owner it names or else the case's, may counsel (``require_carried_by_licensed_worker``)."""


def deciding_workers(command: Command, facts: CaseFacts, record: CasePlanning) -> set[str]:
    """The workers whose credentials deciding ``command`` on ``record`` needs (the ``staff``
    of ``decide``): those of the counseling tasks it writes, and for a command carrying on the
    plan's goals, those of the active goals' counseling tasks (the owners they name, the case's
    worker for those naming none)."""
    workers = task_workers(planned_goals(command), facts)
    plan = record.plan
    if isinstance(command, CARRY_ON_GOALS) and plan is not None:
        active = [("goal", plan.goals[goal_id].goal) for goal_id in plan.active_goal_ids()]
        workers |= task_workers(active, facts)
    return workers


def planned_goals(command: Command) -> list[PlacedGoal]:
    """The goals ``command`` writes into the plan, each with its request field's path."""
    match command:
        case DraftPlan():
            return [(f"goals[{index}]", goal) for index, goal in enumerate(command.goals)]
        case AddGoal() | ReviseGoal():
            return [("goal", command.goal)]
        case _:
            return []


def _draft(
    record: CasePlanning,
    facts: CaseFacts,
    command: DraftPlan,
    staff: Mapping[str, StaffMember],
    day: date | None,
) -> PlanDrafted:
    if record.plan is not None:
        raise AlreadyExists(
            "plan",
            record.plan.plan_id,
            f"case {command.case_id} already has plan {record.plan.plan_id}; revise its goals",
        )
    _require_new_ids(record, command.plan_id, *(goal.goal_id for goal in command.goals))
    # The case cycle: the plan is made with the client by the worker who carries the case,
    # from the initial assessment; a coordinator may draft it, but not before both exist.
    if facts.worker_id is None:
        raise RuleBroken(
            errors.CASE_NOT_ASSIGNED,
            f"case {command.case_id} has no assigned worker yet; assign one before planning",
            subject=command.case_id,
        )
    if not facts.assessed:
        raise RuleBroken(
            errors.CASE_NOT_ASSESSED,
            f"case {command.case_id} has no initial assessment yet; the plan builds on it",
            subject=command.case_id,
        )
    require_qualified_owners(planned_goals(command), facts, staff, day)
    _require_plan_within_bounds(command.plan_id, command.goals)
    return PlanDrafted(case_id=command.case_id, plan_id=command.plan_id, goals=command.goals)


def _add_goal(
    record: CasePlanning,
    facts: CaseFacts,
    command: AddGoal,
    staff: Mapping[str, StaffMember],
    day: date | None,
) -> GoalAdded:
    plan = _plan(record)
    if command.goal.goal_id in plan.goals:
        raise AlreadyExists("goal", command.goal.goal_id)
    _require_new_ids(record, command.goal.goal_id)
    require_qualified_owners(planned_goals(command), facts, staff, day)
    goals = [state.goal for state in plan.goals.values()]
    _require_plan_within_bounds(plan.plan_id, [*goals, command.goal], goals)
    return GoalAdded(case_id=command.case_id, plan_id=plan.plan_id, goal=command.goal)


def _revise_goal(
    record: CasePlanning,
    facts: CaseFacts,
    command: ReviseGoal,
    staff: Mapping[str, StaffMember],
    day: date | None,
    sensitive_shown: bool,
) -> GoalRevised:
    plan = _plan(record)
    goal = _active_goal(plan, command.goal.goal_id, sensitive_shown)
    if goal.goal == command.goal:
        raise RuleBroken(
            errors.GOAL_UNCHANGED,
            "the revised goal is the same as the current one",
            subject=command.goal.goal_id,
        )
    require_qualified_owners(planned_goals(command), facts, staff, day)
    revised = {
        **{key: state.goal for key, state in plan.goals.items()},
        goal.goal.goal_id: command.goal,
    }
    current = [state.goal for state in plan.goals.values()]
    _require_plan_within_bounds(plan.plan_id, list(revised.values()), current)
    return GoalRevised(
        case_id=command.case_id, plan_id=plan.plan_id, goal=command.goal, reason=command.reason
    )


def _achieve_goal(
    record: CasePlanning,
    facts: CaseFacts,
    command: AchieveGoal,
    staff: Mapping[str, StaffMember],
    day: date | None,
    sensitive_shown: bool,
) -> GoalAchieved:
    plan = _plan(record)
    goal = _active_goal(plan, command.goal_id, sensitive_shown)
    if not plan.agreements_shown(sensitive_shown):
        raise errors.plan_not_agreed(plan.plan_id)
    if not goal.agreed:
        raise errors.goal_not_agreed(command.goal_id)
    require_carried_by_licensed_worker([goal.goal], facts, staff, day)
    return GoalAchieved(
        case_id=command.case_id,
        plan_id=plan.plan_id,
        goal_id=command.goal_id,
        evidence=command.evidence,
    )


def _drop_goal(record: CasePlanning, command: DropGoal, sensitive_shown: bool) -> GoalDropped:
    plan = _plan(record)
    _active_goal(plan, command.goal_id, sensitive_shown)
    return GoalDropped(
        case_id=command.case_id,
        plan_id=plan.plan_id,
        goal_id=command.goal_id,
        reason=command.reason,
    )


def _agree(
    record: CasePlanning,
    facts: CaseFacts,
    command: RecordAgreement,
    staff: Mapping[str, StaffMember],
    day: date | None,
) -> PlanAgreed:
    plan = _plan(record)
    if command.plan_version is not None and command.plan_version != plan.version:
        raise RuleBroken(
            errors.PLAN_VERSION_CHANGED,
            f"the client was shown version {command.plan_version}, the plan is at version "
            f"{plan.version}; show the client the current plan",
            subject=plan.plan_id,
            shown_version=str(command.plan_version),
            current_version=str(plan.version),
        )
    if not plan.changed_since_agreement:
        raise RuleBroken(
            errors.PLAN_ALREADY_AGREED,
            f"the client already agreed to version {plan.agreed_version}",
            subject=plan.plan_id,
            agreed_version=str(plan.agreed_version),
        )
    goal_ids = plan.active_goal_ids()
    if not goal_ids:
        raise RuleBroken(
            errors.PLAN_HAS_NO_GOALS,
            "a plan can only be agreed when it has at least one active goal",
            subject=plan.plan_id,
        )
    # The client agrees to the plan carried out as it stands, by whom it names.
    require_carried_by_licensed_worker(
        [plan.goals[goal_id].goal for goal_id in goal_ids], facts, staff, day
    )
    # An agreement must hold a trace of the client: their signature or their own words.
    if not command.signed_by_client and command.client_statement is None:
        raise RuleBroken(
            errors.AGREEMENT_WITHOUT_CLIENT,
            "an agreement needs the client's signature (signed_by_client) or their statement"
            " (client_statement)",
            subject=plan.plan_id,
            fields="signed_by_client,client_statement",
        )
    return PlanAgreed(
        case_id=command.case_id,
        plan_id=plan.plan_id,
        # The agreement's number, as the event catalog states; the answer reports the version.
        plan_version=plan.agreements + 1,
        goal_ids=goal_ids,
        client_statement=command.client_statement,
        signed_by_client=command.signed_by_client,
    )


def _log_contact(record: CasePlanning, command: LogContact) -> ContactLogged:
    if command.contact_id in record.contact_ids:
        raise AlreadyExists("contact", command.contact_id)
    return ContactLogged(
        case_id=command.case_id,
        contact_id=command.contact_id,
        kind=command.kind,
        summary=command.summary,
        next_follow_up_due=command.next_follow_up_due,
    )


def _evaluate(
    record: CasePlanning,
    facts: CaseFacts,
    command: EvaluateProgress,
    staff: Mapping[str, StaffMember],
    day: date | None,
    sensitive_shown: bool,
) -> ProgressEvaluated:
    plan = _plan(record)
    if command.evaluation_id in record.evaluation_ids:
        raise AlreadyExists("evaluation", command.evaluation_id)
    for entry in command.goal_progress:
        goal = _goal(plan, entry.goal_id, sensitive_shown)
        if goal.status is GoalStatus.DROPPED:
            raise RuleBroken(
                errors.GOAL_DROPPED,
                f"goal {entry.goal_id} was dropped; progress is evaluated on kept goals only",
                subject=entry.goal_id,
            )
    if not plan.agreements_shown(sensitive_shown):
        raise errors.plan_not_agreed(plan.plan_id)
    for entry in command.goal_progress:
        if not plan.goals[entry.goal_id].agreed:
            raise errors.goal_not_agreed(entry.goal_id)
    # An achieved goal's counseling was given: only the goals still worked on are carried on.
    evaluated = [plan.goals[entry.goal_id] for entry in command.goal_progress]
    active = [goal.goal for goal in evaluated if goal.status is GoalStatus.ACTIVE]
    require_carried_by_licensed_worker(active, facts, staff, day)
    return ProgressEvaluated(
        case_id=command.case_id,
        evaluation_id=command.evaluation_id,
        plan_id=plan.plan_id,
        goal_progress=command.goal_progress,
        helping_factors=command.helping_factors,
        hindering_factors=command.hindering_factors,
        plan_adjustment_needed=command.plan_adjustment_needed,
    )


def _plan_discharge(record: CasePlanning, command: PlanDischarge) -> DischargePlanned:
    # The discharge is where the plan leads (its criteria are the goals' ends): it is planned
    # once the case has a plan in its cycle, which needs the assignment and the assessment.
    _plan(record)
    return DischargePlanned(
        case_id=command.case_id,
        target_date=command.target_date,
        criteria=command.criteria,
        aftercare=command.aftercare,
        long_term_maintenance=command.long_term_maintenance,
        note=command.note,
    )


def _close(
    record: CasePlanning, facts: CaseFacts, command: CloseCase, sensitive_shown: bool
) -> CaseClosed:
    # Entries withheld from the caller as special data block the closure all the same, named
    # only to one who may see them: an id their view lists nowhere would tell of the need.
    withheld = None if sensitive_shown else facts.special_entry_ids
    if facts.scheduled_service_ids:
        raise errors.services_still_scheduled(
            command.case_id, facts.scheduled_service_ids, withheld
        )
    # A referral still running keeps a partner agency working on, and reading, the case: it
    # ends (completed or declined) before the case does.
    if facts.running_referral_ids:
        raise errors.referrals_still_running(command.case_id, facts.running_referral_ids, withheld)
    if command.reason is DischargeReason.GOALS_ACHIEVED:
        _require_goals_achieved(record, command.case_id, sensitive_shown)
    return CaseClosed(case_id=command.case_id, reason=command.reason, note=command.note)


def _require_goals_achieved(record: CasePlanning, case_id: str, sensitive_shown: bool) -> None:
    """Closing for goals achieved claims the plan the client agreed to is done: there is one,
    and none of its goals is still being worked on (each was achieved, which needs the client's
    agreement to it, or dropped), at least one achieved. The plan is the current cycle's: a
    reopened case needs a new plan agreed and done, the earlier one proves nothing of why the
    client came back. Other reasons (the client moved, withdrew, died...) end a case whatever
    its plan. Goals withheld from the caller as special data keep the closure back all the
    same, named only to one who may see them, as ``_close``'s entries."""
    plan = record.plan
    if plan is None:
        raise errors.plan_not_drafted(case_id)
    if not plan.agreements_shown(sensitive_shown):
        raise errors.plan_not_agreed(plan.plan_id)
    active = plan.active_goal_ids()
    if active:
        withheld = None if sensitive_shown else _special_goal_ids(plan)
        raise errors.goals_still_active(case_id, active, withheld)
    # A plan whose every goal was dropped was given up, not done: the closure says why instead
    # (the client withdrew, moved, became independent...).
    if not any(goal.status is GoalStatus.ACHIEVED for goal in plan.goals.values()):
        raise RuleBroken(
            errors.NO_GOAL_ACHIEVED,
            f"no goal of plan {plan.plan_id} was achieved (each was dropped); close with the"
            " reason the case ends for",
            subject=case_id,
        )


def _require_plan_within_bounds(
    plan_id: str, goals: Sequence[Goal], before: Sequence[Goal] = ()
) -> None:
    """The plan's goals as they would stand (``goals``; ``before``: as they stand), within
    ``MAX_GOALS_PER_PLAN`` and ``MAX_PLAN_GOALS_BYTES``: every goal stays in the plan (dropped
    and achieved ones too), and the case view shows it whole, so a plan grown past gRPC's
    4 MiB answer could never be read again (each goal alone stays within the event bound). A
    change that does not grow a plan already past a bound (stored before the bounds: a
    revision shortening a goal) is let through, or such a plan could never be made smaller."""
    if len(goals) > MAX_GOALS_PER_PLAN and len(goals) > len(before):
        raise errors.plan_too_large(plan_id, "goals", MAX_GOALS_PER_PLAN)
    size = _goals_bytes(goals)
    if size > MAX_PLAN_GOALS_BYTES and size > _goals_bytes(before):
        raise errors.plan_too_large(plan_id, "bytes of goals", MAX_PLAN_GOALS_BYTES)


def _goals_bytes(goals: Sequence[Goal]) -> int:
    """The goals' size as the catalog's JSON, in bytes (a character may take four)."""
    return sum(len(goal.__pydantic_serializer__.to_json(goal)) for goal in goals)


def _require_new_ids(record: CasePlanning, *identifiers: str) -> None:
    """A new plan or goal does not take the id of a plan or goal of an earlier cycle: events
    and other services (a service's goal_id) would then name two things with one id."""
    for identifier in identifiers:
        if identifier in record.past_ids:
            raise AlreadyExists(
                "id",
                identifier,
                f"{identifier!r} names a plan or goal of an earlier cycle of case"
                f" {record.case_id}; a new plan and its goals take new ids",
            )


def _plan(record: CasePlanning) -> Plan:
    if record.plan is None:
        raise errors.plan_not_drafted(record.case_id)
    return record.plan


def _goal(plan: Plan, goal_id: str, sensitive_shown: bool) -> GoalState:
    goal = _shown_goal(plan, goal_id, sensitive_shown)
    if goal is None:
        raise NotFound("goal", goal_id)
    return goal


def _active_goal(plan: Plan, goal_id: str, sensitive_shown: bool) -> GoalState:
    goal = _goal(plan, goal_id, sensitive_shown)
    if goal.status is not GoalStatus.ACTIVE:
        raise errors.goal_not_active(goal_id, goal.status.value)
    return goal


def _shown_goal(plan: Plan, goal_id: str, sensitive_shown: bool) -> GoalState | None:
    """The plan's goal ``goal_id`` as the caller knows it: ``None`` when the plan has none, and
    when its need is special data and the caller is not shown sensitive values (``decide``'s
    ``sensitive_shown``: a coordinator), whose case view withholds it whole. A command naming it
    is then refused exactly as one naming an unknown goal: refused on its own rules (not
    active, dropped, its counseling task's worker unlicensed), it told them of the goal and
    of what its need calls for."""
    goal = plan.goals.get(goal_id)
    if goal is None or (goal.special and not sensitive_shown):
        return None
    return goal


def _special_goal_ids(plan: Plan) -> frozenset[str]:
    """The ids of the plan's goals whose need is special data, withheld from such a caller."""
    return frozenset(goal_id for goal_id, goal in plan.goals.items() if goal.special)


def _work_told(work: str, said: str, sensitive_shown: bool) -> str:
    """The latest work as an ordering refusal names it to its caller: ``work`` (``goal
    goal-sober was achieved``) to one shown sensitive values, else ``said``, naming no goal,
    whichever work it was: work on a goal withheld from them would name it, an id their view
    lists nowhere, and words kept for that work alone would tell as much."""
    return work if sensitive_shown else said
