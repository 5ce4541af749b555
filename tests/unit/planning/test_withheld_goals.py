"""A goal of a special-data need (substance use) is withheld whole from a reader not entitled
to sensitive values (a coordinator), and so is its id wherever planning would name it: a
service booked toward it, a closure's GOALS_STILL_ACTIVE, an ordering refusal naming the plan's
latest work, and a command naming it, which a coordinator was refused on its own rules (its
counseling task's worker unlicensed: "counseling toward a need that calls for it"). An id no
goal of their view has could only be a withheld one's, telling of the need. Nor is such a
reader shown a plan version counting the goal's changes: a version up with nothing in their
view changed told of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.commands import CommandContext
from casetrail_platform.policy.guard import REDACTED_KEY
from cli.rpc import Person
from events.catalog.cases import DischargeReason
from events.catalog.erasure import ClientErased
from events.catalog.monitoring import GoalProgress, ProgressEvaluated, ProgressRating
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
from tests.support.grpc import refusal, unpacked
from tests.support.identity import acting
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


def dated(actor: Actor, key: str, at: datetime) -> common_pb2.CommandContext:
    moment = Timestamp()
    moment.FromDatetime(at)
    context = common_pb2.CommandContext(idempotency_key=key, occurred_at=moment)
    return acting(Person(actor.user_id, actor.role.value), context)


async def told(call: Awaitable[Any], *named: str) -> tuple[grpc.StatusCode, str, list[str]]:
    """A refusal's code, message and details, each of ``named`` read as ``<id>``."""
    code, status = await refusal(call)

    def unnamed(text: str) -> str:
        for name in named:
            text = text.replace(name, "<id>")
        return text

    return code, unnamed(status.message), [unnamed(str(d)) for d in unpacked(status)]


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


async def test_a_command_naming_a_goal_withheld_from_its_caller_is_refused_as_an_unknown_one(
    planning: Planning,
) -> None:
    """A coordinator achieving or evaluating the substance-use goal was refused
    COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER, "counseling toward a need that calls for it",
    naming the goal, the licences and a referral to make. Every command naming a goal is now
    refused them as one naming no goal of the plan, in the same code, words and details, and
    records nothing; the worker, shown the goal, is still told of its counseling."""
    await agreed_plan(planning, "case-su", goal("goal-walk"), sober())
    unknown = "goal-nowhere"

    def requests(goal_id: str) -> list[Callable[[], Awaitable[Any]]]:
        """A coordinator's AchieveGoal, EvaluateProgress, DropGoal and ReviseGoal naming
        ``goal_id``, each under its own key."""
        stub, case_id = planning.stub, "case-su"

        def context(rpc: str) -> common_pb2.CommandContext:
            return ctx(COORDINATOR, key=f"{rpc}-{goal_id}")

        rated = planning_pb2.GoalProgress(goal_id=goal_id, rating="on_track")
        revised = planning_pb2.Goal(
            goal_id=goal_id, statement="With a group", term="short", need_category="substance_use"
        )
        return [
            lambda: stub.AchieveGoal(
                planning_pb2.AchieveGoalRequest(
                    context=context("achieve"), case_id=case_id, goal_id=goal_id
                )
            ),
            lambda: stub.EvaluateProgress(
                planning_pb2.EvaluateProgressRequest(
                    context=context("evaluate"), case_id=case_id, goal_progress=[rated]
                )
            ),
            lambda: stub.DropGoal(
                planning_pb2.DropGoalRequest(
                    context=context("drop"), case_id=case_id, goal_id=goal_id, reason="moved on"
                )
            ),
            lambda: stub.ReviseGoal(
                planning_pb2.ReviseGoalRequest(
                    context=context("revise"), case_id=case_id, goal=revised, reason="a group"
                )
            ),
        ]

    written = await planning.store.read_all(0)
    pairs = zip(requests("goal-sober"), requests(unknown), strict=True)
    for index, (withheld, unheard) in enumerate(pairs):
        as_withheld = await told(withheld(), "goal-sober")
        assert as_withheld[0] is grpc.StatusCode.NOT_FOUND, index
        assert as_withheld == await told(unheard(), unknown), index
        assert "counseling" not in str(as_withheld)
    assert await planning.store.read_all(0) == written, "nothing recorded"

    # Shown the goal, the case's worker is told what its counseling task needs.
    achieve = planning_pb2.AchieveGoalRequest(
        context=ctx(WORKER, key="worker"), case_id="case-su", goal_id="goal-sober"
    )
    code, details = await refused(planning.stub.AchieveGoal(achieve))
    info = one(details, error_details_pb2.ErrorInfo)
    assert (code, info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER",
    )
    assert info.metadata["goal_id"] == "goal-sober"


async def test_an_ordering_refusal_names_no_goal_to_a_caller_not_shown_it(
    planning: Planning,
) -> None:
    """A change of the plan, or the closure, dated before the plan's latest work was refused
    naming that work: "must not be before goal goal-sober was achieved", to a coordinator whose
    view lists no such goal. To a caller not entitled the latest work is told in words naming
    no goal, whichever it was; its moment still says what to state."""
    await agreed_plan(planning, "case-su", goal("goal-walk"), sober())
    achieved = GoalAchieved(case_id="case-su", plan_id="plan-case-su", goal_id="goal-sober")
    await planning.bus.record(
        PLANNING, "case-su", achieved, actor=WORKER, occurred_at=PLANNED + 2 * H
    )

    async def problem(actor: Actor, key: str, closing: bool) -> str:
        # After the agreement, before the achievement.
        context = dated(actor, key, PLANNED + H + H / 2)
        call = (
            planning.stub.CloseCase(
                planning_pb2.CloseCaseRequest(
                    context=context, case_id="case-su", reason="client_moved"
                )
            )
            if closing
            else planning.stub.DropGoal(
                planning_pb2.DropGoalRequest(
                    context=context, case_id="case-su", goal_id="goal-walk", reason="moved on"
                )
            )
        )
        code, details = await refused(call)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        [violation] = one(details, error_details_pb2.BadRequest).field_violations
        assert violation.field == "context.occurred_at"
        return str(violation.description)

    drop = await problem(COORDINATOR, "c-drop", closing=False)
    assert drop.startswith("must not be before the latest change of plan plan-case-su (")
    closure = await problem(COORDINATOR, "c-close", closing=True)
    assert closure.startswith("must not be before the latest planning work of case case-su (")
    assert "goal-sober" not in drop + closure
    # The case's worker, entitled, is told the work by name.
    drop = await problem(WORKER, "w-drop", closing=False)
    assert drop.startswith("must not be before goal goal-sober was achieved (")


SOBER_GOAL = planning_pb2.Goal(
    goal_id="goal-sober", statement="Stay off heroin", term="short", need_category="substance_use"
)
CLUB_GOAL = planning_pb2.Goal(
    goal_id="goal-club", statement="Join the walking club", term="short", need_category="other"
)


async def plan_as_seen(planning: Planning, case_id: str, reader: str) -> tuple[object, ...]:
    """The plan's version, version agreed, agreement status and goals in ``reader``'s view
    (``coordinator``, or the case's ``worker``)."""
    await planning.bus.sync()
    context = query() if reader == "coordinator" else query(WORKER, "direct_care")
    request = planning_pb2.GetCaseViewRequest(context=context, case_id=case_id)
    plan = (await planning.stub.GetCaseView(request)).plan
    goals = [entry.goal.goal_id for entry in plan.goals]
    return plan.version, plan.agreed_version, plan.agreement_status, goals


async def test_a_goal_withheld_from_a_reader_changes_no_version_they_are_shown(
    planning: Planning,
) -> None:
    """The reviewer's case: a plan drafted with no goal (to be added with the client), the
    worker adding the substance-use goal, then revising and dropping it. The coordinator's view
    showed the same draft with no goal at version 1, then 2, 3, 4."""
    bus, case_id = planning.bus, "case-su"
    opening = (case_opened(case_id), assessed(case_id))
    await bus.record(INTAKE, case_id, *opening, actor=INTAKE_WORKER, occurred_at=PLANNED)
    await bus.record(COORDINATION, case_id, assigned(case_id), occurred_at=PLANNED)
    drafted = PlanDrafted(case_id=case_id, plan_id="plan-su", goals=())
    await bus.record(PLANNING, case_id, drafted, actor=WORKER, occurred_at=PLANNED)
    drafted_as_seen: tuple[object, ...] = (1, 0, "draft", [])
    assert await plan_as_seen(planning, case_id, "coordinator") == drafted_as_seen

    stub = planning.stub
    added = await stub.AddGoal(
        planning_pb2.AddGoalRequest(context=ctx(WORKER, "add"), case_id=case_id, goal=SOBER_GOAL)
    )
    assert added.plan_version == 2
    assert await plan_as_seen(planning, case_id, "coordinator") == drafted_as_seen
    revised = planning_pb2.Goal()
    revised.CopyFrom(SOBER_GOAL)
    revised.statement = "Stay off heroin, with a group"
    await stub.ReviseGoal(
        planning_pb2.ReviseGoalRequest(
            context=ctx(WORKER, "revise"), case_id=case_id, goal=revised, reason="a group"
        )
    )
    await stub.DropGoal(
        planning_pb2.DropGoalRequest(
            context=ctx(WORKER, "drop"), case_id=case_id, goal_id="goal-sober", reason="done"
        )
    )
    assert await plan_as_seen(planning, case_id, "coordinator") == drafted_as_seen
    assert await plan_as_seen(planning, case_id, "worker") == (4, 0, "draft", ["goal-sober"])


async def test_a_coordinator_is_answered_the_version_shown_them_and_the_worker_the_whole(
    planning: Planning,
) -> None:
    """A coordinator's AddGoal and DropGoal answered the version counting a change withheld
    from them, and the plan agreed to awaited agreement again in their view after the worker
    added the withheld goal. They are answered, and shown, the versions of the changes they
    are shown; the case's worker is held to the whole: their agreement naming the version
    before a change withheld from the coordinator is still refused PLAN_VERSION_CHANGED."""
    case_id, stub = "case-su", planning.stub
    await agreed_plan(planning, case_id, goal("goal-walk"))
    added = await stub.AddGoal(
        planning_pb2.AddGoalRequest(
            context=ctx(WORKER, "add-sober"), case_id=case_id, goal=SOBER_GOAL
        )
    )
    assert added.plan_version == 2
    assert await plan_as_seen(planning, case_id, "coordinator") == (1, 1, "agreed", ["goal-walk"])

    def add_club() -> planning_pb2.AddGoalRequest:
        context = ctx(COORDINATOR, "add-club")
        return planning_pb2.AddGoalRequest(context=context, case_id=case_id, goal=CLUB_GOAL)

    assert (await stub.AddGoal(add_club())).plan_version == 2
    walk_and_club = ["goal-walk", "goal-club"]
    awaiting = (2, 1, "awaiting_agreement", walk_and_club)
    assert await plan_as_seen(planning, case_id, "coordinator") == awaiting
    worker_saw = await plan_as_seen(planning, case_id, "worker")
    assert worker_saw[:3] == (3, 1, "awaiting_agreement")

    # A change withheld from the coordinator: the worker was shown version 3, the plan is at 4.
    revised = planning_pb2.Goal()
    revised.CopyFrom(SOBER_GOAL)
    revised.statement = "Stay off heroin, with a group"
    await stub.ReviseGoal(
        planning_pb2.ReviseGoalRequest(
            context=ctx(WORKER, "revise-sober"), case_id=case_id, goal=revised, reason="a group"
        )
    )
    assert await plan_as_seen(planning, case_id, "coordinator") == awaiting

    def agree(key: str, version: int) -> planning_pb2.RecordAgreementRequest:
        return planning_pb2.RecordAgreementRequest(
            context=ctx(WORKER, key), case_id=case_id, plan_version=version, signed_by_client=True
        )

    code, details = await refused(stub.RecordAgreement(agree("agree-3", 3)))
    info = one(details, error_details_pb2.ErrorInfo)
    assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PLAN_VERSION_CHANGED")
    assert (info.metadata["shown_version"], info.metadata["current_version"]) == ("3", "4")
    agreed = await stub.RecordAgreement(agree("agree-4", 4))
    assert (agreed.plan_version, set(agreed.goal_ids)) == (4, {*walk_and_club, "goal-sober"})
    assert await plan_as_seen(planning, case_id, "coordinator") == (2, 2, "agreed", walk_and_club)

    dropped = await stub.DropGoal(
        planning_pb2.DropGoalRequest(
            context=ctx(COORDINATOR, "drop-club"), case_id=case_id, goal_id="goal-club", reason="x"
        )
    )
    assert dropped.plan_version == 3
    # A retry is answered the version the coordinator was shown right after their addition.
    assert (await stub.AddGoal(add_club())).plan_version == 2


async def test_an_agreement_to_goals_withheld_from_a_reader_alone_is_not_shown_them(
    planning: Planning,
) -> None:
    """The reviewer's case: the client agreed to a plan whose one goal is a substance-use need.
    The coordinator was shown it agreed at version 1, the case active, with no goal in it,
    where planning refuses to agree a plan with none (PLAN_HAS_NO_GOALS): told of a withheld
    goal. To them the plan reads as a plan never agreed (a draft, the case still planning), as
    a case whose plan has no goal and no agreement reads, in its view, its listing by stage and
    a closure's refusal; the case's worker is shown the agreement."""
    stub = planning.stub
    await agreed_plan(planning, "case-p", sober())
    # The case it must read as: its plan drafted with no goal, never agreed.
    bus, plain = planning.bus, "case-q"
    opening = (case_opened(plain), assessed(plain))
    await bus.record(INTAKE, plain, *opening, actor=INTAKE_WORKER, occurred_at=PLANNED)
    await bus.record(COORDINATION, plain, assigned(plain), occurred_at=PLANNED)
    drafted = PlanDrafted(case_id=plain, plan_id=f"plan-{plain}", goals=())
    await bus.record(PLANNING, plain, drafted, actor=WORKER, occurred_at=PLANNED)

    async def stage(case_id: str, context: common_pb2.QueryContext) -> str:
        request = planning_pb2.GetCaseViewRequest(context=context, case_id=case_id)
        return str((await stub.GetCaseView(request)).stage)

    never_agreed: tuple[object, ...] = (1, 0, "draft", [])
    assert await plan_as_seen(planning, "case-p", "coordinator") == never_agreed
    assert await plan_as_seen(planning, "case-q", "coordinator") == never_agreed
    assert await stage("case-p", query()) == await stage("case-q", query()) == "planning"
    assert await plan_as_seen(planning, "case-p", "worker") == (1, 1, "agreed", ["goal-sober"])
    assert await stage("case-p", query(WORKER, "direct_care")) == "active"

    async def listed(stage: str) -> list[str]:
        request = planning_pb2.ListCasesRequest(context=query(), stage=stage)
        return sorted(case.case_id for case in (await stub.ListCases(request)).cases)

    assert await listed("active") == []
    assert await listed("planning") == ["case-p", "case-q"]

    async def closure_refused(case_id: str) -> tuple[grpc.StatusCode, str, list[str]]:
        close = planning_pb2.CloseCaseRequest(
            context=ctx(COORDINATOR, key=f"close-{case_id}"),
            case_id=case_id,
            reason="goals_achieved",
        )
        return await told(stub.CloseCase(close), case_id, f"plan-{case_id}")

    refused_plain = await closure_refused("case-q")
    assert "PLAN_NOT_AGREED" in str(refused_plain)
    assert await closure_refused("case-p") == refused_plain


async def test_an_evaluation_is_ordered_after_the_first_agreement_shown_to_its_caller(
    planning: Planning,
) -> None:
    """An evaluation dated before the agreement to the substance-use goal alone was refused the
    coordinator "must not be before plan ... was first agreed" at the moment of that agreement,
    withheld from them. They are told the first agreement they are shown, the one to the goal
    they added; the worker, the first."""
    stub, case_id = planning.stub, "case-p"
    await agreed_plan(planning, case_id, sober())
    club = planning_pb2.AddGoalRequest(
        context=dated(COORDINATOR, "add-club", PLANNED + 2 * H), case_id=case_id, goal=CLUB_GOAL
    )
    assert (await stub.AddGoal(club)).plan_version == 2
    agreed = PlanAgreed(
        case_id=case_id,
        plan_id=f"plan-{case_id}",
        plan_version=2,
        goal_ids=("goal-sober", "goal-club"),
        signed_by_client=True,
    )
    await planning.bus.record(PLANNING, case_id, agreed, actor=WORKER, occurred_at=PLANNED + 3 * H)
    assert await plan_as_seen(planning, case_id, "coordinator") == (
        2,
        2,
        "agreed",
        ["goal-club"],
    )

    async def evaluation_refused(actor: Actor, key: str, goal_id: str, at: datetime) -> str:
        rated = planning_pb2.GoalProgress(goal_id=goal_id, rating="on_track")
        request = planning_pb2.EvaluateProgressRequest(
            context=dated(actor, key, at), case_id=case_id, goal_progress=[rated]
        )
        code, details = await refused(stub.EvaluateProgress(request))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        [violation] = one(details, error_details_pb2.BadRequest).field_violations
        return str(violation.description)

    first_shown = (PLANNED + 3 * H).isoformat()
    first_agreed = f"must not be before plan plan-{case_id} was first agreed"
    told_coordinator = await evaluation_refused(COORDINATOR, "c", "goal-club", PLANNED + H / 2)
    assert told_coordinator.startswith(f"{first_agreed} ({first_shown})"), told_coordinator
    told_worker = await evaluation_refused(WORKER, "w", "goal-sober", PLANNED + H / 2)
    assert told_worker.startswith(f"{first_agreed} ({(PLANNED + H).isoformat()})"), told_worker


async def test_an_evaluation_of_goals_withheld_from_a_reader_alone_is_not_shown_them(
    planning: Planning,
) -> None:
    """The worker evaluated the plan agreed to its substance-use goal alone: the coordinator,
    shown the plan as never agreed, was shown it evaluated that day and needing adjustment,
    where a plan is evaluated only once agreed, and rated only on goals they are not shown. To
    them the plan reads as before that evaluation, as of the latest rating a goal they are
    shown; the case's worker is shown every evaluation."""
    stub, case_id = planning.stub, "case-p"
    await agreed_plan(planning, case_id, sober())
    progress = ProgressEvaluated(
        case_id=case_id,
        evaluation_id="eval-sober",
        plan_id=f"plan-{case_id}",
        goal_progress=(GoalProgress(goal_id="goal-sober", rating=ProgressRating.REGRESSED),),
        plan_adjustment_needed=True,
    )
    await planning.bus.record(PLANNING, case_id, progress, actor=WORKER, occurred_at=PLANNED + H)

    async def evaluation_seen(context: common_pb2.QueryContext) -> tuple[str, bool]:
        request = planning_pb2.GetCaseViewRequest(context=context, case_id=case_id)
        plan = (await stub.GetCaseView(request)).plan
        return plan.last_evaluated_on, plan.adjustment_needed

    assert await plan_as_seen(planning, case_id, "coordinator") == (1, 0, "draft", [])
    assert await evaluation_seen(query()) == ("", False)
    on_the_day = (PLANNED + H).date().isoformat()
    assert await evaluation_seen(query(WORKER, "direct_care")) == (on_the_day, True)


async def test_an_erased_clients_goal_withheld_from_a_reader_stays_withheld(
    planning: Planning,
) -> None:
    """The erasure turns every goal's need into the marker ``erased``, which is no special
    data by its value: the coordinator, shown the plan agreed to the substance-use goal alone
    as never agreed, was then shown the goal, the plan agreed and the case active (listed by
    it), and beside another goal a second entry: told that a goal had been withheld. A need
    that reads erased may have been special data, so it is withheld as one; the case's worker
    is still shown the goal."""
    stub = planning.stub
    await agreed_plan(planning, "case-p", sober())
    await agreed_plan(planning, "case-w", goal("goal-walk"), sober())

    async def seen(case_id: str) -> tuple[object, ...]:
        request = planning_pb2.GetCaseViewRequest(context=query(), case_id=case_id)
        stage = (await stub.GetCaseView(request)).stage
        return *await plan_as_seen(planning, case_id, "coordinator"), stage

    async def listed(stage: str) -> list[str]:
        request = planning_pb2.ListCasesRequest(context=query(), stage=stage)
        return sorted(case.case_id for case in (await stub.ListCases(request)).cases)

    never_agreed = await seen("case-p")
    assert never_agreed == (1, 0, "draft", [], "planning")
    assert await listed("planning") == ["case-p"]
    for case_id in ("case-p", "case-w"):
        erased = ClientErased(
            client_id=f"client-{case_id}", case_ids=(case_id,), request_reference="art-17"
        )
        await planning.bus.record(INTAKE, case_id, erased, actor=INTAKE_WORKER)

    assert await seen("case-p") == never_agreed
    assert await listed("active") == []
    assert "case-p" in await listed("planning")
    request = planning_pb2.GetCaseViewRequest(context=query(), case_id="case-w")
    goals = (await stub.GetCaseView(request)).plan.goals
    assert len(goals) <= 1, "no more goals than before the erasure"
    assert await plan_as_seen(planning, "case-p", "worker") == (1, 1, "agreed", ["goal-sober"])
