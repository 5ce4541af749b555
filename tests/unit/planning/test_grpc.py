"""The Planning API through a real gRPC server on port 0: statuses, details, retries, views."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2
from cli.rpc import Person
from events.catalog.assignment import CaseAssigned, CredentialKind, WorkerCredential
from events.catalog.referrals import ReferralCompleted, ReferralDeclined, ReferralWithdrawn
from events.envelope import Actor
from tests.support.identity import acting
from tests.unit.planning.conftest import NOW, Planning
from tests.unit.planning.support import (
    COORDINATION,
    COORDINATOR,
    INTAKE,
    INTAKE_WORKER,
    OTHER_WORKER,
    RECEPTIONIST,
    SUPERVISOR,
    WORKER,
    assigned,
    cancelled,
    case_opened,
    ctx,
    delivered,
    one,
    query,
    reassigned,
    referral,
    referral_accepted,
    refused,
    scheduled,
)


def goal(goal_id: str = "goal-walk", statement: str = "Walk to the shop") -> planning_pb2.Goal:
    return planning_pb2.Goal(
        goal_id=goal_id,
        statement=statement,
        term="short",
        need_category="physical_therapy",
        objectives=["200 m with a cane"],
        tasks=[
            planning_pb2.Task(
                description="Book transport",
                owner=planning_pb2.TaskOwner(kind="worker", owner_id="worker-ana"),
                target_date="2030-03-08",
            )
        ],
    )


async def draft(planning: Planning, case_id: str = "case-1", *goals: planning_pb2.Goal) -> Any:
    return await planning.stub.DraftPlan(
        planning_pb2.DraftPlanRequest(
            context=ctx(key=f"draft-{case_id}"), case_id=case_id, goals=list(goals)
        )
    )


async def test_a_plan_without_goals_is_refused_agreement_naming_the_rule(
    planning: Planning,
) -> None:
    await planning.bus.open_case("case-1")
    drafted = await draft(planning)

    code, details = await refused(
        planning.stub.RecordAgreement(
            planning_pb2.RecordAgreementRequest(
                context=ctx(key="agree"), case_id="case-1", signed_by_client=True
            )
        )
    )

    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert one(details, error_details_pb2.ErrorInfo).reason == "PLAN_HAS_NO_GOALS"
    [violation] = one(details, error_details_pb2.PreconditionFailure).violations
    assert (violation.type, violation.subject) == ("PLAN_HAS_NO_GOALS", drafted.plan_id)


async def test_closure_is_refused_while_services_are_scheduled_until_they_end(
    planning: Planning,
) -> None:
    bus = planning.bus
    await bus.open_case("case-1")
    await bus.record(COORDINATION, "case-1", scheduled("case-1", "svc-2"))
    await bus.record(COORDINATION, "case-1", scheduled("case-1", "svc-1", day=1))
    close = planning_pb2.CloseCaseRequest(
        context=ctx(key="close"), case_id="case-1", reason="client_moved"
    )

    code, details = await refused(planning.stub.CloseCase(close))

    assert code is grpc.StatusCode.FAILED_PRECONDITION
    info = one(details, error_details_pb2.ErrorInfo)
    assert info.reason == "SERVICES_STILL_SCHEDULED"
    assert info.metadata["service_ids"] == "svc-1,svc-2"
    assert await planning.store.read_all(0) == [], "a refusal writes nothing"

    await bus.record(COORDINATION, "case-1", delivered("case-1", "svc-1"))
    await bus.record(COORDINATION, "case-1", cancelled("case-1", "svc-2"))
    closed = await planning.stub.CloseCase(close)
    assert closed.result.version == 1
    await bus.sync()

    view = await planning.stub.GetCaseView(
        planning_pb2.GetCaseViewRequest(context=query(), case_id="case-1")
    )
    assert (view.status, view.stage, view.closure_reason) == ("closed", "closed", "client_moved")


async def test_a_retried_command_returns_the_first_result_and_writes_nothing(
    planning: Planning,
) -> None:
    await planning.bus.open_case("case-1")
    first = await draft(planning, "case-1", goal(goal_id=""))
    written = await planning.store.read_all(0)

    again = await draft(planning, "case-1", goal(goal_id=""))

    assert again == first
    assert first.plan_id
    assert len(first.goal_ids) == 1
    assert await planning.store.read_all(0) == written
    # The same key with another request is refused, never answered with the first result.
    code, details = await refused(
        planning.stub.DraftPlan(
            planning_pb2.DraftPlanRequest(
                context=ctx(key="draft-case-1"),
                case_id="case-1",
                goals=[goal(goal_id="goal-other")],
            )
        )
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert one(details, error_details_pb2.ErrorInfo).reason == "IDEMPOTENCY_KEY_REUSED"
    assert await planning.store.read_all(0) == written


async def test_bad_fields_are_all_reported_by_request_field_name(planning: Planning) -> None:
    bad_goal = goal(statement="")
    bad_goal.term = "someday"
    # A malformed date is the edge's to refuse, before this check (test_dated_fields_gaps.py).
    request = planning_pb2.DraftPlanRequest(
        context=ctx(), case_id="bad id!", goals=[bad_goal, goal(goal_id="goal-walk")]
    )

    code, details = await refused(planning.stub.DraftPlan(request))

    assert code is grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in one(details, error_details_pb2.BadRequest).field_violations}
    assert fields == {
        "case_id",
        "goals[0].statement",
        "goals[0].term",
        "goals[1].goal_id",
    }


async def test_the_context_is_checked_too(planning: Planning) -> None:
    request = planning_pb2.LogContactRequest(
        context=acting(Person("wizard-1", "coordinator"), common_pb2.CommandContext()),
        case_id="case-1",
        kind="phone_call",
        summary="called",
        next_follow_up_due="2030-02-01",
    )

    code, details = await refused(planning.stub.LogContact(request))

    assert code is grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in one(details, error_details_pb2.BadRequest).field_violations}
    # ... together with the rest of the request: the follow-up is due before today.
    assert fields == {"context.idempotency_key", "next_follow_up_due"}


async def test_a_follow_up_cannot_be_due_before_the_contact(planning: Planning) -> None:
    request = planning_pb2.LogContactRequest(
        context=ctx(),
        case_id="case-1",
        kind="phone_call",
        summary="called",
        next_follow_up_due="2030-02-01",
    )

    code, details = await refused(planning.stub.LogContact(request))

    assert code is grpc.StatusCode.INVALID_ARGUMENT
    [violation] = one(details, error_details_pb2.BadRequest).field_violations
    assert violation.field == "next_follow_up_due"


async def test_nothing_is_dated_before_the_case_was_opened(planning: Planning) -> None:
    await planning.bus.open_case("case-1")  # opened at START, in 2030: today is before it
    context = ctx(key="backdated")
    context.occurred_at.FromDatetime(datetime(2001, 1, 1, tzinfo=UTC))
    contact = planning_pb2.LogContactRequest(
        context=context, case_id="case-1", kind="phone_call", summary="called"
    )

    code, details = await refused(planning.stub.LogContact(contact))

    assert code is grpc.StatusCode.INVALID_ARGUMENT
    [violation] = one(details, error_details_pb2.BadRequest).field_violations
    assert violation.field == "context.occurred_at"
    assert "must not be before case case-1 was opened" in violation.description
    assert await planning.store.read_stream("case-case-1") == []
    # Another worker is not told when the case was opened.
    context.CopyFrom(ctx(OTHER_WORKER, key="backdated"))
    context.occurred_at.FromDatetime(datetime(2001, 1, 1, tzinfo=UTC))
    code, _ = await refused(planning.stub.LogContact(contact))
    assert code is grpc.StatusCode.PERMISSION_DENIED


async def test_unknown_cases_are_not_found(planning: Planning) -> None:
    request = planning_pb2.DraftPlanRequest(
        context=ctx(COORDINATOR, key="draft-unknown"), case_id="case-nobody-opened"
    )
    code, details = await refused(planning.stub.DraftPlan(request))

    assert code is grpc.StatusCode.NOT_FOUND
    resource = one(details, error_details_pb2.ResourceInfo)
    assert (resource.resource_type, resource.resource_name) == ("case", "case-nobody-opened")


async def test_a_worker_is_refused_alike_for_unknown_cases_and_other_workers_cases(
    planning: Planning,
) -> None:
    await planning.bus.open_case("case-1", OTHER_WORKER)

    answers = []
    for case_id in ("case-1", "case-nobody-opened"):
        code, details = await refused(draft(planning, case_id))
        answers.append((code, one(details, error_details_pb2.ErrorInfo).reason))

    assert answers[0] == answers[1]
    assert answers[0][0] is grpc.StatusCode.PERMISSION_DENIED


async def test_a_second_plan_already_exists(planning: Planning) -> None:
    await planning.bus.open_case("case-1")
    await draft(planning, "case-1", goal())

    code, _ = await refused(
        planning.stub.DraftPlan(
            planning_pb2.DraftPlanRequest(context=ctx(key="other"), case_id="case-1")
        )
    )

    assert code is grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize("actor", [OTHER_WORKER, SUPERVISOR, RECEPTIONIST])
async def test_only_the_assigned_worker_and_coordinators_draft_plans(
    planning: Planning, actor: Actor
) -> None:
    await planning.bus.open_case("case-1")

    code, details = await refused(
        planning.stub.DraftPlan(planning_pb2.DraftPlanRequest(context=ctx(actor), case_id="case-1"))
    )

    assert code is grpc.StatusCode.PERMISSION_DENIED
    info = one(details, error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["role"]) == ("ROLE_NOT_ALLOWED", actor.role.value)


async def test_a_stale_expected_version_is_aborted(planning: Planning) -> None:
    await planning.bus.open_case("case-1")
    await draft(planning, "case-1", goal())
    stale = ctx(key="add")
    stale.expected_version = 7

    code, _ = await refused(
        planning.stub.AddGoal(
            planning_pb2.AddGoalRequest(context=stale, case_id="case-1", goal=goal("goal-2"))
        )
    )

    assert code is grpc.StatusCode.ABORTED


async def test_closure_is_refused_while_referrals_run_until_the_partner_ends_them(
    planning: Planning,
) -> None:
    bus = planning.bus
    await bus.open_case("case-1")
    await bus.record(COORDINATION, "case-1", referral("case-1", "ref-1"))
    await bus.record(COORDINATION, "case-1", referral_accepted("case-1", "ref-1"))
    await bus.record(COORDINATION, "case-1", referral("case-1", "ref-2"))
    close = planning_pb2.CloseCaseRequest(
        context=ctx(key="close"), case_id="case-1", reason="client_moved"
    )

    code, details = await refused(planning.stub.CloseCase(close))

    assert code is grpc.StatusCode.FAILED_PRECONDITION
    info = one(details, error_details_pb2.ErrorInfo)
    assert info.reason == "REFERRALS_STILL_RUNNING"
    assert info.metadata["referral_ids"] == "ref-1,ref-2"
    assert await planning.store.read_all(0) == [], "a refusal writes nothing"

    provider = referral("case-1").provider.provider_id
    await bus.record(
        COORDINATION,
        "case-1",
        ReferralCompleted(
            case_id="case-1", referral_id="ref-1", provider_id=provider, outcome="ok"
        ),
        ReferralDeclined(
            case_id="case-1", referral_id="ref-2", provider_id=provider, reason="full"
        ),
    )
    closed = await planning.stub.CloseCase(close)
    assert closed.result.version == 1


async def test_a_withdrawn_referral_no_longer_holds_the_closure(planning: Planning) -> None:
    bus = planning.bus
    await bus.open_case("case-1")
    await bus.record(COORDINATION, "case-1", referral("case-1", "ref-1"))
    await bus.record(COORDINATION, "case-1", referral_accepted("case-1", "ref-1"))
    close = planning_pb2.CloseCaseRequest(
        context=ctx(key="close"), case_id="case-1", reason="client_moved"
    )
    code, _ = await refused(planning.stub.CloseCase(close))
    assert code is grpc.StatusCode.FAILED_PRECONDITION

    provider = referral("case-1").provider.provider_id
    await bus.record(
        COORDINATION,
        "case-1",
        ReferralWithdrawn(
            case_id="case-1", referral_id="ref-1", provider_id=provider, reason="moved away"
        ),
    )
    view = await planning.stub.GetCaseView(
        planning_pb2.GetCaseViewRequest(context=query(), case_id="case-1")
    )
    assert [(r.referral_id, r.status) for r in view.referrals] == [("ref-1", "withdrawn")]
    closed = await planning.stub.CloseCase(close)
    assert closed.result.version == 1


async def test_a_plan_waits_for_the_initial_assessment(planning: Planning) -> None:
    await planning.bus.open_case("case-1", assess=False)
    draft = planning_pb2.DraftPlanRequest(
        context=ctx(key="draft"), case_id="case-1", goals=[goal()]
    )

    code, details = await refused(planning.stub.DraftPlan(draft))

    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert one(details, error_details_pb2.ErrorInfo).reason == "CASE_NOT_ASSESSED"
    assert await planning.store.read_all(0) == [], "a refusal writes nothing"


async def test_plan_versions_through_the_api(planning: Planning) -> None:
    await planning.bus.open_case("case-1")
    await draft(planning, "case-1", goal())
    agreed = await planning.stub.RecordAgreement(
        planning_pb2.RecordAgreementRequest(
            context=ctx(key="agree-1"),
            case_id="case-1",
            plan_version=1,
            client_statement="Yes, that is what I want",
            signed_by_client=True,
        )
    )
    added = await planning.stub.AddGoal(
        planning_pb2.AddGoalRequest(
            context=ctx(key="add-1"), case_id="case-1", goal=goal("goal-club", "Join the club")
        )
    )
    code, details = await refused(
        planning.stub.RecordAgreement(
            planning_pb2.RecordAgreementRequest(
                context=ctx(key="agree-2"), case_id="case-1", plan_version=1
            )
        )
    )

    assert (agreed.plan_version, list(agreed.goal_ids)) == (1, ["goal-walk"])
    assert (added.goal_id, added.plan_version) == ("goal-club", 2)
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert one(details, error_details_pb2.ErrorInfo).reason == "PLAN_VERSION_CHANGED"


async def test_an_agreement_names_the_version_the_client_was_shown_of_every_change(
    planning: Planning,
) -> None:
    async def plan_versions() -> tuple[int, int]:
        await planning.bus.sync()
        view = await planning.stub.GetCaseView(
            planning_pb2.GetCaseViewRequest(context=query(), case_id="case-1")
        )
        return view.plan.version, view.plan.agreed_version

    async def agree(key: str, version: int) -> Any:
        return await planning.stub.RecordAgreement(
            planning_pb2.RecordAgreementRequest(
                context=ctx(key=key), case_id="case-1", plan_version=version, signed_by_client=True
            )
        )

    async def revise(key: str, statement: str) -> Any:
        return await planning.stub.ReviseGoal(
            planning_pb2.ReviseGoalRequest(
                context=ctx(key=key), case_id="case-1", goal=goal(statement=statement), reason="r"
            )
        )

    async def refused_as_changed(version: int, current: int) -> None:
        written = await planning.store.read_all(0)
        code, details = await refused(agree(f"agree-shown-{version}", version))
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        info = one(details, error_details_pb2.ErrorInfo)
        assert info.reason == "PLAN_VERSION_CHANGED"
        assert info.metadata["current_version"] == str(current)
        assert await planning.store.read_all(0) == written, "a refusal writes nothing"

    await planning.bus.open_case("case-1")
    await draft(planning, "case-1", goal())
    assert await plan_versions() == (1, 0)
    # A goal added to the draft after the client was shown it.
    added = await planning.stub.AddGoal(
        planning_pb2.AddGoalRequest(
            context=ctx(key="add"), case_id="case-1", goal=goal("goal-move", "Move")
        )
    )
    assert added.plan_version == 2
    await refused_as_changed(1, current=2)
    agreed = await agree("agree-2", 2)
    assert (agreed.plan_version, list(agreed.goal_ids)) == (2, ["goal-walk", "goal-move"])
    # Revised (the client shown that version), then revised again.
    assert (await revise("revise-1", "Walk 1 km")).plan_version == 3
    assert (await revise("revise-2", "Walk 5 km daily")).plan_version == 4
    assert await plan_versions() == (4, 2)
    await refused_as_changed(3, current=4)
    first = await agree("agree-4", 4)
    assert first.plan_version == 4
    assert await plan_versions() == (4, 4)
    # A retry answers as the first time, whatever changed since.
    assert (await revise("revise-3", "Walk 6 km daily")).plan_version == 5
    assert await agree("agree-4", 4) == first
    assert await plan_versions() == (5, 4)


async def test_the_case_view_and_lists_over_the_api(planning: Planning) -> None:
    bus = planning.bus
    await bus.open_case("case-1")
    await bus.open_case("case-2", OTHER_WORKER)
    await draft(planning, "case-1", goal())
    await planning.stub.LogContact(
        planning_pb2.LogContactRequest(
            context=ctx(key="contact"),
            case_id="case-1",
            kind="home_visit",
            summary="Managing the stairs",
            next_follow_up_due="2030-03-01",
        )
    )
    await bus.sync()

    view = await planning.stub.GetCaseView(
        planning_pb2.GetCaseViewRequest(context=query(WORKER, "direct_care"), case_id="case-1")
    )
    assert (view.stage, view.worker.worker_id, view.next_follow_up_due) == (
        "planning",
        "worker-ana",
        "2030-03-01",
    )
    assert [g.goal.goal_id for g in view.plan.goals] == ["goal-walk"]
    assert view.plan.goals[0].goal.tasks[0].target_date == "2030-03-08"

    overdue = await planning.stub.ListCases(
        planning_pb2.ListCasesRequest(context=query(), overdue_before="2030-03-02")
    )
    assert [case.case_id for case in overdue.cases] == ["case-1"]
    not_yet = await planning.stub.ListCases(
        planning_pb2.ListCasesRequest(context=query(), overdue_now=True)
    )
    assert list(not_yet.cases) == []
    own = await planning.stub.ListCases(planning_pb2.ListCasesRequest(context=query(WORKER)))
    assert [case.case_id for case in own.cases] == ["case-1"]


async def test_case_views_are_need_to_know(planning: Planning) -> None:
    await planning.bus.open_case("case-1")

    other, _ = await refused(
        planning.stub.GetCaseView(
            planning_pb2.GetCaseViewRequest(context=query(OTHER_WORKER), case_id="case-1")
        )
    )
    others_list, _ = await refused(
        planning.stub.ListCases(
            planning_pb2.ListCasesRequest(context=query(OTHER_WORKER), worker_id="worker-ana")
        )
    )
    bad_purpose, details = await refused(
        planning.stub.GetCaseView(
            planning_pb2.GetCaseViewRequest(context=query(purpose="curiosity"), case_id="case-1")
        )
    )

    assert other is others_list is grpc.StatusCode.PERMISSION_DENIED
    assert bad_purpose is grpc.StatusCode.INVALID_ARGUMENT
    [violation] = one(details, error_details_pb2.BadRequest).field_violations
    assert violation.field == "context.purpose"


async def test_a_supervisor_closes_only_a_case_of_their_team(planning: Planning) -> None:
    bus = planning.bus
    await bus.record(INTAKE, "case-1", case_opened("case-1"), actor=INTAKE_WORKER)
    await bus.record(
        COORDINATION,
        "case-1",
        CaseAssigned(
            case_id="case-1",
            worker_id=WORKER.user_id,
            worker_role=WORKER.role,
            worker_team="team-east",
            reason="fits",
        ),
    )

    def close(team: str, key: str) -> Awaitable[Any]:
        supervisor = Person("super-1", "supervisor", team=team)
        request = planning_pb2.CloseCaseRequest(
            context=acting(supervisor, common_pb2.CommandContext(idempotency_key=key)),
            case_id="case-1",
            reason="client_moved",
        )
        answer: Awaitable[Any] = planning.stub.CloseCase(request)
        return answer

    code, details = await refused(close("team-west", "west"))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert one(details, error_details_pb2.ErrorInfo).reason == "NO_RELATIONSHIP"
    assert await planning.store.read_all(0) == [], "a refusal writes nothing"
    closed = await close("team-east", "east")
    assert closed.result.version == 1


def counseling(owner_id: str) -> planning_pb2.Goal:
    counsel = goal(goal_id="goal-cope", statement="Come to terms with the fall")
    counsel.need_category = "mental_health"
    counsel.tasks[0].description = "Weekly sessions"
    counsel.tasks[0].owner.owner_id = owner_id
    return counsel


async def test_counseling_tasks_go_only_to_workers_whose_licence_planning_learned(
    planning: Planning,
) -> None:
    # Planning learns roles and credentials from the case assignments on the bus.
    bus = planning.bus
    await bus.open_case("case-1", OTHER_WORKER)  # a case manager: may not counsel
    await bus.open_case("case-2", None)
    licensed = assigned("case-2", WORKER).model_copy(
        update={
            "credentials": (
                WorkerCredential(
                    kind=CredentialKind.LICENCE, name="LCSW", valid_until=date(2030, 6, 30)
                ),
            )
        }
    )
    await bus.record(COORDINATION, "case-2", licensed)

    def drafting(case_id: str, owner_id: str, actor: Actor) -> planning_pb2.DraftPlanRequest:
        return planning_pb2.DraftPlanRequest(
            context=ctx(actor, key=f"draft-{case_id}-{owner_id}"),
            case_id=case_id,
            goals=[counseling(owner_id)],
        )

    code, details = await refused(
        planning.stub.DraftPlan(drafting("case-1", OTHER_WORKER.user_id, OTHER_WORKER))
    )

    assert code is grpc.StatusCode.FAILED_PRECONDITION
    info = one(details, error_details_pb2.ErrorInfo)
    assert info.reason == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert (info.metadata["field"], info.metadata["worker_id"]) == (
        "goals[0].tasks[0].owner.owner_id",
        OTHER_WORKER.user_id,
    )
    assert await planning.store.read_all(0) == [], "a refusal writes nothing"
    # The licensed social worker, known from another case's assignment, may take it on.
    await planning.stub.DraftPlan(drafting("case-1", WORKER.user_id, OTHER_WORKER))
    await planning.stub.DraftPlan(drafting("case-2", WORKER.user_id, WORKER))


async def test_a_counseling_task_dated_in_the_past_needs_a_licence_valid_today(
    planning: Planning,
) -> None:
    """A licence lapsed the day before (the servicer's clock: NOW) was refused for a task dated
    after it, yet let through for the same task dated before it: the lapsed licence's past
    planned counseling still to come."""
    bus = planning.bus
    await bus.open_case("case-1", None)
    lapsed = WorkerCredential(
        kind=CredentialKind.LICENCE, name="LCSW", valid_until=NOW.date() - timedelta(days=1)
    )
    await bus.record(
        COORDINATION,
        "case-1",
        assigned("case-1", WORKER).model_copy(update={"credentials": (lapsed,)}),
    )
    counsel = counseling(WORKER.user_id)
    counsel.tasks[0].target_date = "2030-02-20"

    code, details = await refused(
        planning.stub.DraftPlan(
            planning_pb2.DraftPlanRequest(
                context=ctx(key="draft-past-task"), case_id="case-1", goals=[counsel]
            )
        )
    )

    assert code is grpc.StatusCode.FAILED_PRECONDITION
    info = one(details, error_details_pb2.ErrorInfo)
    assert info.reason == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert info.metadata["field"] == "goals[0].tasks[0].owner.owner_id"
    assert await planning.store.read_all(0) == [], "a refusal writes nothing"


async def test_a_transferred_counseling_task_is_carried_on_only_once_a_licensed_worker_owns_it(
    planning: Planning,
) -> None:
    """Drafted and agreed with a licensed social worker carrying the case, a counseling task
    naming no owner went to the case manager the case was transferred to: she achieved its
    goal and agreed the plan, though adding the same task was refused her."""
    bus = planning.bus
    await bus.open_case("case-1", None)
    licence = WorkerCredential(
        kind=CredentialKind.LICENCE, name="LCSW", valid_until=date(2030, 6, 30)
    )
    await bus.record(
        COORDINATION,
        "case-1",
        assigned("case-1", WORKER).model_copy(update={"credentials": (licence,)}),
    )
    stub = planning.stub
    await stub.DraftPlan(
        planning_pb2.DraftPlanRequest(
            context=ctx(key="draft"), case_id="case-1", goals=[counseling(""), goal()]
        )
    )
    agreement = planning_pb2.RecordAgreementRequest(case_id="case-1", signed_by_client=True)
    agreement.context.CopyFrom(ctx(key="agree"))
    await stub.RecordAgreement(agreement)  # the licensed case's worker: known to planning
    await bus.record(COORDINATION, "case-1", reassigned("case-1", WORKER, OTHER_WORKER))

    def achieve(goal_id: str) -> planning_pb2.AchieveGoalRequest:
        return planning_pb2.AchieveGoalRequest(
            context=ctx(OTHER_WORKER, key=f"achieve-{goal_id}"), case_id="case-1", goal_id=goal_id
        )

    code, details = await refused(stub.AchieveGoal(achieve("goal-cope")))

    assert code is grpc.StatusCode.FAILED_PRECONDITION
    info = one(details, error_details_pb2.ErrorInfo)
    assert info.reason == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert (info.metadata["goal_id"], info.metadata["worker_id"]) == (
        "goal-cope",
        OTHER_WORKER.user_id,
    )
    assert info.metadata["field"] == "goal.tasks[0].owner.owner_id"
    assert info.metadata["suggested_action"] == "ReviseGoal"
    told = one(details, error_details_pb2.PreconditionFailure).violations[0].description
    assert "must be reassigned to a licensed social worker" in told  # within the cut texts
    await stub.AchieveGoal(achieve("goal-walk"))  # not counseling
    await stub.AddGoal(
        planning_pb2.AddGoalRequest(
            context=ctx(OTHER_WORKER, key="add"), case_id="case-1", goal=goal("goal-club")
        )
    )
    agreement.context.CopyFrom(ctx(OTHER_WORKER, key="agree-again"))
    code, details = await refused(stub.RecordAgreement(agreement))
    assert one(details, error_details_pb2.ErrorInfo).reason == (
        "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    )
    # The case manager gives the task to the licensed social worker: carried on again.
    await stub.ReviseGoal(
        planning_pb2.ReviseGoalRequest(
            context=ctx(OTHER_WORKER, key="revise"),
            case_id="case-1",
            goal=counseling(WORKER.user_id),
            reason="Ana counsels",
        )
    )
    agreement.context.CopyFrom(ctx(OTHER_WORKER, key="agree-revised"))
    await stub.RecordAgreement(agreement)
    await stub.AchieveGoal(achieve("goal-cope"))


async def test_a_counseling_task_naming_its_owner_is_carried_on_only_while_they_may_counsel(
    planning: Planning,
) -> None:
    """The case manager carried on a counseling task naming a licensed social worker as its
    owner, who is not the case's worker, after the owner's licence lapsed: planning checked a
    named owner when the task was planned and never again."""
    bus = planning.bus
    await bus.open_case("case-1", OTHER_WORKER)
    await bus.open_case("case-2", None)
    licence = WorkerCredential(
        kind=CredentialKind.LICENCE, name="LCSW", valid_until=date(2030, 6, 30)
    )
    await bus.record(
        COORDINATION,
        "case-2",
        assigned("case-2", WORKER).model_copy(update={"credentials": (licence,)}),
    )
    stub = planning.stub
    await stub.DraftPlan(
        planning_pb2.DraftPlanRequest(
            context=ctx(OTHER_WORKER, key="draft"),
            case_id="case-1",
            goals=[counseling(WORKER.user_id)],
        )
    )
    agreement = planning_pb2.RecordAgreementRequest(case_id="case-1", signed_by_client=True)
    agreement.context.CopyFrom(ctx(OTHER_WORKER, key="agree"))
    await stub.RecordAgreement(agreement)  # the named owner, not the case's worker, counsels
    # Her latest assignment tells that her licence lapsed yesterday (the servicer's NOW).
    lapsed = licence.model_copy(update={"valid_until": NOW.date() - timedelta(days=1)})
    await bus.open_case("case-3", None)
    await bus.record(
        COORDINATION,
        "case-3",
        assigned("case-3", WORKER).model_copy(update={"credentials": (lapsed,)}),
    )

    code, details = await refused(
        stub.AchieveGoal(
            planning_pb2.AchieveGoalRequest(
                context=ctx(OTHER_WORKER, key="achieve"), case_id="case-1", goal_id="goal-cope"
            )
        )
    )

    assert code is grpc.StatusCode.FAILED_PRECONDITION
    info = one(details, error_details_pb2.ErrorInfo)
    assert info.reason == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert (info.metadata["goal_id"], info.metadata["worker_id"]) == ("goal-cope", WORKER.user_id)
    assert [r.event_type for r in await planning.store.read_all(0)] == [
        "casetrail.plan.drafted",
        "casetrail.plan.agreed",
    ], "a refusal writes nothing"
