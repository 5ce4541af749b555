from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from events.catalog.base import SENSITIVE_MARK
from events.catalog.cases import CaseReopened
from events.catalog.examples import CASE, example_events
from events.catalog.planning import (
    Goal,
    GoalAchieved,
    GoalAdded,
    GoalRevised,
    GoalTerm,
    PlanAgreed,
    PlanDrafted,
)
from events.catalog.values import NeedCategory
from events.catalog_registry import current_models
from services.audit.domain import history
from services.audit.domain.access import (
    sections_by_type,
    sections_disclosed,
)
from services.audit.domain.case_state import Assignment, CaseStatus, Plan, fold
from services.audit.domain.history import TimeBasis
from services.audit.domain.summaries import summary
from services.planning.adapters.case_document import (
    apply_event,
    current,
    new_document,
    previous_plans,
)
from tests.unit.audit.support import CASE as CASE_0042
from tests.unit.audit.support import (
    COORDINATOR,
    DAY,
    T0,
    Producer,
    assigned,
    closed,
    coordination,
    intake,
    late_recorded_case,
    opened,
)


def state_at(moment_offset: timedelta, basis: TimeBasis) -> Any:
    events = late_recorded_case()
    return fold("case-0042", history.view(events, basis, T0 + moment_offset), basis)


def test_a_late_recorded_assignment_counts_as_it_was_but_not_as_it_was_known() -> None:
    as_it_was = state_at(2 * DAY, TimeBasis.OCCURRED)
    as_known = state_at(2 * DAY, TimeBasis.RECORDED)

    assert as_it_was.status is CaseStatus.ASSIGNED
    assert as_it_was.assignment is not None
    assert as_it_was.assignment.worker_id == "worker-ana"
    assert as_known.status is CaseStatus.OPENED
    assert as_known.assignment is None
    assert as_it_was.events_applied == 3
    assert as_known.events_applied == 2


def test_once_recorded_both_views_agree_but_on_their_own_clock() -> None:
    as_it_was = state_at(4 * DAY, TimeBasis.OCCURRED)
    as_known = state_at(4 * DAY, TimeBasis.RECORDED)
    assert as_it_was.last_event_at == T0 + DAY
    assert as_known.last_event_at == T0 + 3 * DAY
    assert replace(as_it_was, last_event_at=None) == replace(as_known, last_event_at=None)


def test_before_the_case_opened_nothing_is_known() -> None:
    state = state_at(-DAY, TimeBasis.OCCURRED)
    assert state.status is CaseStatus.UNKNOWN
    assert state.events_applied == 0
    assert state.last_event_at is None


def test_closing_sets_the_status_and_keeps_the_worker() -> None:
    state = state_at(10 * DAY, TimeBasis.OCCURRED)
    assert state.status is CaseStatus.CLOSED
    assert state.closure_reason == "goals_achieved"
    assert state.assignment == Assignment("worker-ana", "social_worker", T0 + DAY)
    assert [need.category for need in state.presenting_needs] == ["home_care"]
    assert [(n.category, n.urgency) for n in state.assessed_needs] == [("home_care", "immediate")]


def test_a_reopened_case_keeps_its_worker_until_someone_is_assigned() -> None:
    """Coordination, planning and the policy's facts keep the worker through a closure and a
    reopening: audit's state as of a moment on a reopened case names the same worker."""
    # Their streams carry on after the closure (the late recorded case's end at 2 each).
    desk = Producer("casetrail/intake", f"case-{CASE_0042}", sequence=2)
    office = Producer("casetrail/coordination", f"case-{CASE_0042}", sequence=2)
    reopening = CaseReopened(case_id=CASE_0042, reason="Fell again, needs help at home")
    events = [*late_recorded_case(), desk.record(reopening, occurred_at=T0 + 6 * DAY)]
    state = fold(CASE_0042, history.view(events, TimeBasis.OCCURRED), TimeBasis.OCCURRED)
    assert (state.status, state.closure_reason) == (CaseStatus.REOPENED, None)
    assert state.assignment == Assignment("worker-ana", "social_worker", T0 + DAY)

    events.append(office.record(assigned(worker_id="worker-ben"), occurred_at=T0 + 7 * DAY))
    state = fold(CASE_0042, history.view(events, TimeBasis.OCCURRED), TimeBasis.OCCURRED)
    assert state.status is CaseStatus.ASSIGNED
    assert state.assignment == Assignment("worker-ben", "social_worker", T0 + 7 * DAY)


def test_a_reopened_case_has_no_plan_until_one_is_drafted_as_in_planning() -> None:
    """A closure ends the plan's cycle: planning (the plan's service) shows no current plan
    after a reopening, the old one among its previous plans, and so does audit's state as of
    a moment after it; a moment before it still shows the closed cycle's plan."""
    desk, office = intake(), coordination()
    planner = Producer("casetrail/planning", f"case-{CASE_0042}")
    goal = Goal(
        goal_id="goal-1",
        statement="Walk again",
        term=GoalTerm.SHORT,
        need_category=NeedCategory.HOME_CARE,
    )
    agreed = PlanAgreed(
        case_id=CASE_0042,
        plan_id="plan-1",
        plan_version=1,
        goal_ids=("goal-1",),
        signed_by_client=True,
    )
    events = [
        desk.record(opened(), occurred_at=T0),
        office.record(assigned(), occurred_at=T0 + DAY, actor=COORDINATOR),
        planner.record(
            PlanDrafted(case_id=CASE_0042, plan_id="plan-1", goals=(goal,)),
            occurred_at=T0 + 2 * DAY,
        ),
        planner.record(agreed, occurred_at=T0 + 3 * DAY),
        planner.record(closed(), occurred_at=T0 + 10 * DAY),
        desk.record(
            CaseReopened(case_id=CASE_0042, reason="Fell again"), occurred_at=T0 + 20 * DAY
        ),
        office.record(
            assigned(worker_id="worker-ben"), occurred_at=T0 + 21 * DAY, actor=COORDINATOR
        ),
    ]
    document = new_document(CASE_0042)
    for recorded in events:
        apply_event(document, recorded)

    def plan_as_of(moment: datetime) -> Plan | None:
        as_of = history.view(events, TimeBasis.OCCURRED, moment)
        return fold(CASE_0042, as_of, TimeBasis.OCCURRED).plan

    before = plan_as_of(T0 + 15 * DAY)
    assert before is not None
    signed = before.agreements[-1].signed_by_client
    assert (before.plan_id, before.agreed_version, signed) == ("plan-1", 1, True)
    assert [g.goal_id for g in before.goals] == ["goal-1"]
    assert current(document, "plan") is None
    assert [plan["plan_id"] for plan in previous_plans(document)] == ["plan-1"]
    assert plan_as_of(T0 + 22 * DAY) is None

    redrafted = PlanDrafted(case_id=CASE_0042, plan_id="plan-2", goals=())
    events.append(planner.record(redrafted, occurred_at=T0 + 23 * DAY))
    apply_event(document, events[-1])
    again = plan_as_of(T0 + 24 * DAY)
    assert again is not None
    assert (again.plan_id, again.goals) == ("plan-2", ())
    assert (current(document, "plan") or {})["plan_id"] == "plan-2"


def test_the_version_agreed_is_counted_from_the_plans_changes_as_in_planning() -> None:
    """Every change of the plan makes its next version; the agreements number themselves
    (``PlanAgreed.plan_version``: 1, then 2). Audit's plan as of a moment shows the version
    agreed as planning's view and record count it, not the agreement's number."""
    office, planner = coordination(), Producer("casetrail/planning", f"case-{CASE_0042}")

    def walk(statement: str, goal_id: str = "goal-1") -> Goal:
        return Goal(
            goal_id=goal_id,
            statement=statement,
            term=GoalTerm.SHORT,
            need_category=NeedCategory.HOME_CARE,
        )

    def agreed(number: int) -> PlanAgreed:
        return PlanAgreed(
            case_id=CASE_0042,
            plan_id="plan-1",
            plan_version=number,
            goal_ids=("goal-1", "goal-2"),
            signed_by_client=True,
        )

    club = walk("Join the club", goal_id="goal-2")
    plan_events = [
        PlanDrafted(case_id=CASE_0042, plan_id="plan-1", goals=(walk("Walk again"),)),
        GoalAdded(case_id=CASE_0042, plan_id="plan-1", goal=club),
        agreed(1),
        GoalRevised(case_id=CASE_0042, plan_id="plan-1", goal=walk("Walk 1 km"), reason="a"),
        GoalRevised(case_id=CASE_0042, plan_id="plan-1", goal=walk("Walk 5 km"), reason="b"),
        agreed(2),
    ]
    events = [
        intake().record(opened(), occurred_at=T0),
        office.record(assigned(), occurred_at=T0 + DAY, actor=COORDINATOR),
        *(
            planner.record(event, occurred_at=T0 + (2 + index) * DAY)
            for index, event in enumerate(plan_events)
        ),
    ]
    document = new_document(CASE_0042)
    for recorded in events:
        apply_event(document, recorded)

    def agreed_as_of(day: int) -> int:
        as_of = history.view(events, TimeBasis.OCCURRED, T0 + day * DAY)
        plan = fold(CASE_0042, as_of, TimeBasis.OCCURRED).plan
        assert plan is not None
        return plan.agreed_version

    assert (agreed_as_of(4), agreed_as_of(6), agreed_as_of(7)) == (2, 2, 4)
    plan = current(document, "plan") or {}
    assert (plan["version"], plan["agreed_version"]) == (4, 4)
    assert summary(events[-1].event).startswith(
        "recorded the client's agreement no. 2 to plan plan-1"
    )


def test_a_closed_cycles_plan_work_dated_after_the_reopening_stays_ended_as_in_planning() -> None:
    """A closure stated before its cycle's last plan work (stores kept before planning refused
    it, or a closure stating no moment after work stated ahead): the reopening cleared the
    plan, then the closed cycle's agreement and achievement, dated after the reopening, made
    the old plan again, agreed, without its goals, and the reopened case PLANNED; planning
    keeps it among the previous plans and shows no current plan."""
    desk, office = intake(), coordination()
    planner = Producer("casetrail/planning", f"case-{CASE_0042}")
    goal = Goal(
        goal_id="goal-1",
        statement="Walk again",
        term=GoalTerm.SHORT,
        need_category=NeedCategory.HOME_CARE,
    )
    agreed = PlanAgreed(
        case_id=CASE_0042,
        plan_id="plan-1",
        plan_version=1,
        goal_ids=("goal-1",),
        signed_by_client=True,
    )
    achieved = GoalAchieved(case_id=CASE_0042, plan_id="plan-1", goal_id="goal-1")
    events = [
        desk.record(opened(), occurred_at=T0),
        office.record(assigned(), occurred_at=T0 + DAY, actor=COORDINATOR),
        # Planning's stream in its order: the closure last, dated before the work it ends.
        planner.record(
            PlanDrafted(case_id=CASE_0042, plan_id="plan-1", goals=(goal,)),
            occurred_at=T0 + 2 * DAY,
        ),
        planner.record(agreed, occurred_at=T0 + 5 * DAY),
        planner.record(achieved, occurred_at=T0 + 6 * DAY),
        planner.record(closed(), occurred_at=T0 + 3 * DAY),
        desk.record(CaseReopened(case_id=CASE_0042, reason="Fell again"), occurred_at=T0 + 4 * DAY),
    ]
    document = new_document(CASE_0042)
    for recorded in events:
        apply_event(document, recorded)

    def as_of(moment: datetime) -> Any:
        return fold(CASE_0042, history.view(events, TimeBasis.OCCURRED, moment), TimeBasis.OCCURRED)

    assert current(document, "plan") is None
    assert [plan["plan_id"] for plan in previous_plans(document)] == ["plan-1"]
    assert document["stage"] == "assigned"
    state = as_of(T0 + 7 * DAY)
    assert (state.status, state.plan) == (CaseStatus.REOPENED, None)

    new_goal = goal.model_copy(update={"goal_id": "goal-2"})
    redrafted = PlanDrafted(case_id=CASE_0042, plan_id="plan-2", goals=(new_goal,))
    events.append(planner.record(redrafted, occurred_at=T0 + 8 * DAY))
    agreed_again = agreed.model_copy(update={"plan_id": "plan-2", "goal_ids": ("goal-2",)})
    events.append(planner.record(agreed_again, occurred_at=T0 + 9 * DAY))
    for recorded in events[-2:]:
        apply_event(document, recorded)
    again = as_of(T0 + 10 * DAY)
    assert again.plan is not None
    assert (again.status, again.plan.plan_id, again.plan.agreed_version) == (
        CaseStatus.PLANNED,
        "plan-2",
        1,
    )
    assert [g.goal_id for g in again.plan.goals] == ["goal-2"]
    assert ((current(document, "plan") or {})["plan_id"], document["stage"]) == ("plan-2", "active")


def test_the_catalog_examples_fold_into_a_full_state() -> None:
    producer = Producer("casetrail/test", f"case-{CASE}")
    recorded = [
        producer.record(event, occurred_at=T0 + index * timedelta(minutes=1))
        for index, event in enumerate(example_events())
        if event.subject_field == "case_id"
    ]
    state = fold(CASE, recorded, TimeBasis.OCCURRED)

    assert state.status is CaseStatus.REOPENED
    assert state.client_id == "client-7f3a"
    # The reopening ends the closed cycle's plan; the state before it shows the plan.
    assert state.plan is None
    reopening = next(i for i, r in enumerate(recorded) if isinstance(r.event, CaseReopened))
    closed_cycle = fold(CASE, recorded[:reopening], TimeBasis.OCCURRED)
    assert closed_cycle.status is CaseStatus.CLOSED
    assert closed_cycle.plan is not None
    # Drafted, a goal added, revised and dropped before the agreement: the fourth version.
    assert closed_cycle.plan.agreed_version == 4
    goals = {goal.goal_id: goal.status for goal in closed_cycle.plan.goals}
    assert goals == {"goal-mobility": "achieved", "goal-social": "dropped"}
    services = {s.service_id: s.status for s in state.services}
    assert services == {"svc-physio-1": "delivered", "svc-transport-9": "cancelled"}
    referrals = {r.referral_id: r.status for r in state.referrals}
    assert referrals == {
        "ref-counsel": "completed",
        "ref-meals": "declined",
        "ref-transport": "withdrawn",
    }
    assert [(c.consent_id, c.status) for c in state.consents] == [("consent-5", "revoked")]
    assert state.events_applied == len(recorded)


def test_views_order_by_occurrence_or_by_recording() -> None:
    events = late_recorded_case()
    by_occurrence = [e.event_type for e in history.view(events, TimeBasis.OCCURRED)]
    by_recording = [e.event_type for e in history.view(events, TimeBasis.RECORDED)]
    assert by_occurrence.index("casetrail.case.assigned") == 2
    assert by_recording == by_occurrence  # recorded day 3 is still before the closure


def test_every_catalog_type_belongs_to_a_record_section() -> None:
    assert {model.event_type for model in current_models()} == set(sections_by_type())


def test_sections_disclosed_follow_catalog_order_without_repeats() -> None:
    events = [e.event for e in late_recorded_case()]
    assert [s.value for s in sections_disclosed(events)] == [
        "identity",
        "assessment",
        "assignment",
        "discharge",
    ]


def _sensitive_strings(schema: Any, data: Any, definitions: dict[str, Any]) -> list[str]:
    """The strings of ``data`` that sit where ``schema`` marks a value sensitive."""
    if not isinstance(schema, dict):
        return []
    if schema.get(SENSITIVE_MARK):
        return _all_strings(data)
    if "$ref" in schema:
        target = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        return _sensitive_strings(target, data, definitions)
    found = [
        s
        for branch in schema.get("anyOf", [])
        for s in _sensitive_strings(branch, data, definitions)
    ]
    if isinstance(data, dict):
        properties = schema.get("properties", {})
        found += [
            s
            for key, value in data.items()
            for s in _sensitive_strings(properties.get(key), value, definitions)
        ]
    if isinstance(data, list):
        found += [
            s for item in data for s in _sensitive_strings(schema.get("items"), item, definitions)
        ]
    return found


def _all_strings(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, list):
        return [s for item in data for s in _all_strings(item)]
    if isinstance(data, dict):
        return [s for item in data.values() for s in _all_strings(item)]
    return []


@pytest.mark.parametrize("event", example_events(), ids=lambda e: e.event_type)
def test_summaries_never_repeat_sensitive_text(event: Any) -> None:
    text = summary(event)
    assert text
    schema = type(event).model_json_schema()
    sensitive = _sensitive_strings(schema, event.model_dump(mode="json"), schema.get("$defs", {}))
    assert [value for value in sensitive if value in text] == []
