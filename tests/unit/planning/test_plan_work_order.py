"""The plan's work is dated in an order planning allows: audit folds a case's history by the
moments its events state, so an achievement dated before the agreement it needs showed, as of
it, a goal achieved on a plan never agreed, and one dated before the goal's revision left the
goal active in audit for good while planning had it achieved. An evaluation needs only the
first agreements to its goals: written up late, it is dated when the review was held, before
the revision that review asked for."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

import pytest

from casetrail_platform.commands import CommandRejected, InvalidCommand
from events.catalog.base import CaseEvent
from events.catalog.cases import DischargeReason
from events.catalog.monitoring import GoalProgress, ProgressEvaluated, ProgressRating
from events.catalog.planning import (
    GoalAchieved,
    GoalAdded,
    GoalDropped,
    GoalRevised,
    PlanAgreed,
)
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
    events = decide(record, FACTS, WORKER, command, at, sensitive_shown=True)
    for event in events:
        record.apply(event, at)
    return events


def refusal(record: CasePlanning, command: c.Command, at: datetime) -> str:
    with pytest.raises(InvalidCommand) as error:
        decide(record, FACTS, WORKER, command, at, sensitive_shown=True)
    [problem] = error.value.violations
    assert problem.field == "context.occurred_at"
    return problem.problem


def agree() -> c.RecordAgreement:
    return c.RecordAgreement(CASE, None, "yes", signed_by_client=True)


def rated(evaluation_id: str, *goal_ids: str) -> c.EvaluateProgress:
    progress = tuple(GoalProgress(goal_id=g, rating=ProgressRating.ON_TRACK) for g in goal_ids)
    return c.EvaluateProgress(CASE, evaluation_id, progress, (), (), False)


def test_a_goal_is_achieved_not_before_the_agreement_to_it_as_it_stands() -> None:
    record = CasePlanning(CASE)
    done(record, c.DraftPlan(CASE, "plan-1", (goal("goal-walk"),)), START + H)
    done(record, agree(), START + 3 * H)
    achieve = c.AchieveGoal(CASE, "goal-walk", "walks")

    assert refusal(record, achieve, START + 2 * H).startswith(
        "must not be before the client agreed to goal goal-walk as it stands"
        f" ({(START + 3 * H).isoformat()})"
    )
    done(record, c.ReviseGoal(CASE, goal("goal-walk", "Walk to the park"), "keen"), START + 4 * H)
    done(record, agree(), START + 5 * H)

    assert refusal(record, achieve, START + 3 * H).startswith(
        f"must not be before goal goal-walk was revised ({(START + 4 * H).isoformat()})"
    )
    assert refusal(record, achieve, START + 4 * H).startswith(
        "must not be before the client agreed to goal goal-walk as it stands"
        f" ({(START + 5 * H).isoformat()})"
    )
    assert done(record, achieve, START + 5 * H), "at the agreement's moment"


def test_a_goal_is_evaluated_not_before_the_client_first_agreed_to_it_and_the_plan() -> None:
    record = CasePlanning(CASE)
    done(record, c.DraftPlan(CASE, "plan-1", (goal("goal-walk"),)), START + H)
    done(record, agree(), START + 3 * H)
    assert "plan plan-1 was first agreed" in refusal(record, rated("eval-0"), START + 2 * H)
    done(record, c.AddGoal(CASE, goal("goal-club")), START + 4 * H)
    done(record, agree(), START + 6 * H)

    both = rated("eval-1", "goal-walk", "goal-club")
    assert refusal(record, both, START + 5 * H).startswith(
        "must not be before the client first agreed to goal goal-club"
        f" ({(START + 6 * H).isoformat()})"
    )
    assert done(record, both, START + 6 * H)


def test_an_evaluation_written_up_late_may_be_dated_before_the_revision_it_asked_for() -> None:
    """The review meeting finds the goal off track, the goal is revised with the client and
    agreed again the same day, and the worker writes the review up afterwards, dated when it
    was held: it rates the goal as it stood then, agreed."""
    record = CasePlanning(CASE)
    stream = Producer("casetrail/planning", f"case-{CASE}")
    recorded: list[RecordedEvent] = []

    def entered(command: c.Command, at: datetime) -> None:
        for event in done(record, command, at):
            entered_at = START + timedelta(days=1, minutes=len(recorded))
            recorded.append(stream.record(event, occurred_at=at, recorded_at=entered_at))

    entered(c.DraftPlan(CASE, "plan-1", (goal("goal-walk"),)), START)
    entered(agree(), START + H)
    entered(c.ReviseGoal(CASE, goal("goal-walk", "Walk to the park"), "too much"), START + 3 * H)
    entered(agree(), START + 4 * H)
    off_track = GoalProgress(goal_id="goal-walk", rating=ProgressRating.NO_CHANGE)
    review = c.EvaluateProgress(CASE, "eval-1", (off_track,), (), (), True)

    entered(review, START + 2 * H)

    in_time = sorted(recorded, key=lambda r: sort_key(r, TimeBasis.OCCURRED))
    assert [type(r.event) for r in in_time][2:4] == [ProgressEvaluated, GoalRevised]
    assert _allowed_in_this_order(in_time).plan == record.plan
    audit = fold(CASE, in_time, TimeBasis.OCCURRED)
    assert audit.plan is not None
    assert [(g.goal_id, g.status) for g in audit.plan.goals] == [("goal-walk", "active")]
    assert audit.plan.agreements[-1].goal_ids == ("goal-walk",)
    assert audit.plan.agreed_version == record.plan_version == 2
    # The plan's changes follow its changes, not the review written up late.
    revise = c.ReviseGoal(CASE, goal("goal-walk", "Walk to the corner"), "still too much")
    assert "plan plan-1 was agreed" in refusal(record, revise, START + 3 * H)
    assert done(record, revise, START + 4 * H)


def test_the_plan_is_changed_and_agreed_not_before_its_latest_change_or_achievement() -> None:
    record = CasePlanning(CASE)
    done(record, c.DraftPlan(CASE, "plan-1", (goal("goal-walk"), goal("goal-club"))), START + H)
    done(record, c.ReviseGoal(CASE, goal("goal-walk", "Walk to the park"), "keen"), START + 3 * H)

    drop = c.DropGoal(CASE, "goal-walk", "moved away")
    assert refusal(record, drop, START + 2 * H).startswith(
        f"must not be before goal goal-walk was revised ({(START + 3 * H).isoformat()})"
    )
    done(record, agree(), START + 4 * H)
    done(record, c.AchieveGoal(CASE, "goal-club", "joined"), START + 6 * H)
    for command in (drop, agree()):
        assert "goal goal-club was achieved" in refusal(record, command, START + 5 * H)
    assert done(record, drop, START + 6 * H)


def test_a_revision_may_be_dated_before_an_evaluation_not_a_drop_of_its_goal() -> None:
    """A revision agreed at a meeting may be entered after an evaluation made since, dated when
    it was made (the evaluation needs only the first agreement to its goals); a goal is not
    dropped before its evaluation (a dropped goal is not evaluated), nor the case closed."""
    record = CasePlanning(CASE)
    done(record, c.DraftPlan(CASE, "plan-1", (goal("goal-walk"), goal("goal-club"))), START)
    done(record, agree(), START + H)
    done(record, rated("eval-1", "goal-club"), START + 5 * H)

    assert done(
        record, c.ReviseGoal(CASE, goal("goal-walk", "Walk to the park"), "keen"), START + 3 * H
    )
    assert done(record, agree(), START + 4 * H)
    drop_club = c.DropGoal(CASE, "goal-club", "not needed")
    assert refusal(record, drop_club, START + 4 * H).startswith(
        f"must not be before evaluation eval-1 was made ({(START + 5 * H).isoformat()})"
    )
    assert done(record, c.DropGoal(CASE, "goal-walk", "moved away"), START + 4 * H)
    closure = c.CloseCase(CASE, DischargeReason.CLIENT_MOVED, None)
    assert "evaluation eval-1 was made" in refusal(record, closure, START + 4 * H)
    assert done(record, drop_club, START + 5 * H)


def test_work_needing_nothing_newer_may_be_written_up_late() -> None:
    """A goal's evaluation or achievement needs the agreement to it, not every later change of
    the plan: written up late, it is dated when it happened. A goal added later is evaluated
    once the client agreed to it."""
    record = CasePlanning(CASE)
    done(record, c.DraftPlan(CASE, "plan-1", (goal("goal-walk"),)), START)
    done(record, agree(), START + H)
    done(record, c.AddGoal(CASE, goal("goal-club")), START + 5 * H)
    done(record, agree(), START + 6 * H)

    assert done(record, rated("eval-1", "goal-walk"), START + 3 * H)
    assert done(record, c.AchieveGoal(CASE, "goal-walk", "walks"), START + 4 * H)
    agreed_later = refusal(record, rated("eval-2", "goal-club"), START + 5 * H)
    assert agreed_later.startswith(
        "must not be before the client first agreed to goal goal-club"
        f" ({(START + 6 * H).isoformat()})"
    )


def test_audit_folds_any_plan_history_planning_accepts_as_planning_holds_it() -> None:
    """Random plan work at random moments: whatever planning accepts reads, in the order of the
    moments it states, as work planning allows, and audit's fold of it ends where planning's
    record does. Among the histories: evaluations written up late, dated before a revision of
    a goal they rate entered before them, and changes dated before an evaluation entered
    before them."""
    out_of_order = Counter[str]()
    for seed in range(300):
        rng = random.Random(seed)
        record = CasePlanning(CASE)
        stream = Producer("casetrail/planning", f"case-{CASE}")
        recorded: list[RecordedEvent] = []
        draft = c.DraftPlan(CASE, "plan-1", (goal("goal-a"), goal("goal-b")))
        steps: list[list[tuple[c.Command, int]]] = [[(draft, rng.randrange(0, 6))]]
        steps += (_random_work(rng, step) for step in range(40))
        for step, work in enumerate(steps):
            # The work goes on hour by hour, some written up late: dated up to 5 hours back.
            for command, hours_late in work:
                at = START + (step - hours_late) * H
                try:
                    events = done(record, command, at)
                except CommandRejected:
                    continue
                for event in events:
                    entered = START + timedelta(days=30, seconds=len(recorded))
                    recorded.append(stream.record(event, occurred_at=at, recorded_at=entered))
        in_time = sorted(recorded, key=lambda r: sort_key(r, TimeBasis.OCCURRED))
        out_of_order.update(_evaluations_out_of_order(recorded))

        as_it_happened = _allowed_in_this_order(in_time)

        assert record.plan is not None
        assert as_it_happened.plan is not None
        statuses = {g: state.status.value for g, state in record.plan.goals.items()}
        assert {g: s.status.value for g, s in as_it_happened.plan.goals.items()} == statuses
        audit = fold(CASE, in_time, TimeBasis.OCCURRED)
        assert audit.plan is not None
        assert {g.goal_id: g.status for g in audit.plan.goals} == statuses, seed
        assert audit.plan.agreed_version == record.plan.agreed_version, seed
    assert out_of_order["evaluated before a revision"] >= 100, out_of_order
    assert out_of_order["changed before an evaluation"] >= 100, out_of_order


def _random_work(rng: random.Random, step: int) -> list[tuple[c.Command, int]]:
    """One step's work, each command with how many hours late it is entered (dated back)."""
    goal_id, other_id = rng.sample(("goal-a", "goal-b", "goal-c"), 2)
    revise = c.ReviseGoal(CASE, goal(goal_id, f"Revised at step {step}"), "changed")
    evaluation = f"eval-{step}"
    match rng.randrange(8):
        case 0:
            return [(c.AddGoal(CASE, goal(goal_id)), rng.randrange(0, 6))]
        case 1:
            return [(revise, rng.randrange(0, 6))]
        case 2:
            return [(c.AchieveGoal(CASE, goal_id, None), rng.randrange(0, 6))]
        case 3:
            return [(c.DropGoal(CASE, goal_id, "not needed"), rng.randrange(0, 6))]
        case 4:
            return [(agree(), rng.randrange(0, 6))]
        case 5:
            return [(rated(evaluation, goal_id, other_id), rng.randrange(0, 6))]
        case 6:
            # A review finds the goal off track; it is revised and agreed again at once, and
            # the review written up after, dated when it was held.
            held = rng.randrange(1, 6)
            return [(revise, 0), (agree(), 0), (rated(evaluation, goal_id), held)]
        case _:
            # A goal revised and agreed again at a meeting, or dropped (the one evaluated
            # too: refused), is entered after an evaluation made since.
            met = rng.randrange(1, 6)
            dropped = rng.choice((goal_id, other_id))
            change = revise if rng.randrange(2) else c.DropGoal(CASE, dropped, "not needed")
            return [(rated(evaluation, other_id), 0), (change, met), (agree(), met)]


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
                    # Agreed once: as it stood when the review was held, or revised since.
                    assert _goal(record, entry.goal_id).first_agreed_at is not None, recorded
                    assert _goal(record, entry.goal_id).status is not GoalStatus.DROPPED, recorded
        record.apply(event, recorded.metadata.occurred_at)
    return record


def _evaluations_out_of_order(history: list[RecordedEvent]) -> list[str]:
    """For each evaluation in ``history`` (in the order it was entered): whether it is dated
    before a revision of a goal it rates entered before it, and whether a change of the plan
    entered after it is dated before it."""
    found: list[str] = []
    for index, recorded in enumerate(history):
        if not isinstance(recorded.event, ProgressEvaluated):
            continue
        rated = {entry.goal_id for entry in recorded.event.goal_progress}
        at = recorded.metadata.occurred_at
        if any(
            isinstance(earlier.event, GoalRevised)
            and earlier.event.goal.goal_id in rated
            and earlier.metadata.occurred_at > at
            for earlier in history[:index]
        ):
            found.append("evaluated before a revision")
        if any(
            isinstance(later.event, PLAN_CHANGES) and later.metadata.occurred_at < at
            for later in history[index + 1 :]
        ):
            found.append("changed before an evaluation")
    return found


def _goal(record: CasePlanning, goal_id: str) -> GoalState:
    assert record.plan is not None
    return record.plan.goals[goal_id]


PLAN_CHANGES = (GoalAdded, GoalRevised, GoalDropped, PlanAgreed)
