"""From planning's gRPC requests to commands and query filters, with every field checked.

Each value is checked against the catalog field it ends up in, and every problem of a request
is reported at once under the request's own field name.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from casetrail.planning.v1 import planning_pb2
from casetrail_platform.commands import CommandContext, derived_id
from events.catalog.assignment import CaseAssigned
from events.catalog.cases import CaseClosed, DischargePlanned
from events.catalog.monitoring import ContactLogged, GoalProgress, ProgressEvaluated
from events.catalog.planning import (
    Goal,
    GoalAchieved,
    GoalDropped,
    GoalRevised,
    PlanAgreed,
    PlanDrafted,
)
from events.catalog.values import NeedCategory
from services.planning.adapters.case_document import CLOSED, OPEN, STAGES
from services.planning.adapters.case_views import CaseFilter
from services.planning.app.handlers import SOURCE
from services.planning.app.validation import Violations
from services.planning.domain.commands import (
    AchieveGoal,
    AddGoal,
    CloseCase,
    DraftPlan,
    DropGoal,
    EvaluateProgress,
    LogContact,
    PlanDischarge,
    RecordAgreement,
    ReviseGoal,
)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def draft_plan(request: planning_pb2.DraftPlanRequest, context: CommandContext) -> DraftPlan:
    v = Violations()
    case_id = v.field(PlanDrafted, "case_id", request.case_id)
    plan_id = v.field(
        PlanDrafted, "plan_id", request.plan_id or derived_id(context, SOURCE, "plan")
    )
    goals = [
        _goal(v, message, f"goals[{index}]", context, f"goal-{index}")
        for index, message in enumerate(request.goals)
    ]
    # Derived ids never repeat; only ids the caller chose can.
    _unique(v, [message.goal_id for message in request.goals], "goals", "goal_id")
    v.raise_if_any()
    return DraftPlan(case_id, plan_id, tuple(goal for goal in goals if goal is not None))


def add_goal(request: planning_pb2.AddGoalRequest, context: CommandContext) -> AddGoal:
    v = Violations()
    case_id = v.field(PlanDrafted, "case_id", request.case_id)
    goal = _required_goal(v, request, "goal", context)
    v.raise_if_any()
    assert goal is not None
    return AddGoal(case_id, goal)


def revise_goal(request: planning_pb2.ReviseGoalRequest, context: CommandContext) -> ReviseGoal:
    v = Violations()
    case_id = v.field(GoalRevised, "case_id", request.case_id)
    if not request.goal.goal_id:
        v.add("goal.goal_id", "required: the id of the goal revised")
    goal = _required_goal(v, request, "goal", context)
    reason = v.field(GoalRevised, "reason", request.reason)
    v.raise_if_any()
    assert goal is not None
    return ReviseGoal(case_id, goal, reason)


def achieve_goal(request: planning_pb2.AchieveGoalRequest) -> AchieveGoal:
    v = Violations()
    case_id = v.field(GoalAchieved, "case_id", request.case_id)
    goal_id = v.field(GoalAchieved, "goal_id", request.goal_id)
    evidence = v.field(GoalAchieved, "evidence", request.evidence or None)
    v.raise_if_any()
    return AchieveGoal(case_id, goal_id, evidence)


def drop_goal(request: planning_pb2.DropGoalRequest) -> DropGoal:
    v = Violations()
    case_id = v.field(GoalDropped, "case_id", request.case_id)
    goal_id = v.field(GoalDropped, "goal_id", request.goal_id)
    reason = v.field(GoalDropped, "reason", request.reason)
    v.raise_if_any()
    return DropGoal(case_id, goal_id, reason)


def record_agreement(request: planning_pb2.RecordAgreementRequest) -> RecordAgreement:
    v = Violations()
    case_id = v.field(PlanAgreed, "case_id", request.case_id)
    if request.plan_version < 0:
        v.add("plan_version", "must not be negative (0 agrees to the current version)")
    statement = v.field(PlanAgreed, "client_statement", request.client_statement or None)
    v.raise_if_any()
    return RecordAgreement(
        case_id, request.plan_version or None, statement, request.signed_by_client
    )


def log_contact(
    request: planning_pb2.LogContactRequest, context: CommandContext, today: date | None
) -> LogContact:
    """``today``: the contact's day; ``None`` when the server's day is not to be checked."""
    v = Violations()
    case_id = v.field(ContactLogged, "case_id", request.case_id)
    contact_id = v.field(
        ContactLogged, "contact_id", request.contact_id or derived_id(context, SOURCE, "contact")
    )
    kind = v.field(ContactLogged, "kind", request.kind)
    summary = v.field(ContactLogged, "summary", request.summary)
    due = v.field(ContactLogged, "next_follow_up_due", request.next_follow_up_due or None)
    if due is not None and today is not None and due < today:
        v.add("next_follow_up_due", f"must not be before the contact's date ({today})")
    v.raise_if_any()
    return LogContact(case_id, contact_id, kind, summary, due)


def evaluate_progress(
    request: planning_pb2.EvaluateProgressRequest, context: CommandContext
) -> EvaluateProgress:
    v = Violations()
    case_id = v.field(ProgressEvaluated, "case_id", request.case_id)
    evaluation_id = v.field(
        ProgressEvaluated,
        "evaluation_id",
        request.evaluation_id or derived_id(context, SOURCE, "evaluation"),
    )
    if not request.goal_progress:
        v.add("goal_progress", "at least one goal's progress is required")
    progress = [
        v.build(
            GoalProgress,
            f"goal_progress[{index}]",
            goal_id=entry.goal_id,
            rating=entry.rating,
            note=entry.note or None,
        )
        for index, entry in enumerate(request.goal_progress)
    ]
    _unique(v, [entry.goal_id for entry in request.goal_progress], "goal_progress", "goal_id")
    helping = v.field(ProgressEvaluated, "helping_factors", tuple(request.helping_factors))
    hindering = v.field(ProgressEvaluated, "hindering_factors", tuple(request.hindering_factors))
    v.raise_if_any()
    return EvaluateProgress(
        case_id,
        evaluation_id,
        tuple(p for p in progress if p is not None),
        helping,
        hindering,
        request.plan_adjustment_needed,
    )


def plan_discharge(request: planning_pb2.PlanDischargeRequest, today: date | None) -> PlanDischarge:
    """``today``: the day it is planned; ``None`` when the server's day is not to be checked."""
    v = Violations()
    case_id = v.field(DischargePlanned, "case_id", request.case_id)
    target = v.field(DischargePlanned, "target_date", request.target_date or None)
    if target is not None and today is not None and target < today:
        v.add("target_date", f"must not be before the day the discharge is planned ({today})")
    criteria = v.field(DischargePlanned, "criteria", tuple(request.criteria))
    aftercare = v.field(DischargePlanned, "aftercare", tuple(request.aftercare))
    note = v.field(DischargePlanned, "note", request.note or None)
    v.raise_if_any()
    return PlanDischarge(case_id, target, criteria, aftercare, request.long_term_maintenance, note)


def close_case(request: planning_pb2.CloseCaseRequest) -> CloseCase:
    v = Violations()
    case_id = v.field(CaseClosed, "case_id", request.case_id)
    reason = v.field(CaseClosed, "reason", request.reason)
    note = v.field(CaseClosed, "note", request.note or None)
    v.raise_if_any()
    return CloseCase(case_id, reason, note)


def case_id_of(request: planning_pb2.GetCaseViewRequest) -> str:
    v = Violations()
    case_id: str = v.field(PlanDrafted, "case_id", request.case_id)
    v.raise_if_any()
    return case_id


def case_filter(request: planning_pb2.ListCasesRequest, today: date) -> tuple[CaseFilter, int]:
    v = Violations()
    if request.status and request.status not in (OPEN, CLOSED):
        v.add("status", f"must be {OPEN} or {CLOSED}")
    if request.stage and request.stage not in STAGES:
        v.add("stage", f"must be one of: {', '.join(STAGES)}")
    # A filter too is checked as the id it names (before the policy decides): a malformed
    # one would be answered as an empty list.
    worker_id = v.field(CaseAssigned, "worker_id", request.worker_id) if request.worker_id else None
    need = v.value(NeedCategory, request.need, "need") if request.need else None
    overdue_before = (
        v.value(date, request.overdue_before, "overdue_before")
        if request.overdue_before
        else (today if request.overdue_now else None)
    )
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        v.add("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    v.raise_if_any()
    where = CaseFilter(
        worker_id=worker_id,
        status=request.status or None,
        stage=request.stage or None,
        need=None if need is None else need.value,
        overdue_before=overdue_before,
    )
    return where, request.page_size or DEFAULT_PAGE_SIZE


def _required_goal(
    v: Violations,
    request: planning_pb2.AddGoalRequest | planning_pb2.ReviseGoalRequest,
    path: str,
    context: CommandContext,
) -> Goal | None:
    if not request.HasField("goal"):
        v.add(path, "required")
        return None
    return _goal(v, request.goal, path, context, "goal")


def _goal(
    v: Violations, message: planning_pb2.Goal, path: str, context: CommandContext, purpose: str
) -> Goal | None:
    tasks = [
        {
            "task_id": task.task_id or derived_id(context, SOURCE, f"{purpose}-task-{index}"),
            "description": task.description,
            "owner": (
                {"kind": task.owner.kind, "owner_id": task.owner.owner_id or None}
                if task.HasField("owner")
                else None
            ),
            "target_date": task.target_date or None,
        }
        for index, task in enumerate(message.tasks)
    ]
    goal = v.build(
        Goal,
        path,
        goal_id=message.goal_id or derived_id(context, SOURCE, purpose),
        statement=message.statement,
        term=message.term,
        need_category=message.need_category,
        objectives=tuple(message.objectives),
        tasks=tasks,
    )
    return goal


def _unique(v: Violations, ids: Sequence[str], path: str, field: str) -> None:
    """Each id the caller chose once, compared as the event will hold it: the catalog strips
    whitespace, so ``"g1"`` and ``"g1 "`` repeat. An empty id is derived or refused, and one
    breaking the id rule is refused, each on its own."""
    first_at: dict[str, int] = {}
    for index, identifier in enumerate(raw.strip() for raw in ids):
        if not identifier:
            continue
        if identifier in first_at:
            v.add(
                f"{path}[{index}].{field}",
                f"repeats {path}[{first_at[identifier]}].{field} ({identifier})",
            )
        else:
            first_at[identifier] = index
