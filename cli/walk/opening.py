"""Day 0 and 1: intake, assignment, eligibility and the plan agreed with Marco."""

from __future__ import annotations

from datetime import UTC, timedelta

from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from cli.present import short
from cli.rpc import eventually, query, refused
from cli.walk.story import (
    CASE_MANAGER_ID,
    COORDINATOR,
    GOALS,
    HOME_CARE_PROGRAM,
    INTAKE_WORKER,
    NEEDS,
    RECEPTIONIST,
    SOCIAL_WORKER,
    STORY_DAYS,
    Story,
    assessed_needs,
    marco,
    plan_goal,
)
from cli.walk.walk import Walk


async def intake(walk: Walk) -> None:
    walk.section("Intake: St Mary's Hospital refers Marco Bellini on the day he is discharged")
    await _register(walk)
    await _open_case(walk)
    walk.when(0, "11:00")
    assessed = await walk.as_(INTAKE_WORKER).intake.RecordInitialAssessment(
        intake_pb2.RecordInitialAssessmentRequest(
            context=walk.command("assess"),
            case_id=walk.case_id,
            factors=intake_pb2.AssessmentFactors(
                biological="Hip fracture repaired; walks a few steps with a frame",
                psychological="Low mood, afraid of falling again, grieving his independence",
                social="Widowed, lives alone on the second floor; daughter visits at weekends",
                economic="State pension of 1,850 USD a month, no savings",
                cultural="Italian-born, prefers to speak Italian",
            ),
            strengths=["Motivated to walk to the café again", "Close to his daughter Chiara"],
            resources=["State pension", "Medicare", "A neighbour who shops for him"],
            risks=[
                intake_pb2.Risk(description="Falls at home", severity="high"),
                intake_pb2.Risk(description="Isolation and low mood", severity="moderate"),
            ],
            needs=assessed_needs(),
        )
    )
    walk.result.assessment_id = assessed.assessment_id
    walk.line(INTAKE_WORKER, "recorded the initial assessment of Marco's whole situation")
    walk.detail("needs: " + ", ".join(NEEDS))
    walk.detail("strengths: motivated, close to his daughter; resources: pension, Medicare")
    walk.detail("risks: falls at home (high), isolation and low mood (moderate)")


async def _register(walk: Walk) -> None:
    """Register Marco, or find him when an earlier demo run already did."""
    stubs = walk.as_(RECEPTIONIST)
    walk.when(0, "09:00")
    probe = marco()
    found = await stubs.intake.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(
            context=query("direct_care"),
            name=probe.name,
            date_of_birth=probe.date_of_birth,
            identifiers=probe.identifiers,
        )
    )
    if found.candidates:
        walk.result.client_id = found.candidates[0].client_id
        walk.story = await _story_before_earlier_runs(walk)
        walk.when(0, "09:00")
        walk.line(RECEPTIONIST, f"found Marco's record: client {short(walk.result.client_id)}")
    else:
        probe.context.CopyFrom(walk.command("register"))
        registered = await stubs.intake.RegisterClient(probe)
        walk.result.client_id = registered.client_id
        walk.line(
            RECEPTIONIST,
            f"registered Marco Bellini, born 1941-06-02: client {short(registered.client_id)}",
        )
    walk.when(0, "09:05")
    again = marco()
    again.context.CopyFrom(walk.command("register-again"))
    refusal = await refused(stubs.intake.RegisterClient(again))
    walk.result.duplicate_refusal = refusal
    candidates = [
        short(candidate.client_id)
        for duplicates in refusal.details(intake_pb2.PossibleDuplicates)
        for candidate in duplicates.candidates
    ]
    walk.line(RECEPTIONIST, f"registering him a second time: REFUSED {refusal.code.name}")
    walk.detail(f"possible duplicate of client {', '.join(candidates)}")


async def _story_before_earlier_runs(walk: Walk) -> Story:
    """The story told again for Marco ends the day before an earlier run's first service: the
    services an earlier run delivered keep Marco's slots on its days (he cannot have been at
    two of them at once), so this run's two weeks come before them."""
    schedule = await walk.as_(COORDINATOR).coordination.GetClientSchedule(
        co.GetClientScheduleRequest(
            context=query("coordination"), client_id=walk.result.client_id, include_past=True
        )
    )
    booked = [
        service.starts_at.ToDatetime(tzinfo=UTC).date()
        for service in schedule.services
        if service.status != "cancelled"
    ]
    if not booked:
        return walk.story
    last_day = min(min(booked) - timedelta(days=1), walk.story.day0 + timedelta(days=STORY_DAYS))
    return Story(last_day - timedelta(days=STORY_DAYS))


async def _open_case(walk: Walk) -> None:
    walk.when(0, "09:10")
    opening = intake_pb2.OpenCaseRequest(
        context=walk.command("open"),
        client_id=walk.result.client_id,
        referral_source=intake_pb2.ReferralSource(
            kind="hospital", name="St Mary's Hospital, discharge planner Ruth Alvarez"
        ),
        presenting_needs=[
            intake_pb2.PresentingNeed(category="home_care", description="Cannot wash alone"),
            intake_pb2.PresentingNeed(category="physical_therapy", description="Hip rehab"),
            intake_pb2.PresentingNeed(category="transportation", description="May not drive"),
        ],
    )
    opened = await walk.as_(RECEPTIONIST).intake.OpenCase(opening)
    retried = await walk.as_(RECEPTIONIST).intake.OpenCase(
        opening
    )  # as a client would after a timeout
    walk.result.case_id = opened.result.case_id
    walk.result.open_case_retry_identical = retried == opened
    walk.line(RECEPTIONIST, f"opened case {short(walk.case_id)}, referred by the hospital")
    same = "the same case, nothing new" if retried == opened else "A DIFFERENT ANSWER"
    walk.detail(f"the request sent again with the same idempotency key: {same}")


async def assignment(walk: Walk) -> None:
    walk.section("Assignment: the coordinator matches a worker to the needs")
    known = co.GetCaseCoordinationRequest(context=query("coordination"), case_id=walk.case_id)
    await eventually(
        lambda: walk.as_(COORDINATOR).coordination.GetCaseCoordination(known),
        lambda case: set(NEEDS) <= set(case.needs),
        what="coordination to learn the assessed needs",
        patience=walk.patience,
    )
    walk.when(0, "14:00")
    refusal = await refused(
        walk.as_(COORDINATOR).coordination.AssignCase(
            co.AssignCaseRequest(
                context=walk.command("assign-case-manager"),
                case_id=walk.case_id,
                worker_id=CASE_MANAGER_ID,
            )
        )
    )
    walk.result.case_manager_refusal = refusal
    walk.line(COORDINATOR, f"assign case manager {CASE_MANAGER_ID}: REFUSED {refusal.code.name}")
    walk.detail(refusal.reason)
    walk.detail(f"proposed referral: {refusal.metadata.get('suggested_referrals', '-')}")
    walk.when(0, "14:05")
    assigned = await walk.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(
            context=walk.command("assign-social-worker"),
            case_id=walk.case_id,
            worker_id=SOCIAL_WORKER.user_id,
        )
    )
    walk.result.assignment = assigned
    walk.line(COORDINATOR, f"assigned licensed social worker {SOCIAL_WORKER.user_id} (LCSW)")
    walk.detail(f"for {', '.join(assigned.matched_needs)}")


async def eligibility(walk: Walk) -> None:
    walk.section("Eligibility: the state-provided resources Marco qualifies for")
    walk.when(1, "10:00")
    request = co.DetermineEligibilityRequest(
        context=walk.command("eligibility"),
        case_id=walk.case_id,
        program_id=HOME_CARE_PROGRAM,
        facts=co.EligibilityFacts(
            monthly_income=co.Money(amount_minor_units=185_000, currency="USD"),
            household_size=1,
            residence="us-ca-alameda",
        ),
    )
    # Coordination computes Marco's age from the date of birth intake registered; that fact
    # travels on the client's stream, which may arrive after the case's (another partition).
    decided = await eventually(
        lambda: walk.as_(SOCIAL_WORKER).coordination.DetermineEligibility(request),
        what="coordination to learn Marco's date of birth",
        patience=walk.patience,
        retry=lambda refusal: refusal.reason == "CLIENT_AGE_NOT_KNOWN",
    )
    walk.result.eligibility = decided
    walk.line(SOCIAL_WORKER, f"{HOME_CARE_PROGRAM}: {'' if decided.eligible else 'NOT '}eligible")
    for reason in decided.reasons:
        walk.detail(reason)


async def planning(walk: Walk) -> None:
    walk.section("Planning: the intervention plan, built with Marco")
    await walk.view(
        lambda view: view.worker.worker_id == SOCIAL_WORKER.user_id,
        "planning to learn who carries the case",
    )
    walk.when(1, "11:00")
    drafted = await walk.as_(SOCIAL_WORKER).planning.DraftPlan(
        pl.DraftPlanRequest(
            context=walk.command("plan"),
            case_id=walk.case_id,
            goals=[plan_goal(goal, walk.story) for goal in GOALS],
        )
    )
    walk.result.plan = drafted
    walk.result.goal_ids = {
        goal.need: goal_id for goal, goal_id in zip(GOALS, drafted.goal_ids, strict=True)
    }
    walk.line(SOCIAL_WORKER, f"drafted the plan with Marco: {len(GOALS)} goals")
    for goal in GOALS:
        walk.detail(f"{goal.term:<5} {goal.need:<16} {goal.statement}")
    walk.when(1, "11:45")
    agreed = await walk.as_(SOCIAL_WORKER).planning.RecordAgreement(
        pl.RecordAgreementRequest(
            context=walk.command("agreement"),
            case_id=walk.case_id,
            client_statement="Voglio tornare a piedi al bar - I want to walk to the café again",
            signed_by_client=True,
        )
    )
    walk.line(SOCIAL_WORKER, f"Marco agreed to plan version {agreed.plan_version} and signed it")
