"""Every change of a plan makes a version of its own, and the client agrees to the one they
were shown only while it is the current one: planning's answers and view and audit's plan
number them alike."""

from __future__ import annotations

import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from cli.rpc import Refusal, command, eventually, not_known_yet, query, refused
from cli.walk.story import AUDITOR, COORDINATOR, INTAKE_WORKER, SOCIAL_WORKER
from tests.e2e.conftest import Casetrail
from tests.e2e.support import new_case
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")


def _goal(goal_id: str, statement: str) -> pl.Goal:
    return pl.Goal(goal_id=goal_id, statement=statement, term="short", need_category="home_care")


async def test_an_agreement_to_a_version_changed_since_it_was_shown_is_refused(
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

    def arrived(refusal: Refusal) -> bool:
        # Assignment and assessment reach planning over the bus a moment later.
        return not_known_yet(refusal) or refusal.reason in (
            "CASE_NOT_ASSESSED",
            "CASE_NOT_ASSIGNED",
            "ROLE_NOT_ALLOWED",
        )

    await eventually(
        lambda: planning.DraftPlan(
            pl.DraftPlanRequest(
                context=command("draft-" + case_id),
                case_id=case_id,
                goals=[_goal("goal-home", "Stay home")],
            )
        ),
        what="planning to learn the assessment and the assignment",
        patience=casetrail.patience,
        retry=arrived,
    )

    async def agree(version: int) -> pl.RecordAgreementResponse:
        agreed: pl.RecordAgreementResponse = await planning.RecordAgreement(
            pl.RecordAgreementRequest(
                context=command(key()), case_id=case_id, plan_version=version, signed_by_client=True
            )
        )
        return agreed

    async def revise(statement: str) -> int:
        revised = await planning.ReviseGoal(
            pl.ReviseGoalRequest(
                context=command(key()),
                case_id=case_id,
                goal=_goal("goal-home", statement),
                reason="the client asked",
            )
        )
        version: int = revised.plan_version
        return version

    added = await planning.AddGoal(
        pl.AddGoalRequest(
            context=command(key()), case_id=case_id, goal=_goal("goal-club", "Join the club")
        )
    )
    assert added.plan_version == 2
    assert (await refused(agree(1))).reason == "PLAN_VERSION_CHANGED"
    assert (await agree(2)).plan_version == 2
    assert (await revise("Stay home with help"), await revise("Stay home, help daily")) == (3, 4)
    assert (await refused(agree(3))).reason == "PLAN_VERSION_CHANGED"

    async def view() -> pl.GetCaseViewResponse:
        request = pl.GetCaseViewRequest(context=query("confidentiality_review"), case_id=case_id)
        shown: pl.GetCaseViewResponse = await stubs.as_(AUDITOR).planning.GetCaseView(request)
        return shown

    await eventually(
        view,
        lambda shown: (shown.plan.version, shown.plan.agreed_version) == (4, 2),
        what="planning's view to count every change",
        patience=casetrail.patience,
    )
    assert (await agree(4)).plan_version == 4

    async def audit_state() -> audit_pb2.GetCaseStateAsOfResponse:
        request = audit_pb2.GetCaseStateAsOfRequest(
            context=query("confidentiality_review"),
            case_id=case_id,
            basis=audit_pb2.TIME_BASIS_RECORDED,
        )
        answer: audit_pb2.GetCaseStateAsOfResponse = await stubs.as_(
            AUDITOR
        ).audit.GetCaseStateAsOf(request)
        return answer

    await eventually(
        audit_state,
        lambda answer: answer.state.plan.agreed_version == 4,
        what="audit to show the version agreed as planning numbers it",
        patience=casetrail.patience,
    )
