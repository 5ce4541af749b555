"""The plan's work is dated in an order planning allows: audit folds a case's history by the
moments its events state, so an achievement dated before the agreement it needs showed, as of
it, a goal achieved on a plan never agreed, and one dated before the goal's revision left the
goal active in audit for good while planning had it achieved."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from casetrail_platform.commands import CommandRejected, InvalidCommand
from events.catalog.base import CaseEvent
from events.catalog.monitoring import GoalProgress, ProgressEvaluated, ProgressRating
from events.catalog.planning import GoalAchieved, GoalDropped, GoalRevised
from events.envelope import RecordedEvent
from services.audit.domain.case_state import fold
from services.audit.domain.history import TimeBasis, sort_key
from services.planning.domain import commands as c
from services.planning.domain.decisions import decide
from services.planning.domain.model import CaseFacts, CasePlanning, GoalState, GoalStatus
from tests.unit.audit.support import Producer
from tests.unit.planning.support import START, WORKER, goal

CASE = "case-1"
FACTS = CaseFacts(known=True, worker_id=WORKER.user_id, assessed=True)
H = timedelta(hours=1)


def done(record: CasePlanning, command: c.Command, at: datetime) -> list[CaseEvent]:
    events = decide(record, FACTS, WORKER, command, at)
    for event in events:
        record.apply(event, at)
    return events


def refusal(record: CasePlanning, command: c.Command, at: datetime) -> str:
    with pytest.raises(InvalidCommand) as error:
        decide(record, FACTS, WORKER, command, at)
    [problem] = error.value.violations
    assert problem.field == "context.occurred_at"
    return problem.problem


def agree() -> c.RecordAgreement:
    return c.RecordAgreement(CASE, None, "yes", signed_by_client=True)


def rated(evaluation_id: str, *goal_ids: str) -> c.EvaluateProgress:
    progress = tuple(GoalProgress(goal_id=g, rating=ProgressRating.ON_TRACK) for g in goal_ids)
    return c.EvaluateProgress(CASE, evaluation_id, progress, (), (), False)


def test_a_goal_is_achieved_or_evaluated_not_before_the_agreement_to_it_as_it_stands() -> None:
    record = CasePlanning(CASE)
    done(record, c.DraftPlan(CASE, "plan-1", (goal("goal-walk"),)), START + H)
    done(record, agree(), START + 3 * H)
    achieve = c.AchieveGoal(CASE, "goal-walk", "walks")

    assert refusal(record, achieve, START + 2 * H).startswith(
        "must not be before the client agreed to goal goal-walk as it stands"
        f" ({(START + 3 * H).isoformat()})"
    )
    assert "plan plan-1 was first agreed" in refusal(record, rated("eval-0"), START + 2 * H)
    done(record, c.ReviseGoal(CASE, goal("goal-walk", "Walk to the park"), "keen"), START + 4 * H)
    done(record, agree(), START + 5 * H)

    for command in (achieve, rated("eval-1", "goal-walk")):
        assert refusal(record, command, START + 3 * H).startswith(
            f"must not be before goal goal-walk was revised ({(START + 4 * H).isoformat()})"
        )
        assert refusal(record, command, START + 4 * H).startswith(
            "must not be before the client agreed to goal goal-walk as it stands"
            f" ({(START + 5 * H).isoformat()})"
        )
    assert done(record, rated("eval-1", "goal-walk"), START + 5 * H)
    assert done(record, achieve, START + 5 * H), "at the agreement's moment"


def test_the_plan_is_changed_and_agreed_not_before_its_latest_work() -> None:
    record = CasePlanning(CASE)
    done(record, c.DraftPlan(CASE, "plan-1", (goal("goal-walk"), goal("goal-club"))), START + H)
    done(record, c.ReviseGoal(CASE, goal("goal-walk", "Walk to the park"), "keen"), START + 3 * H)

    drop = c.DropGoal(CASE, "goal-walk", "moved away")
    assert refusal(record, drop, START + 2 * H).startswith(
        f"must not be before goal goal-walk was revised ({(START + 3 * H).isoformat()})"
    )
    done(record, agree(), START + 4 * H)
    done(record, rated("eval-1", "goal-club"), START + 6 * H)
    revise = c.ReviseGoal(CASE, goal("goal-club", "Join the club on Thursdays"), "day")
    assert "evaluation eval-1 was made" in refusal(record, revise, START + 5 * H)
    done(record, c.AchieveGoal(CASE, "goal-club", "joined"), START + 7 * H)
    for command in (drop, agree()):
        assert "goal goal-club was achieved" in refusal(record, command, START + 6 * H)
    assert done(record, drop, START + 7 * H)


def test_work_needing_nothing_newer_may_be_written_up_late() -> None:
    """A goal's evaluation or achievement needs the agreement to it, not every later change of
    the plan: written up late, it is dated when it happened."""
    record = CasePlanning(CASE)
    done(record, c.DraftPlan(CASE, "plan-1", (goal("goal-walk"),)), START)
    done(record, agree(), START + H)
    done(record, c.AddGoal(CASE, goal("goal-club")), START + 5 * H)
    done(record, agree(), START + 6 * H)

    assert done(record, rated("eval-1", "goal-walk"), START + 3 * H)
    assert done(record, c.AchieveGoal(CASE, "goal-walk", "walks"), START + 4 * H)
    added_later = refusal(record, rated("eval-2", "goal-club"), START + 4 * H)
    assert added_later.startswith(
        f"must not be before goal goal-club was added ({(START + 5 * H).isoformat()})"
    )


def test_audit_folds_any_plan_history_planning_accepts_as_planning_holds_it() -> None:
    """Random plan work at random moments: whatever planning accepts reads, in the order of the
    moments it states, as work planning allows, and audit's fold of it ends where planning's
    record does."""
    for seed in range(300):
        rng = random.Random(seed)
        record = CasePlanning(CASE)
        stream = Producer("casetrail/planning", f"case-{CASE}")
        recorded: list[RecordedEvent] = []
        draft = c.DraftPlan(CASE, "plan-1", (goal("goal-a"), goal("goal-b")))
        commands: list[c.Command] = [draft, *(_random_work(rng, step) for step in range(40))]
        for step, command in enumerate(commands):
            # The work goes on hour by hour, some written up late: dated up to 5 hours back.
            at = START + (step - rng.randrange(0, 6)) * H
            try:
                events = done(record, command, at)
            except CommandRejected:
                continue
            for event in events:
                moment = START + timedelta(days=30, seconds=step)
                recorded.append(stream.record(event, occurred_at=at, recorded_at=moment))
        in_time = sorted(recorded, key=lambda r: sort_key(r, TimeBasis.OCCURRED))

        as_it_happened = _allowed_in_this_order(in_time)

        assert record.plan is not None
        assert as_it_happened.plan is not None
        statuses = {g: state.status.value for g, state in record.plan.goals.items()}
        assert {g: s.status.value for g, s in as_it_happened.plan.goals.items()} == statuses
        audit = fold(CASE, in_time, TimeBasis.OCCURRED)
        assert audit.plan is not None
        assert {g.goal_id: g.status for g in audit.plan.goals} == statuses, seed
        assert audit.plan.agreed_version == record.plan.agreed_version, seed


def _random_work(rng: random.Random, step: int) -> c.Command:
    goal_id = rng.choice(("goal-a", "goal-b", "goal-c"))
    match rng.randrange(6):
        case 0:
            return c.AddGoal(CASE, goal(goal_id))
        case 1:
            return c.ReviseGoal(CASE, goal(goal_id, f"Revised at step {step}"), "changed")
        case 2:
            return c.AchieveGoal(CASE, goal_id, None)
        case 3:
            return c.DropGoal(CASE, goal_id, "not needed")
        case 4:
            return agree()
        case _:
            return rated(f"eval-{step}", *rng.sample(("goal-a", "goal-b", "goal-c"), 2))


def _allowed_in_this_order(history: list[RecordedEvent]) -> CasePlanning:
    """``history`` folded in its order, each goal achieved, evaluated, revised or dropped only
    when planning allows it at that point."""
    record = CasePlanning(CASE)
    for recorded in history:
        event = recorded.event
        match event:
            case GoalRevised():
                assert _goal(record, event.goal.goal_id).status is GoalStatus.ACTIVE, recorded
            case GoalDropped():
                assert _goal(record, event.goal_id).status is GoalStatus.ACTIVE, recorded
            case GoalAchieved():
                achieved = _goal(record, event.goal_id)
                assert achieved.status is GoalStatus.ACTIVE, recorded
                assert achieved.agreed, recorded
            case ProgressEvaluated():
                assert record.plan is not None
                assert record.plan.ever_agreed, recorded
                for entry in event.goal_progress:
                    assert _goal(record, entry.goal_id).agreed, recorded
                    assert _goal(record, entry.goal_id).status is not GoalStatus.DROPPED, recorded
        record.apply(event, recorded.metadata.occurred_at)
    return record


def _goal(record: CasePlanning, goal_id: str) -> GoalState:
    assert record.plan is not None
    return record.plan.goals[goal_id]
