"""A reopened case starts a new plan cycle, through the services' APIs and the bus."""

from __future__ import annotations

import pytest

from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from cli.rpc import Refusal, command, eventually, not_known_yet, query, refused
from cli.walk.story import AUDITOR, COORDINATOR, INTAKE_WORKER, SOCIAL_WORKER
from tests.e2e.conftest import Casetrail
from tests.e2e.support import new_case
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")


def _goal(statement: str) -> pl.Goal:
    return pl.Goal(statement=statement, term="short", need_category="home_care")


async def test_a_reopened_case_is_planned_anew_before_it_closes_as_goals_achieved(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case_id = (await new_case(casetrail, "home_care")).case_id
    await stubs.as_(INTAKE_WORKER).intake.RecordInitialAssessment(
        intake_pb2.RecordInitialAssessmentRequest(
            context=command(key()),
            case_id=case_id,
            factors=intake_pb2.AssessmentFactors(social="Lives alone"),
            needs=[intake_pb2.AssessedNeed(category="home_care", urgency="soon")],
        )
    )
    await stubs.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(
            context=command(key()), case_id=case_id, worker_id=SOCIAL_WORKER.user_id
        )
    )
    planning = stubs.as_(SOCIAL_WORKER).planning

    async def view() -> pl.GetCaseViewResponse:
        request = pl.GetCaseViewRequest(context=query("confidentiality_review"), case_id=case_id)
        shown: pl.GetCaseViewResponse = await stubs.as_(AUDITOR).planning.GetCaseView(request)
        return shown

    def arrived(refusal: Refusal) -> bool:
        # Assignment, assessment and reopening reach planning over the bus a moment later.
        return not_known_yet(refusal) or refusal.reason in (
            "CASE_NOT_ASSESSED",
            "CASE_NOT_ASSIGNED",
            "CASE_CLOSED",
            "ROLE_NOT_ALLOWED",
        )

    first = await eventually(
        lambda: planning.DraftPlan(
            pl.DraftPlanRequest(
                context=command("draft-1-" + case_id), case_id=case_id, goals=[_goal("Stay home")]
            )
        ),
        what="planning to learn the assessment and the assignment",
        patience=casetrail.patience,
        retry=arrived,
    )
    await planning.RecordAgreement(
        pl.RecordAgreementRequest(context=command(key()), case_id=case_id, signed_by_client=True)
    )
    await planning.AchieveGoal(
        pl.AchieveGoalRequest(
            context=command(key()), case_id=case_id, goal_id=first.goal_ids[0], evidence="home"
        )
    )
    close = pl.CloseCaseRequest(context=command(key()), case_id=case_id, reason="goals_achieved")
    await planning.CloseCase(close)
    # The view learns the closure off the bus: until it has, it still shows the case open
    # (and its plan), which the wait for the reopening below would take for the reopening.
    await eventually(
        view,
        lambda shown: shown.status == "closed",
        what="planning's view to learn the closure",
        patience=casetrail.patience,
    )
    await eventually(
        lambda: stubs.as_(COORDINATOR).intake.ReopenCase(
            intake_pb2.ReopenCaseRequest(
                context=command("reopen-" + case_id), case_id=case_id, reason="Fell again"
            )
        ),
        what="intake to be up",
        patience=casetrail.patience,
        # Not CASE_NOT_CLOSED: planning answered the closure once it was on the bus, and the
        # reopening waits for intake's closures to hold what the bus has.
        retry=not_known_yet,
    )
    reopened = await eventually(
        view,
        lambda shown: shown.status == "open",
        what="planning to learn the reopening",
        patience=casetrail.patience,
    )

    # The earlier plan is the closed cycle's: no plan shown, none to close on.
    assert (reopened.stage, reopened.HasField("plan")) == ("assigned", False)
    again = pl.CloseCaseRequest(context=command(key()), case_id=case_id, reason="goals_achieved")
    assert (await refused(planning.CloseCase(again))).reason == "PLAN_NOT_DRAFTED"
    # The new episode is planned on its own initial assessment (intake asks for one again).
    draft = pl.DraftPlanRequest(
        context=command(key()), case_id=case_id, goals=[_goal("Walk again")]
    )
    assert (await refused(planning.DraftPlan(draft))).reason == "CASE_NOT_ASSESSED"
    await stubs.as_(INTAKE_WORKER).intake.RecordInitialAssessment(
        intake_pb2.RecordInitialAssessmentRequest(
            context=command(key()),
            case_id=case_id,
            factors=intake_pb2.AssessmentFactors(social="Fell again at home"),
            needs=[intake_pb2.AssessedNeed(category="home_care", urgency="soon")],
        )
    )
    second = await eventually(
        lambda: planning.DraftPlan(draft),
        what="planning to learn the new episode's assessment",
        patience=casetrail.patience,
        retry=arrived,
    )
    assert second.plan_id != first.plan_id
    shown = await eventually(
        view,
        lambda shown: shown.plan.plan_id == second.plan_id,
        what="planning's view to show the new plan",
        patience=casetrail.patience,
    )
    assert [goal.goal.statement for goal in shown.plan.goals] == ["Walk again"]
