"""Marco's case from intake to closure, the same walk as `make demo`, asserted step by step."""

from __future__ import annotations

import json

import grpc
import pytest

from casetrail.intake.v1 import intake_pb2
from cli.rpc import Person
from cli.walk import story
from cli.walk.story import CASE_MANAGER_ID, NEEDS, SOCIAL_WORKER
from services.demo import WalkResult, walk_case
from tests.e2e.conftest import Casetrail

pytestmark = pytest.mark.asyncio(loop_scope="package")

HOME_CARE_LINE_MINOR_UNITS = 25_000_000


async def test_the_elderly_client_is_carried_from_intake_to_closure(casetrail: Casetrail) -> None:
    printed: list[str] = []
    result = await walk_case(casetrail.stubs, printed.append, patience=casetrail.patience)

    _intake(result)
    _assignment(result)
    _planning_and_services(result)
    _closure_and_view(result)
    _audit_trail(result)
    assert sum("REFUSED" in line for line in printed) == 4


async def test_the_walk_told_again_for_the_same_client_is_told_before_the_earlier_one(
    casetrail: Casetrail,
) -> None:
    """`make demo` run twice on one deployment: Marco is found, and the second story ends
    before the first one's services, which keep his slots (a delivered service holds it)."""
    first = await walk_case(casetrail.stubs, lambda _: None, patience=casetrail.patience)
    printed: list[str] = []
    again = await walk_case(casetrail.stubs, printed.append, patience=casetrail.patience)
    assert again.client_id == first.client_id
    assert again.case_id != first.case_id
    assert any("found Marco's record" in line for line in printed)
    _closure_and_view(again)


def _intake(result: WalkResult) -> None:
    duplicate = result.duplicate_refusal
    assert duplicate is not None
    assert duplicate.code == grpc.StatusCode.ALREADY_EXISTS
    (candidates,) = duplicate.details(intake_pb2.PossibleDuplicates)
    assert [c.client_id for c in candidates.candidates] == [result.client_id]
    assert result.open_case_retry_identical
    assert result.case_id
    assert result.assessment_id


def _assignment(result: WalkResult) -> None:
    refusal = result.case_manager_refusal
    assert refusal is not None
    assert refusal.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.reason == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert refusal.metadata["worker_id"] == CASE_MANAGER_ID
    assert "counseling" in refusal.metadata["suggested_referrals"]
    assert result.assignment is not None
    assert set(result.assignment.matched_needs) == set(NEEDS)


def _planning_and_services(result: WalkResult) -> None:
    assert result.eligibility is not None
    assert result.eligibility.eligible
    assert result.plan is not None
    assert len(result.plan.goal_ids) == len(NEEDS)
    conflict = result.schedule_conflict
    assert conflict is not None
    assert conflict.code == grpc.StatusCode.FAILED_PRECONDITION
    assert conflict.reason == "SCHEDULE_CONFLICT"
    assert conflict.metadata["conflicting_service_id"] == result.service_ids["physical-therapy"]
    assert conflict.metadata["conflicting_kind"] == "physical_therapy"
    assert "counseling-clash" not in result.service_ids
    assert result.reservation is not None
    assert result.reservation.available.amount_minor_units == HOME_CARE_LINE_MINOR_UNITS - 54_000


def _closure_and_view(result: WalkResult) -> None:
    refusal = result.closure_refusal
    assert refusal is not None
    assert refusal.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.reason == "SERVICES_STILL_SCHEDULED"
    assert refusal.metadata["service_ids"] == result.service_ids["physical-therapy-2"]

    view = result.case_view
    assert view is not None
    assert (view.status, view.stage, view.closure_reason) == ("closed", "closed", "goals_achieved")
    assert view.worker.worker_id == SOCIAL_WORKER.user_id
    assert {need.category for need in view.needs} == set(NEEDS)
    assert view.plan.agreement_status == "agreed"
    assert {goal.goal.need_category for goal in view.plan.goals} == set(NEEDS)
    statuses = {service.service_id: service.status for service in view.services}
    cancelled = result.service_ids["physical-therapy-2"]
    assert statuses.pop(cancelled) == "cancelled"
    assert set(statuses.values()) == {"delivered"}
    assert len(statuses) == 5
    referrals = {referral.need_category: referral.status for referral in view.referrals}
    assert referrals == {"physical_therapy": "completed", "socialisation": "completed"}
    # Closed as goals_achieved: every goal of the plan Marco agreed to is achieved.
    assert {goal.status for goal in view.plan.goals} == {"achieved"}
    assert view.contacts_logged == 1


def _audit_trail(result: WalkResult) -> None:
    types = [activity.event_type for activity in result.activities]
    # The client's own events are in the trail of each of their cases: the registration
    # (the person the case is about) comes before the case was opened.
    assert types[:2] == ["casetrail.client.registered", "casetrail.case.opened"]
    for expected in (
        "casetrail.initial_assessment.recorded",
        "casetrail.case.assigned",
        "casetrail.plan.agreed",
        "casetrail.service.scheduled",
        "casetrail.service.delivered",
        "casetrail.service.cancelled",
    ):
        assert expected in types
    closed = [a for a in result.activities if a.event_type == "casetrail.case.closed"]
    assert [(a.actor.user_id, a.actor.role) for a in closed] == [
        (SOCIAL_WORKER.user_id, SOCIAL_WORKER.role)
    ]
    sources = {entry.source for entry in result.timeline}
    assert {"casetrail/intake", "casetrail/coordination", "casetrail/planning"} <= sources
    # No refusal left a trace: refused commands write nothing.
    assigned = [a for a in result.activities if a.event_type == "casetrail.case.assigned"]
    assert len(assigned) == 1
    occurred = [entry.occurred_at.ToDatetime() for entry in result.timeline]
    assert occurred == sorted(occurred)
    _every_actor_is_a_token_subject(result)


def _every_actor_is_a_token_subject(result: WalkResult) -> None:
    """Each person of the walk called with their own token: every recorded actor is the
    subject (and role) of one of those tokens, never anything a request said. A service's own
    follow-up (role system: coordination settling what a closure left) names the event it
    follows, itself in the trail."""
    cast = {
        (person.user_id, person.role)
        for person in vars(story).values()
        if isinstance(person, Person)
    }
    recorded = [json.loads(entry.cloudevent_json) for entry in result.timeline]
    ids = {event["id"] for event in recorded}
    follow_ups = [event for event in recorded if event["actorrole"] == "system"]
    assert all(event.get("causationid") in ids for event in follow_ups), follow_ups
    actors = {(event["actorid"], event["actorrole"]) for event in recorded}
    actors -= {(event["actorid"], "system") for event in follow_ups}
    assert actors <= cast, actors - cast
    by_type = {event["type"]: (event["actorid"], event["actorrole"]) for event in recorded}
    assert by_type["casetrail.case.opened"] == (story.RECEPTIONIST.user_id, "receptionist")
    assert by_type["casetrail.initial_assessment.recorded"] == (
        story.INTAKE_WORKER.user_id,
        "intake_worker",
    )
    assert by_type["casetrail.case.assigned"] == (story.COORDINATOR.user_id, "coordinator")
