"""Planning's decisions as pure functions: rules, plan versions, roles."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from casetrail_platform.commands import (
    AlreadyExists,
    InvalidCommand,
    NotAllowed,
    NotFound,
    RuleBroken,
)
from casetrail_platform.limits import MAX_GOALS_PER_PLAN, MAX_PLAN_GOALS_BYTES
from events.catalog.assignment import CredentialKind, WorkerCredential
from events.catalog.base import CaseEvent
from events.catalog.cases import CaseClosed, DischargeReason
from events.catalog.monitoring import ContactKind, ContactLogged, GoalProgress, ProgressRating
from events.catalog.planning import (
    Goal,
    GoalAchieved,
    GoalAdded,
    GoalDropped,
    GoalRevised,
    PlanAgreed,
    PlanDrafted,
    PlanTask,
    TaskOwner,
    TaskOwnerKind,
)
from events.catalog.values import NeedCategory
from events.envelope import Actor
from services.planning.domain import commands as c
from services.planning.domain.decisions import decide, deciding_workers
from services.planning.domain.model import CaseFacts, CasePlanning, StaffMember
from tests.unit.planning.support import (
    COORDINATOR,
    OTHER_WORKER,
    RECEPTIONIST,
    SUPERVISOR,
    WORKER,
    goal,
)

CASE = "case-1"
FACTS = CaseFacts(known=True, worker_id=WORKER.user_id, assessed=True)


def record_of(*events: CaseEvent) -> CasePlanning:
    record = CasePlanning(CASE)
    for event in events:
        record.apply(event)
    return record


def run(
    record: CasePlanning, command: c.Command, actor: Actor = WORKER, facts: CaseFacts = FACTS
) -> list[CaseEvent]:
    # The case's worker may see its sensitive values: a refusal names every entry to them.
    events = decide(record, facts, actor, command, sensitive_shown=True)
    for event in events:
        record.apply(event)
    return events


def agree(version: int | None = None) -> c.RecordAgreement:
    return c.RecordAgreement(CASE, version, "I want to stay at home", signed_by_client=True)


def drafted(*goal_ids: str) -> PlanDrafted:
    return PlanDrafted(case_id=CASE, plan_id="plan-1", goals=tuple(goal(g) for g in goal_ids))


def rule_of(error: pytest.ExceptionInfo[RuleBroken]) -> str:
    return error.value.rule


def test_a_plan_without_goals_cannot_be_agreed() -> None:
    record = record_of(drafted())

    with pytest.raises(RuleBroken) as error:
        run(record, agree())

    assert rule_of(error) == "PLAN_HAS_NO_GOALS"


def test_a_plan_whose_goals_were_all_dropped_cannot_be_agreed() -> None:
    record = record_of(drafted("goal-walk"))
    run(record, c.DropGoal(CASE, "goal-walk", "client changed their mind"))

    with pytest.raises(RuleBroken) as error:
        run(record, agree())

    assert rule_of(error) == "PLAN_HAS_NO_GOALS"


def test_every_change_makes_the_next_version_and_the_agreements_are_numbered_apart() -> None:
    record = record_of(drafted("goal-walk"))

    [first] = run(record, agree())
    assert isinstance(first, PlanAgreed)
    assert (first.plan_version, first.goal_ids) == (1, ("goal-walk",))
    with pytest.raises(RuleBroken) as again:
        run(record, agree())
    assert rule_of(again) == "PLAN_ALREADY_AGREED"

    run(record, c.AddGoal(CASE, goal("goal-club", "Join the seniors' club")))
    assert record.plan is not None
    assert (record.plan.version, record.plan.agreed_version) == (2, 1)
    run(record, c.ReviseGoal(CASE, goal("goal-club", "Join the club on Thursdays"), "day"))
    assert record.plan.version == 3, "each change before the next agreement is a version"

    [second] = run(record, agree(version=3))
    assert isinstance(second, PlanAgreed)
    # The event numbers the agreement (the second), as the catalog states; the plan's version
    # agreed is the third.
    assert (second.plan_version, second.goal_ids) == (2, ("goal-walk", "goal-club"))
    assert (record.plan.version, record.plan.agreed_version) == (3, 3)


def test_an_agreement_to_a_version_changed_since_it_was_shown_is_refused() -> None:
    # A draft never agreed: the client was shown version 1, then a goal was added.
    draft = record_of(drafted("goal-walk"))
    run(draft, c.AddGoal(CASE, goal("goal-move", "Move into a care home")))
    with pytest.raises(RuleBroken) as added:
        run(draft, agree(version=1))
    assert rule_of(added) == "PLAN_VERSION_CHANGED"
    assert added.value.details["current_version"] == "2"

    # Agreed, revised (the client shown that version), revised again.
    agreed = record_of(drafted("goal-walk"))
    run(agreed, agree())
    run(agreed, c.ReviseGoal(CASE, goal("goal-walk", "Walk 1 km"), "a"))
    assert agreed.plan is not None
    shown = agreed.plan.version
    run(agreed, c.ReviseGoal(CASE, goal("goal-walk", "Walk 5 km daily"), "b"))
    with pytest.raises(RuleBroken) as revised:
        run(agreed, agree(version=shown))
    assert rule_of(revised) == "PLAN_VERSION_CHANGED"
    assert (revised.value.details["shown_version"], revised.value.details["current_version"]) == (
        "2",
        "3",
    )
    [agreement] = run(agreed, agree(version=3))
    assert isinstance(agreement, PlanAgreed)


def test_stored_agreements_fold_into_the_versions_counted_from_the_changes() -> None:
    # As a store kept before every change made a version holds them: the agreements numbered
    # 1 and 2, the second after a goal added and revised.
    walk, club = goal("goal-walk"), goal("goal-club")
    record = record_of(
        drafted("goal-walk"),
        PlanAgreed(
            case_id=CASE,
            plan_id="plan-1",
            plan_version=1,
            goal_ids=("goal-walk",),
            signed_by_client=True,
        ),
        GoalAdded(case_id=CASE, plan_id="plan-1", goal=club),
        GoalRevised(case_id=CASE, plan_id="plan-1", goal=club, reason="day"),
        PlanAgreed(
            case_id=CASE,
            plan_id="plan-1",
            plan_version=2,
            goal_ids=("goal-walk", "goal-club"),
            signed_by_client=True,
        ),
        GoalDropped(case_id=CASE, plan_id="plan-1", goal_id=walk.goal_id, reason="walks"),
    )

    assert record.plan is not None
    assert (record.plan.version, record.plan.agreed_version) == (4, 3)
    [third] = run(record, agree(version=4))
    assert isinstance(third, PlanAgreed)
    assert third.plan_version == 3


def test_the_client_agrees_to_the_version_they_were_shown() -> None:
    record = record_of(drafted("goal-walk"))
    run(record, agree())
    run(record, c.AddGoal(CASE, goal("goal-club")))

    with pytest.raises(RuleBroken) as error:
        run(record, agree(version=1))

    assert rule_of(error) == "PLAN_VERSION_CHANGED"
    assert error.value.details["current_version"] == "2"


def test_achieving_a_goal_is_progress_not_a_new_plan_version() -> None:
    record = record_of(drafted("goal-walk", "goal-club"))
    run(record, agree())

    run(record, c.AchieveGoal(CASE, "goal-walk", "walked to the shop"))

    assert record.plan is not None
    assert (record.plan.version, record.plan.changed_since_agreement) == (1, False)


@pytest.mark.parametrize(
    "command",
    [
        c.ReviseGoal(CASE, goal("goal-walk", "Walk further"), "progress"),
        c.AchieveGoal(CASE, "goal-walk", None),
        c.DropGoal(CASE, "goal-walk", "no longer wanted"),
    ],
)
def test_goals_change_only_while_active(command: c.Command) -> None:
    record = record_of(drafted("goal-walk", "goal-club"))
    run(record, agree())
    run(record, c.AchieveGoal(CASE, "goal-walk", None))

    with pytest.raises(RuleBroken) as error:
        run(record, command)

    assert rule_of(error) == "GOAL_NOT_ACTIVE"
    assert error.value.details == {"subject": "goal-walk", "status": "achieved"}


def test_goals_cannot_be_achieved_before_the_client_agreed() -> None:
    record = record_of(drafted("goal-walk"))

    with pytest.raises(RuleBroken) as error:
        run(record, c.AchieveGoal(CASE, "goal-walk", None))

    assert rule_of(error) == "PLAN_NOT_AGREED"


def test_a_revision_must_change_the_goal() -> None:
    record = record_of(drafted("goal-walk"))

    with pytest.raises(RuleBroken) as error:
        run(record, c.ReviseGoal(CASE, goal("goal-walk"), "no change"))

    assert rule_of(error) == "GOAL_UNCHANGED"


def test_revision_carries_the_whole_new_goal() -> None:
    record = record_of(drafted("goal-walk"))
    revised = goal("goal-walk", "Walk to the park")

    [event] = run(record, c.ReviseGoal(CASE, revised, "doing well"))

    assert event == GoalRevised(case_id=CASE, plan_id="plan-1", goal=revised, reason="doing well")


def test_unknown_goals_are_not_found_and_known_ones_cannot_be_added_twice() -> None:
    record = record_of(drafted("goal-walk"))

    with pytest.raises(NotFound):
        run(record, c.DropGoal(CASE, "goal-nope", "x"))
    with pytest.raises(AlreadyExists):
        run(record, c.AddGoal(CASE, goal("goal-walk")))


def test_one_plan_per_case() -> None:
    record = record_of(drafted("goal-walk"))

    with pytest.raises(AlreadyExists) as error:
        run(record, c.DraftPlan(CASE, "plan-2", ()))

    assert error.value.identifier == "plan-1"


def test_goal_commands_need_a_plan() -> None:
    with pytest.raises(RuleBroken) as error:
        run(record_of(), c.AddGoal(CASE, goal()))

    assert rule_of(error) == "PLAN_NOT_DRAFTED"


def test_progress_is_evaluated_on_kept_goals_of_an_agreed_plan() -> None:
    record = record_of(drafted("goal-walk", "goal-club"))
    progress = (GoalProgress(goal_id="goal-walk", rating=ProgressRating.ON_TRACK),)
    evaluate = c.EvaluateProgress(CASE, "eval-1", progress, (), (), plan_adjustment_needed=False)

    with pytest.raises(RuleBroken) as not_agreed:
        run(record, evaluate)
    assert rule_of(not_agreed) == "PLAN_NOT_AGREED"

    run(record, agree())
    run(record, c.DropGoal(CASE, "goal-walk", "moved to physio's own plan"))
    with pytest.raises(RuleBroken) as dropped:
        run(record, evaluate)
    assert rule_of(dropped) == "GOAL_DROPPED"


def test_closure_is_refused_while_services_are_scheduled_and_names_them() -> None:
    facts = CaseFacts(
        known=True, worker_id=WORKER.user_id, scheduled_service_ids=("svc-b", "svc-a")
    )

    with pytest.raises(RuleBroken) as error:
        run(record_of(), c.CloseCase(CASE, DischargeReason.GOALS_ACHIEVED, None), facts=facts)

    assert rule_of(error) == "SERVICES_STILL_SCHEDULED"
    assert error.value.details["service_ids"] == "svc-a,svc-b"


def test_a_closed_case_refuses_everything_until_reopened() -> None:
    record = record_of(drafted("goal-walk"))
    close = c.CloseCase(CASE, DischargeReason.CLIENT_MOVED, None)
    [closed] = run(record, close)
    assert isinstance(closed, CaseClosed)

    contact = c.LogContact(CASE, "contact-1", ContactKind.PHONE_CALL, "called", None)
    for command in (close, contact, c.AddGoal(CASE, goal("goal-club"))):
        with pytest.raises(RuleBroken) as error:
            run(record, command)
        assert rule_of(error) == "CASE_CLOSED"

    reopened = CaseFacts(known=True, worker_id=WORKER.user_id, assessed=True, reopens=1)
    [logged] = run(record, contact, facts=reopened)
    assert isinstance(logged, ContactLogged)


def test_a_case_must_be_known_from_intake() -> None:
    with pytest.raises(NotFound) as error:
        run(
            record_of(),
            c.DraftPlan(CASE, "plan-1", ()),
            actor=COORDINATOR,
            facts=CaseFacts(known=False),
        )

    assert (error.value.what, error.value.identifier) == ("case", CASE)


def test_a_worker_learns_nothing_of_cases_not_assigned_to_them() -> None:
    # An unknown case and another worker's case are refused alike: NOT_FOUND for one and
    # PERMISSION_DENIED for the other would tell a worker which case ids are real.
    unknown = CaseFacts(known=False)
    someone_elses = CaseFacts(known=True, worker_id=WORKER.user_id)
    refusals = []
    for facts in (unknown, someone_elses):
        with pytest.raises(NotAllowed) as error:
            run(record_of(), c.DraftPlan(CASE, "plan-1", ()), actor=OTHER_WORKER, facts=facts)
        refusals.append(str(error.value))

    assert refusals[0] == refusals[1]


@pytest.mark.parametrize(
    ("actor", "command", "allowed"),
    [
        (COORDINATOR, c.DraftPlan(CASE, "plan-1", ()), True),
        (WORKER, c.DraftPlan(CASE, "plan-1", ()), True),
        (OTHER_WORKER, c.DraftPlan(CASE, "plan-1", ()), False),
        (SUPERVISOR, c.DraftPlan(CASE, "plan-1", ()), False),
        (RECEPTIONIST, c.DraftPlan(CASE, "plan-1", ()), False),
        (WORKER, c.CloseCase(CASE, DischargeReason.OTHER, None), True),
        (SUPERVISOR, c.CloseCase(CASE, DischargeReason.OTHER, None), True),
        (COORDINATOR, c.CloseCase(CASE, DischargeReason.OTHER, None), True),
        (OTHER_WORKER, c.CloseCase(CASE, DischargeReason.OTHER, None), False),
        (
            COORDINATOR,
            c.PlanDischarge(CASE, date(2030, 6, 1), ("stable housing",), (), False, None),
            True,
        ),
        (
            SUPERVISOR,
            c.LogContact(CASE, "contact-1", ContactKind.HOME_VISIT, "visit", None),
            False,
        ),
    ],
)
def test_role_table(actor: Actor, command: c.Command, allowed: bool) -> None:
    record = record_of() if isinstance(command, c.DraftPlan) else record_of(drafted("goal-walk"))
    if allowed:
        assert run(record, command, actor=actor)
    else:
        with pytest.raises(NotAllowed):
            run(record, command, actor=actor)


def test_the_clients_agreement_is_recorded_by_the_assigned_worker_only() -> None:
    for actor in (COORDINATOR, SUPERVISOR, OTHER_WORKER):
        with pytest.raises(NotAllowed):
            run(record_of(drafted("goal-walk")), agree(), actor=actor)

    assert run(record_of(drafted("goal-walk")), agree(), actor=WORKER)


def test_a_worker_without_a_role_for_the_action_is_refused_before_the_case_is_looked_up() -> None:
    with pytest.raises(NotAllowed):
        run(record_of(), c.DraftPlan(CASE, "p", ()), actor=RECEPTIONIST, facts=CaseFacts(False))


# The case cycle's stages (rev21 #6): a plan follows assignment and assessment; "goals achieved"
# is a claim about the agreed plan.


@pytest.mark.parametrize(
    ("facts", "rule"),
    [
        (CaseFacts(known=True, worker_id=None, assessed=True), "CASE_NOT_ASSIGNED"),
        (CaseFacts(known=True, worker_id=WORKER.user_id), "CASE_NOT_ASSESSED"),
    ],
)
def test_a_plan_is_drafted_only_once_the_case_is_assigned_and_assessed(
    facts: CaseFacts, rule: str
) -> None:
    with pytest.raises(RuleBroken) as error:
        run(record_of(), c.DraftPlan(CASE, "plan-1", (goal(),)), actor=COORDINATOR, facts=facts)

    assert rule_of(error) == rule
    assert error.value.details == {"subject": CASE}


def test_closure_is_refused_while_referrals_run_and_names_them() -> None:
    facts = CaseFacts(known=True, worker_id=WORKER.user_id, running_referral_ids=("ref-b", "ref-a"))
    record = record_of()

    with pytest.raises(RuleBroken) as error:
        run(record, c.CloseCase(CASE, DischargeReason.CLIENT_MOVED, None), facts=facts)

    assert rule_of(error) == "REFERRALS_STILL_RUNNING"
    assert error.value.details == {"subject": CASE, "referral_ids": "ref-a,ref-b"}
    assert record.closures == 0


def test_goals_achieved_needs_a_plan_the_client_agreed_to() -> None:
    close = c.CloseCase(CASE, DischargeReason.GOALS_ACHIEVED, None)

    with pytest.raises(RuleBroken) as no_plan:
        run(record_of(), close)
    with pytest.raises(RuleBroken) as not_agreed:
        run(record_of(drafted("goal-walk")), close)

    assert rule_of(no_plan) == "PLAN_NOT_DRAFTED"
    assert rule_of(not_agreed) == "PLAN_NOT_AGREED"


def test_goals_achieved_needs_every_goal_achieved_or_dropped() -> None:
    record = record_of(drafted("goal-walk", "goal-club", "goal-bus"))
    run(record, agree())
    run(record, c.AchieveGoal(CASE, "goal-walk", "walks to the shop"))
    close = c.CloseCase(CASE, DischargeReason.GOALS_ACHIEVED, None)

    with pytest.raises(RuleBroken) as error:
        run(record, close)
    assert rule_of(error) == "GOALS_STILL_ACTIVE"
    assert error.value.details["goal_ids"] == "goal-club,goal-bus"

    run(record, c.AchieveGoal(CASE, "goal-club", "goes every Thursday"))
    run(record, c.DropGoal(CASE, "goal-bus", "his daughter drives him"))
    [closed] = run(record, close)
    assert closed == CaseClosed(case_id=CASE, reason=DischargeReason.GOALS_ACHIEVED)


@pytest.mark.parametrize(
    "reason",
    [
        DischargeReason.CLIENT_MOVED,
        DischargeReason.CLIENT_WITHDREW,
        DischargeReason.CLIENT_DECEASED,
    ],
)
def test_other_closure_reasons_do_not_depend_on_the_plan(reason: DischargeReason) -> None:
    [closed] = run(record_of(drafted("goal-walk")), c.CloseCase(CASE, reason, None))

    assert isinstance(closed, CaseClosed)


# The client's participation (rev21 #9): only goals the client agreed to, as they stand, are
# achieved or evaluated; an agreement holds the client's signature or words.


@pytest.mark.parametrize("change", ["add", "revise"])
def test_a_goal_changed_after_the_agreement_is_not_achieved_or_evaluated_before_the_next(
    change: str,
) -> None:
    record = record_of(drafted("goal-walk"))
    run(record, agree())
    if change == "add":
        run(record, c.AddGoal(CASE, goal("goal-club", "Join the club")))
        goal_id = "goal-club"
    else:
        run(record, c.ReviseGoal(CASE, goal("goal-walk", "Walk to the park"), "doing well"))
        goal_id = "goal-walk"
    progress = (GoalProgress(goal_id=goal_id, rating=ProgressRating.ACHIEVED),)
    commands: list[c.Command] = [
        c.AchieveGoal(CASE, goal_id, "done"),
        c.EvaluateProgress(CASE, "eval-1", progress, (), (), plan_adjustment_needed=False),
    ]

    for command in commands:
        with pytest.raises(RuleBroken) as error:
            run(record, command)
        assert rule_of(error) == "GOAL_NOT_AGREED"
        assert error.value.details == {"subject": goal_id}

    run(record, agree())
    for command in commands:
        assert run(record, command)


def test_an_agreement_needs_the_clients_signature_or_statement() -> None:
    record = record_of(drafted("goal-walk"))

    with pytest.raises(RuleBroken) as error:
        run(record, c.RecordAgreement(CASE, None, None, signed_by_client=False))

    assert rule_of(error) == "AGREEMENT_WITHOUT_CLIENT"
    assert error.value.details["fields"] == "signed_by_client,client_statement"
    assert run(record, c.RecordAgreement(CASE, None, "Yes, I want that", signed_by_client=False))


# A reopened case starts a new plan cycle: the client came back with a need the earlier plan
# did not meet, so that plan is history, not the plan of the reopened case.

REOPENED = CaseFacts(known=True, worker_id=WORKER.user_id, assessed=True, reopens=1)


def closed_with_its_plan_done() -> CasePlanning:
    record = record_of(drafted("goal-walk"))
    run(record, agree())
    run(record, c.AchieveGoal(CASE, "goal-walk", "walks to the shop"))
    run(record, c.CloseCase(CASE, DischargeReason.GOALS_ACHIEVED, None))
    return record


def test_a_reopened_case_is_not_closed_as_goals_achieved_on_its_earlier_plan() -> None:
    record = closed_with_its_plan_done()
    close = c.CloseCase(CASE, DischargeReason.GOALS_ACHIEVED, None)

    with pytest.raises(RuleBroken) as error:
        run(record, close, facts=REOPENED)

    assert rule_of(error) == "PLAN_NOT_DRAFTED"
    assert record.closures == 1


def test_a_reopened_case_gets_a_new_plan_with_new_ids_and_closes_on_it() -> None:
    record = closed_with_its_plan_done()

    for used, identifier in (
        (c.DraftPlan(CASE, "plan-1", ()), "plan-1"),
        (c.DraftPlan(CASE, "plan-2", (goal("goal-walk"),)), "goal-walk"),
    ):
        with pytest.raises(AlreadyExists) as error:
            run(record, used, facts=REOPENED)
        assert (error.value.what, error.value.identifier) == ("id", identifier)
    [new_plan] = run(record, c.DraftPlan(CASE, "plan-2", (goal("goal-home"),)), facts=REOPENED)
    assert isinstance(new_plan, PlanDrafted)
    with pytest.raises(AlreadyExists):
        run(record, c.AddGoal(CASE, goal("goal-walk")), facts=REOPENED)

    # The new plan is agreed on its own, from version 1, and its goals decide the closure.
    [agreed] = run(record, agree(version=1), facts=REOPENED)
    assert isinstance(agreed, PlanAgreed)
    assert (agreed.plan_id, agreed.plan_version, agreed.goal_ids) == ("plan-2", 1, ("goal-home",))
    close = c.CloseCase(CASE, DischargeReason.GOALS_ACHIEVED, None)
    with pytest.raises(RuleBroken) as active:
        run(record, close, facts=REOPENED)
    assert active.value.details["goal_ids"] == "goal-home"
    run(record, c.AchieveGoal(CASE, "goal-home", "back home"), facts=REOPENED)
    assert run(record, close, facts=REOPENED) == [
        CaseClosed(case_id=CASE, reason=DischargeReason.GOALS_ACHIEVED)
    ]


@pytest.mark.parametrize(
    "command",
    [
        c.AddGoal(CASE, goal("goal-home")),
        c.AchieveGoal(CASE, "goal-walk", None),
        c.RecordAgreement(CASE, None, "yes", signed_by_client=True),
    ],
)
def test_the_earlier_plan_of_a_reopened_case_is_not_worked_on(command: c.Command) -> None:
    record = record_of(drafted("goal-walk", "goal-club"))
    run(record, agree())
    run(record, c.CloseCase(CASE, DischargeReason.CLIENT_MOVED, None))

    with pytest.raises(RuleBroken) as error:
        run(record, command, facts=REOPENED)

    assert rule_of(error) == "PLAN_NOT_DRAFTED"


def test_goals_achieved_needs_a_goal_achieved_not_every_goal_dropped() -> None:
    record = record_of(drafted("goal-walk", "goal-club"))
    run(record, agree())
    run(record, c.DropGoal(CASE, "goal-walk", "physio's own plan covers it"))
    run(record, c.DropGoal(CASE, "goal-club", "not wanted any more"))

    with pytest.raises(RuleBroken) as error:
        run(record, c.CloseCase(CASE, DischargeReason.GOALS_ACHIEVED, None))

    assert rule_of(error) == "NO_GOAL_ACHIEVED"
    assert error.value.details == {"subject": CASE}
    assert record.closures == 0
    assert run(record, c.CloseCase(CASE, DischargeReason.CLIENT_WITHDREW, None))


def test_a_command_is_not_dated_before_the_case_was_opened() -> None:
    opened_at = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)
    facts = replace(FACTS, opened_at=opened_at)
    contact = c.LogContact(CASE, "contact-1", ContactKind.PHONE_CALL, "called", None)

    with pytest.raises(InvalidCommand) as error:
        decide(record_of(), facts, WORKER, contact, opened_at - timedelta(seconds=1))

    [problem] = error.value.violations
    assert problem.field == "context.occurred_at"
    assert decide(record_of(), facts, WORKER, contact, opened_at)
    assert decide(record_of(), facts, WORKER, contact, None), "no moment stated: now"


def test_a_discharge_is_planned_once_the_case_has_a_plan() -> None:
    discharge = c.PlanDischarge(CASE, date(2030, 6, 1), ("walks alone",), (), False, None)

    with pytest.raises(RuleBroken) as error:
        run(record_of(), discharge)

    assert rule_of(error) == "PLAN_NOT_DRAFTED"
    assert run(record_of(drafted("goal-walk")), discharge)


def test_work_is_not_dated_before_the_plan_it_works_on_nor_before_the_last_closure() -> None:
    drafted_at = datetime(2030, 3, 10, 9, 0, tzinfo=UTC)
    record = CasePlanning(CASE)
    record.apply(drafted("goal-walk"), drafted_at)
    earlier = drafted_at - timedelta(days=1)

    with pytest.raises(InvalidCommand) as before_the_plan:
        decide(record, FACTS, WORKER, agree(), earlier)
    [problem] = before_the_plan.value.violations
    assert problem.field == "context.occurred_at"
    assert "must not be before plan plan-1 was drafted" in problem.problem
    contact = c.LogContact(CASE, "contact-1", ContactKind.PHONE_CALL, "called", None)
    assert decide(record, FACTS, WORKER, contact, earlier), "a contact is not work on the plan"

    closed_at = drafted_at + timedelta(days=10)
    record.apply(CaseClosed(case_id=CASE, reason=DischargeReason.CLIENT_MOVED), closed_at)
    with pytest.raises(InvalidCommand) as before_the_closure:
        decide(record, REOPENED, WORKER, contact, closed_at - timedelta(days=1))
    [problem] = before_the_closure.value.violations
    assert f"must not be before case {CASE} was last closed" in problem.problem
    draft = c.DraftPlan(CASE, "plan-2", (goal("goal-home"),))
    with pytest.raises(InvalidCommand):
        decide(record, REOPENED, WORKER, draft, drafted_at)
    assert decide(record, REOPENED, WORKER, draft, closed_at + timedelta(days=1))


LCSW = WorkerCredential(kind=CredentialKind.LICENCE, name="LCSW", valid_until=date(2030, 6, 30))


def counseling_goal(owner_id: str | None, goal_id: str = "goal-cope") -> Goal:
    return goal(goal_id).model_copy(
        update={
            "need_category": NeedCategory.MENTAL_HEALTH,
            "tasks": (
                PlanTask(
                    task_id="task-sessions",
                    description="Weekly sessions on adjusting to his altered body",
                    owner=TaskOwner(kind=TaskOwnerKind.WORKER, owner_id=owner_id),
                    target_date=date(2030, 3, 8),
                ),
            ),
        }
    )


def test_counseling_tasks_go_only_to_workers_licensed_to_counsel() -> None:
    # A case manager may not counsel (DOMAIN.md): planning learns who may from the credentials
    # the case assignments carry, and applies the rule coordination assigns cases by.
    case_manager = StaffMember(OTHER_WORKER.user_id, OTHER_WORKER.role)
    facts = replace(FACTS, worker_id=OTHER_WORKER.user_id)
    draft = c.DraftPlan(CASE, "plan-1", (counseling_goal(OTHER_WORKER.user_id),))

    with pytest.raises(RuleBroken) as error:
        decide(
            record_of(), facts, OTHER_WORKER, draft, staff={case_manager.worker_id: case_manager}
        )

    assert rule_of(error) == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert error.value.details["field"] == "goals[0].tasks[0].owner.owner_id"
    assert error.value.details["worker_id"] == OTHER_WORKER.user_id
    # Neither the need (special data) nor the task's description is named.
    told = f"{error.value} {error.value.details}"
    assert "mental" not in told
    assert "altered body" not in told
    # Unknown to planning (never assigned a case), a worker's licence cannot be taken on trust.
    with pytest.raises(RuleBroken, match="knows no credentials of worker"):
        decide(record_of(), facts, OTHER_WORKER, draft)

    licensed = StaffMember(WORKER.user_id, WORKER.role, (LCSW,))
    staff = {WORKER.user_id: licensed}
    # The case's worker when the task names none; a licence that expired before the task's
    # date does not count.
    [event] = decide(
        record_of(),
        FACTS,
        WORKER,
        c.DraftPlan(CASE, "plan-1", (counseling_goal(None),)),
        staff=staff,
    )
    assert isinstance(event, PlanDrafted)
    expired = replace(
        licensed, credentials=(LCSW.model_copy(update={"valid_until": date(2030, 3, 7)}),)
    )
    with pytest.raises(RuleBroken):
        decide(
            record_of(),
            FACTS,
            WORKER,
            c.DraftPlan(CASE, "plan-1", (counseling_goal(None),)),
            staff={WORKER.user_id: expired},
        )
    # Added or revised later, the same.
    record = record_of(drafted("goal-walk"))
    with pytest.raises(RuleBroken) as error:
        decide(
            record,
            facts,
            OTHER_WORKER,
            c.AddGoal(CASE, counseling_goal(None)),
            staff={case_manager.worker_id: case_manager},
        )
    assert error.value.details["field"] == "goal.tasks[0].owner.owner_id"
    revised = counseling_goal(OTHER_WORKER.user_id, goal_id="goal-walk")
    with pytest.raises(RuleBroken):
        decide(
            record,
            facts,
            OTHER_WORKER,
            c.ReviseGoal(CASE, revised, "it is counseling"),
            staff={case_manager.worker_id: case_manager},
        )


def test_a_counseling_task_dated_before_the_command_needs_a_licence_valid_on_its_day() -> None:
    # The task is still to be carried out: a target date in the past does not take the
    # worker back to when their licence held.
    lapsed = LCSW.model_copy(update={"valid_until": date(2030, 3, 9)})
    staff = {WORKER.user_id: StaffMember(WORKER.user_id, WORKER.role, (lapsed,))}
    draft = c.DraftPlan(CASE, "plan-1", (counseling_goal(None),))  # its task: 2030-03-08
    assert decide(record_of(), FACTS, WORKER, draft, staff=staff, day=date(2030, 3, 9))

    with pytest.raises(RuleBroken) as error:
        decide(record_of(), FACTS, WORKER, draft, staff=staff, day=date(2030, 3, 10))

    assert rule_of(error) == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert "holds none valid on 2030-03-10" in str(error.value)
    record = record_of(drafted("goal-walk"))
    for command in (
        c.AddGoal(CASE, counseling_goal(None)),
        c.ReviseGoal(CASE, counseling_goal(None, goal_id="goal-walk"), "it is counseling"),
    ):
        with pytest.raises(RuleBroken):
            decide(record, FACTS, WORKER, command, staff=staff, day=date(2030, 3, 10))


def test_a_need_a_provider_took_on_leaves_the_workers_tasks_to_anyone() -> None:
    # The counseling is the provider's: the case manager's tasks toward it are coordination.
    facts = replace(
        FACTS,
        worker_id=OTHER_WORKER.user_id,
        referred_needs=frozenset({NeedCategory.MENTAL_HEALTH}),
    )
    draft = c.DraftPlan(CASE, "plan-1", (counseling_goal(OTHER_WORKER.user_id),))

    [event] = decide(record_of(), facts, OTHER_WORKER, draft)

    assert isinstance(event, PlanDrafted)
    provider_task = (
        counseling_goal(None)
        .tasks[0]
        .model_copy(
            update={"owner": TaskOwner(kind=TaskOwnerKind.PROVIDER, owner_id="harbor-counseling")}
        )
    )
    by_provider = counseling_goal(None).model_copy(update={"tasks": (provider_task,)})
    facts = replace(FACTS, worker_id=OTHER_WORKER.user_id)
    assert decide(record_of(), facts, OTHER_WORKER, c.DraftPlan(CASE, "plan-1", (by_provider,)))


def test_a_transfer_does_not_hand_counseling_to_a_worker_who_may_not_counsel() -> None:
    """A task naming no owner is the case's worker's: drafted by a licensed social worker,
    then the case transferred to a case manager (coordination transfers by the case's needs,
    not the plan's goals), she agreed the plan and achieved the counseling goal, while adding
    the same task was refused."""
    case_manager = StaffMember(OTHER_WORKER.user_id, OTHER_WORKER.role)
    licensed = StaffMember(WORKER.user_id, WORKER.role, (LCSW,))
    staff = {OTHER_WORKER.user_id: case_manager, WORKER.user_id: licensed}
    transferred = replace(FACTS, worker_id=OTHER_WORKER.user_id)
    drafted_plan = PlanDrafted(
        case_id=CASE, plan_id="plan-1", goals=(counseling_goal(None), goal("goal-walk"))
    )
    progress = (GoalProgress(goal_id="goal-cope", rating=ProgressRating.ON_TRACK),)
    evaluation = c.EvaluateProgress(CASE, "eval-1", progress, (), (), False)

    # The case's worker is shown the mental-health goal (``sensitive_shown``).
    def refused(record: CasePlanning, command: c.Command) -> RuleBroken:
        with pytest.raises(RuleBroken) as error:
            decide(record, transferred, OTHER_WORKER, command, staff=staff, sensitive_shown=True)
        return error.value

    def carried_on(record: CasePlanning, command: c.Command) -> None:
        for event in decide(
            record, transferred, OTHER_WORKER, command, staff=staff, sensitive_shown=True
        ):
            record.apply(event)

    refusal = refused(record_of(drafted_plan), agree())
    assert refusal.rule == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert refusal.details == {
        "subject": "task-sessions",
        "field": "goal.tasks[0].owner.owner_id",
        "goal_id": "goal-cope",
        "worker_id": OTHER_WORKER.user_id,
        "required_licences": "LBSW,LMSW,LCSW",
        "suggested_action": "ReviseGoal",
    }
    assert "ReviseGoal" in str(refusal)
    assert "mental" not in str(refusal)
    assert "altered body" not in str(refusal)
    # Agreed before the transfer: the goal is not achieved, nor its progress evaluated.
    agreed = record_of(drafted_plan)
    for event in decide(agreed, FACTS, WORKER, agree(), staff=staff):
        agreed.apply(event)
    for command in (c.AchieveGoal(CASE, "goal-cope", "sessions held"), evaluation):
        assert refused(agreed, command).rule == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    # The rest of the plan is carried on; the counseling goal may be dropped.
    walk = c.AchieveGoal(CASE, "goal-walk", None)
    assert decide(agreed, transferred, OTHER_WORKER, walk, staff=staff)
    drop = c.DropGoal(CASE, "goal-cope", "referred out")
    assert decide(agreed, transferred, OTHER_WORKER, drop, staff=staff, sensitive_shown=True)
    # Given a licensed owner (the case manager may), agreed again, then achieved.
    revised = counseling_goal(WORKER.user_id)
    carried_on(agreed, c.ReviseGoal(CASE, revised, "Ana counsels"))
    carried_on(agreed, agree())
    carried_on(agreed, c.AchieveGoal(CASE, "goal-cope", "sessions held"))
    # A need a provider took on is no longer the worker's to counsel.
    referred = replace(transferred, referred_needs=frozenset({NeedCategory.MENTAL_HEALTH}))
    assert decide(record_of(drafted_plan), referred, OTHER_WORKER, agree(), staff=staff)


def test_a_named_owner_carries_their_counseling_task_on_only_while_they_may_counsel() -> None:
    """A counseling task naming its owner was never checked again once planned: its goal was
    achieved after the owner's licence lapsed, while the same task naming no owner, carried by
    the case's worker, was refused."""
    licensed = StaffMember(WORKER.user_id, WORKER.role, (LCSW,))  # until 2030-06-30
    case_manager = StaffMember(OTHER_WORKER.user_id, OTHER_WORKER.role)
    staff = {WORKER.user_id: licensed, OTHER_WORKER.user_id: case_manager}
    transferred = replace(FACTS, worker_id=OTHER_WORKER.user_id)
    record = record_of(
        PlanDrafted(case_id=CASE, plan_id="plan-1", goals=(counseling_goal(WORKER.user_id),))
    )
    achieve = c.AchieveGoal(CASE, "goal-cope", "sessions held")
    progress = (GoalProgress(goal_id="goal-cope", rating=ProgressRating.ON_TRACK),)
    evaluation = c.EvaluateProgress(CASE, "eval-1", progress, (), (), False)
    before_lapse, after_lapse = date(2030, 6, 30), date(2030, 7, 1)

    def decided(command: c.Command, on: date, known: dict[str, StaffMember]) -> list[CaseEvent]:
        # The case's worker is shown the mental-health goal (``sensitive_shown``).
        return decide(
            record, transferred, OTHER_WORKER, command, staff=known, day=on, sensitive_shown=True
        )

    # Named, the task is its owner's, whoever carries the case: the case manager carries it on.
    for event in decided(agree(), before_lapse, staff):
        record.apply(event)
    assert decided(achieve, before_lapse, staff)

    for command in (achieve, evaluation):
        with pytest.raises(RuleBroken) as error:
            decided(command, after_lapse, staff)
        assert rule_of(error) == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
        assert error.value.details["worker_id"] == WORKER.user_id
        assert error.value.details["field"] == "goal.tasks[0].owner.owner_id"
        assert "is carried by the owner it names" in str(error.value)
        assert f"holds none valid on {after_lapse.isoformat()}" in str(error.value)
    # An owner planning knows nothing of is not taken on trust; the handler looks them up.
    with pytest.raises(RuleBroken, match=f"knows no credentials of worker {WORKER.user_id}"):
        decided(achieve, before_lapse, {})
    assert deciding_workers(achieve, transferred, record) == {WORKER.user_id}


def test_a_plan_holds_a_bounded_number_and_size_of_goals() -> None:
    """Each goal stayed within the event bound, but nothing bounded the plan: 30 large goals
    made a case view over gRPC's 4 MiB, which the assigned worker could never read again
    (and each attempt was recorded as a read)."""
    record = record_of(drafted(*(f"goal-{n}" for n in range(MAX_GOALS_PER_PLAN))))
    with pytest.raises(RuleBroken) as error:
        run(record, c.AddGoal(CASE, goal("goal-one-more")))
    assert (rule_of(error), error.value.details["limit"]) == (
        "PLAN_TOO_LARGE",
        str(MAX_GOALS_PER_PLAN),
    )

    large = "x" * 19_000
    record = record_of(drafted())
    added, refusal = 0, None
    while refusal is None:
        big = goal(f"goal-{added}", large).model_copy(update={"objectives": (large,) * 5})
        refusal = _refused(record, c.AddGoal(CASE, big))
        added += refusal is None
    assert refusal.rule == "PLAN_TOO_LARGE"
    assert 0 < added < MAX_GOALS_PER_PLAN
    assert "bytes of goals" in str(refusal)
    assert large not in str(refusal)  # a goal's words are sensitive: never in a refusal

    # Revising a goal larger is bounded the same way; dropping one does not make room.
    kept = next(iter(record.plan.goals)) if record.plan else ""
    revised = goal(kept, large).model_copy(update={"objectives": (large,) * 10})
    with pytest.raises(RuleBroken) as error:
        run(record, c.ReviseGoal(CASE, revised, "more detail"))
    assert rule_of(error) == "PLAN_TOO_LARGE"


def test_the_plan_bound_counts_bytes_and_lets_an_oversized_plan_shrink() -> None:
    """The bound counted characters: goals of four-byte characters took 4 MB of JSON under a
    '1 MiB' bound. And a plan stored before the bounds, past them, could not be revised at
    all, not even shorter."""
    wide = "\N{GRINNING FACE}" * 19_000
    record = record_of(drafted())
    added, refusal = 0, None
    while refusal is None:
        big = goal(f"goal-{added}", wide).model_copy(update={"objectives": (wide,) * 2})
        refusal = _refused(record, c.AddGoal(CASE, big))
        added += refusal is None
    assert refusal.rule == "PLAN_TOO_LARGE"
    assert added * 3 * 19_000 * 4 <= MAX_PLAN_GOALS_BYTES + 3 * 19_000 * 4

    stored_before = record_of(drafted(*(f"goal-{n}" for n in range(MAX_GOALS_PER_PLAN + 5))))
    run(stored_before, c.ReviseGoal(CASE, goal("goal-0", "Walk"), "shorter"))  # not refused
    with pytest.raises(RuleBroken) as error:
        run(stored_before, c.AddGoal(CASE, goal("goal-one-more")))
    assert rule_of(error) == "PLAN_TOO_LARGE"


def _refused(record: CasePlanning, command: c.Command) -> RuleBroken | None:
    try:
        run(record, command)
    except RuleBroken as refusal:
        return refusal
    return None


def test_work_is_not_dated_between_the_last_closure_and_the_reopening_that_followed() -> None:
    """A plan dated while the case stood closed: audit's state as it happened showed it made
    on a closed case."""
    closed_at = datetime(2030, 3, 10, 9, 0, tzinfo=UTC)
    reopened_at = closed_at + timedelta(days=3)
    record = CasePlanning(CASE)
    record.apply(drafted("goal-walk"), closed_at - timedelta(days=30))
    record.apply(CaseClosed(case_id=CASE, reason=DischargeReason.CLIENT_MOVED), closed_at)
    facts = replace(REOPENED, reopened_at=reopened_at)
    draft = c.DraftPlan(CASE, "plan-2", (goal("goal-home"),))

    with pytest.raises(InvalidCommand) as while_closed:
        decide(record, facts, WORKER, draft, reopened_at - timedelta(days=1))
    [problem] = while_closed.value.violations
    assert problem.field == "context.occurred_at"
    assert f"must not be before case {CASE} was last reopened" in problem.problem
    assert decide(record, facts, WORKER, draft, reopened_at), "at the reopening's moment"


def test_a_closure_is_not_dated_before_its_cycles_latest_work() -> None:
    """A closure for goals achieved stated between the drafting and the agreement was
    accepted: audit's state as of it showed the case closed for goals achieved with its plan
    never agreed and its goal active."""
    drafted_at = datetime(2030, 3, 10, 9, 0, tzinfo=UTC)
    record = CasePlanning(CASE)
    record.apply(drafted("goal-walk"), drafted_at)
    record.apply(
        PlanAgreed(
            case_id=CASE, plan_id="plan-1", plan_version=1, goal_ids=("goal-walk",),
            signed_by_client=True,
        ),
        drafted_at + timedelta(days=2),
    )  # fmt: skip
    achieved_at = drafted_at + timedelta(days=5)
    record.apply(GoalAchieved(case_id=CASE, plan_id="plan-1", goal_id="goal-walk"), achieved_at)
    # A contact written up late, dated before the achievement, is not the latest work.
    contact = ContactLogged(
        case_id=CASE, contact_id="contact-1", kind=ContactKind.PHONE_CALL, summary="ok"
    )
    record.apply(contact, drafted_at + timedelta(days=1))
    closure = c.CloseCase(CASE, DischargeReason.GOALS_ACHIEVED, None)

    # The case's worker is told the work by name (``sensitive_shown``).
    with pytest.raises(InvalidCommand) as error:
        decide(record, FACTS, WORKER, closure, drafted_at + timedelta(days=1), sensitive_shown=True)

    [problem] = error.value.violations
    assert problem.field == "context.occurred_at"
    assert problem.problem.startswith(
        f"must not be before goal goal-walk was achieved ({achieved_at.isoformat()}),"
    )
    [event] = decide(record, FACTS, WORKER, closure, achieved_at)
    record.apply(event, achieved_at)
    # The reopened case's closure follows its own cycle's work, the earlier cycle's is done.
    reopened_at = achieved_at + timedelta(days=1)
    facts = replace(REOPENED, reopened_at=reopened_at)
    logged = c.LogContact(CASE, "contact-2", ContactKind.HOME_VISIT, "back", None)
    for event in decide(record, facts, WORKER, logged, reopened_at + timedelta(days=3)):
        record.apply(event, reopened_at + timedelta(days=3))
    moved = c.CloseCase(CASE, DischargeReason.CLIENT_MOVED, None)
    with pytest.raises(InvalidCommand, match="contact contact-2 was logged"):
        decide(record, facts, WORKER, moved, reopened_at + timedelta(days=2), sensitive_shown=True)
    assert decide(record, facts, WORKER, moved, reopened_at + timedelta(days=3))
