"""A goal of a special-data need (substance use) is withheld whole from a reader not entitled
to sensitive values (a coordinator), and so is its id wherever planning would name it: a
service booked toward it, a closure's GOALS_STILL_ACTIVE. An id no goal of their view has could
only be a withheld one's, telling of the need."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import grpc
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.commands import CommandContext
from casetrail_platform.policy.guard import REDACTED_KEY
from events.catalog.cases import DischargeReason
from events.catalog.planning import (
    Goal,
    GoalAchieved,
    GoalTerm,
    PlanAgreed,
    PlanDrafted,
    PlanTask,
    TaskOwner,
    TaskOwnerKind,
)
from events.catalog.values import NeedCategory
from events.envelope import Actor
from services.planning.app.handlers import Dependencies, handle
from services.planning.domain import commands as c
from tests.unit.planning.conftest import Planning
from tests.unit.planning.support import (
    COORDINATION,
    COORDINATOR,
    INTAKE,
    INTAKE_WORKER,
    PLANNING,
    WORKER,
    assessed,
    assigned,
    case_opened,
    ctx,
    delivered,
    goal,
    one,
    query,
    refused,
    reopened,
    scheduled,
)

PLANNED = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
"""When the case was opened and its plan drafted: in the past, so that a command may state a
moment after it (the edge refuses one ahead of the real clock)."""
H = timedelta(hours=1)


def sober() -> Goal:
    """A substance-use goal (special data) whose counseling task the case's worker carries."""
    return Goal(
        goal_id="goal-sober",
        statement="Stay off heroin",
        term=GoalTerm.SHORT,
        need_category=NeedCategory.SUBSTANCE_USE,
        tasks=(
            PlanTask(
                task_id="task-talk",
                description="Weekly sessions",
                owner=TaskOwner(kind=TaskOwnerKind.WORKER),
                target_date=date(2030, 3, 8),
            ),
        ),
    )


async def agreed_plan(planning: Planning, case_id: str, *goals: Goal) -> None:
    """The case opened, assessed and assigned to the worker at ``PLANNED``, its plan of
    ``goals`` drafted then and agreed an hour on (recorded as planning did)."""
    bus = planning.bus
    opening = (case_opened(case_id), assessed(case_id))
    await bus.record(INTAKE, case_id, *opening, actor=INTAKE_WORKER, occurred_at=PLANNED)
    await bus.record(COORDINATION, case_id, assigned(case_id), occurred_at=PLANNED)
    drafted = PlanDrafted(case_id=case_id, plan_id=f"plan-{case_id}", goals=goals)
    ids = tuple(g.goal_id for g in goals)
    agreed = PlanAgreed(
        case_id=case_id,
        plan_id=drafted.plan_id,
        plan_version=1,
        goal_ids=ids,
        signed_by_client=True,
    )
    await bus.record(PLANNING, case_id, drafted, actor=WORKER, occurred_at=PLANNED)
    await bus.record(PLANNING, case_id, agreed, actor=WORKER, occurred_at=PLANNED + H)


async def test_a_service_in_the_view_names_no_goal_withheld_from_its_reader(
    planning: Planning, deps: Dependencies
) -> None:
    """A service (of a kind no special data) booked toward the substance-use goal named it in
    a coordinator's case view, whose plan, and later earlier plans, do not list it. Its reader
    is shown the service without it, and told it was withheld (``services.goal_id``)."""
    await agreed_plan(planning, "case-su", goal("goal-walk"), sober())
    await planning.bus.record(
        COORDINATION,
        "case-su",
        scheduled("case-su", "svc-sober").model_copy(update={"goal_id": "goal-sober"}),
        scheduled("case-su", "svc-walk", day=1).model_copy(update={"goal_id": "goal-walk"}),
    )

    async def read(context: common_pb2.QueryContext) -> tuple[dict[str, str], list[str]]:
        call = planning.stub.GetCaseView(
            planning_pb2.GetCaseViewRequest(context=context, case_id="case-su")
        )
        view = await call
        withheld = dict(await call.trailing_metadata()).get(REDACTED_KEY, "")
        return {s.service_id: s.goal_id for s in view.services}, withheld.split(",")

    links, withheld = await read(query())  # a coordinator
    assert links == {"svc-sober": "", "svc-walk": "goal-walk"}
    assert "services.goal_id" in withheld
    links, withheld = await read(query(WORKER, "direct_care"))
    assert links == {"svc-sober": "goal-sober", "svc-walk": "goal-walk"}
    assert "services.goal_id" not in withheld

    # Closed and reopened: the goal is in an earlier plan, withheld there as well.
    await planning.bus.record(
        COORDINATION,
        "case-su",
        delivered("case-su", "svc-sober"),
        delivered("case-su", "svc-walk"),
    )
    closure = c.CloseCase("case-su", DischargeReason.CLIENT_MOVED, None)
    await handle(deps, CommandContext(WORKER, "close", occurred_at=PLANNED + 2 * H), closure)
    await planning.bus.record(INTAKE, "case-su", reopened("case-su"), actor=INTAKE_WORKER)
    links, withheld = await read(query())
    assert links == {"svc-sober": "", "svc-walk": "goal-walk"}
    assert "services.goal_id" in withheld


async def test_a_goals_achieved_refusal_names_no_goal_withheld_from_its_caller(
    planning: Planning,
) -> None:
    """GOALS_STILL_ACTIVE listed every active goal, the substance-use one withheld from the
    coordinator's view included. To a caller not entitled it lists those shown, in the same
    words whether the case has any other; the withheld goal still keeps the case open."""
    await agreed_plan(planning, "case-su", goal("goal-walk"), sober())
    await agreed_plan(planning, "case-plain", goal("goal-walk"))

    async def refusal_to(actor: Actor, case_id: str, key: str) -> tuple[str, dict[str, str], str]:
        close = planning_pb2.CloseCaseRequest(
            context=ctx(actor, key=f"{key}-{case_id}"), case_id=case_id, reason="goals_achieved"
        )
        code, details = await refused(planning.stub.CloseCase(close))
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        info = one(details, error_details_pb2.ErrorInfo)
        message = one(details, error_details_pb2.PreconditionFailure).violations[0].description
        metadata = {key: value for key, value in info.metadata.items() if key != "subject"}
        return info.reason, metadata, message.replace(case_id, "<case>")

    rule, metadata, message = await refusal_to(COORDINATOR, "case-su", "c1")
    assert (rule, metadata) == (
        "GOALS_STILL_ACTIVE",
        {"goal_ids": "goal-walk", "unlisted": "special_data"},
    )
    assert "goal-sober" not in message
    assert await refusal_to(COORDINATOR, "case-plain", "c1") == (rule, metadata, message)
    # The case's worker, entitled, is told every one.
    _, metadata, _ = await refusal_to(WORKER, "case-su", "w1")
    assert metadata == {"goal_ids": "goal-walk,goal-sober"}

    achieved = GoalAchieved(case_id="case-su", plan_id="plan-case-su", goal_id="goal-walk")
    await planning.bus.record(PLANNING, "case-su", achieved, actor=WORKER, occurred_at=PLANNED + H)
    rule, metadata, message = await refusal_to(COORDINATOR, "case-su", "c2")
    assert (rule, metadata["goal_ids"]) == ("GOALS_STILL_ACTIVE", "")
    assert "none you are shown" in message
    assert "goal-sober" not in message
