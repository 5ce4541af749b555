"""The current case view: built from every service's events, queryable, rebuildable exactly."""

from __future__ import annotations

from datetime import date, timedelta
from uuid import uuid4

import pytest

from casetrail.planning.v1 import planning_pb2
from casetrail_platform.commands import InvalidCommand, RuleBroken
from casetrail_platform.grpc_platform.answer_caps import ENTRY_FRAMING, Cap
from casetrail_platform.limits import MAX_EVENT_BYTES, MAX_GOALS_PER_PLAN, MAX_PLAN_GOALS_BYTES
from casetrail_platform.projections.port import Document, ReadModelStore
from casetrail_platform.projections.runner import BusProjectionHandler
from events.catalog.assignment import CredentialKind, WorkerCredential
from events.catalog.base import Role
from events.catalog.cases import CaseClosed, DischargeReason
from events.catalog.erasure import ClientErased
from events.catalog.monitoring import ContactKind, GoalProgress, ProgressRating
from events.catalog.planning import PlanDrafted, PlanTask, TaskOwner, TaskOwnerKind
from events.catalog.values import NeedCategory
from events.envelope import EventMetadata, RecordedEvent
from services.planning.adapters.case_document import new_document
from services.planning.adapters.case_views import (
    CASE_VIEWS,
    FIFTH_RETIRED,
    FIFTH_RETIRED_COLLECTIONS,
    FIRST_RETIRED,
    FIRST_RETIRED_COLLECTIONS,
    FOURTH_RETIRED,
    FOURTH_RETIRED_COLLECTIONS,
    LATEST_RETIRED,
    LATEST_RETIRED_COLLECTIONS,
    RETIRED,
    RETIRED_COLLECTIONS,
    THIRD_RETIRED,
    THIRD_RETIRED_COLLECTIONS,
    CaseFilter,
    CaseViewProjection,
    CaseViews,
    retire_old_layout,
)
from services.planning.adapters.staff import STAFF, StaffProjection
from services.planning.app.handlers import Dependencies
from services.planning.domain import commands as c
from services.planning.domain.model import StaffMember
from services.planning.entrypoints import present
from tests.unit.planning.conftest import Planning
from tests.unit.planning.support import (
    COORDINATION,
    COORDINATOR,
    INTAKE,
    INTAKE_WORKER,
    OTHER_WORKER,
    PLANNING,
    START,
    WORKER,
    Bus,
    Planner,
    assessed,
    assigned,
    build_realistic_history,
    case_opened,
    dump,
    goal,
    query,
    reassigned,
    reopened,
    scheduled,
)

PROJECTION = CaseViewProjection()


async def test_the_view_gathers_every_services_facts(deps: Dependencies, bus: Bus) -> None:
    await build_realistic_history(deps, bus)

    view = await CaseViews(bus.read_models).get("case-a")

    assert view is not None
    assert view["status"] == "open"
    assert view["stage"] == "active"
    assert (view["worker_id"], view["worker_role"]) == ("worker-ana", "social_worker")
    assert view["needs"] == ["home_care", "physical_therapy", "transportation"]
    plan = view["plan"]
    # Drafted (1), a goal added (2), agreed, a goal revised (3).
    assert (plan["version"], plan["agreed_version"], plan["agreement_status"]) == (
        3,
        2,
        "awaiting_agreement",
    )
    assert [(g["goal"]["goal_id"], g["status"], g["latest_rating"]) for g in plan["goals"]] == [
        ("goal-walk", "active", "on_track"),
        ("goal-club", "active", None),
    ]
    assert plan["goals"][1]["goal"]["statement"] == "Join the club twice a week"
    assert [(s["service_id"], s["status"]) for s in view["services"]] == [
        ("svc-1", "delivered"),
        ("svc-2", "scheduled"),
    ]
    assert view["scheduled_service_ids"] == ["svc-2"]
    assert [(r["referral_id"], r["status"]) for r in view["referrals"]] == [("ref-1", "accepted")]
    assert view["next_follow_up_due"] == "2030-03-10"
    assert view["discharge"]["target_date"] == "2030-09-01"


async def test_closed_cases_have_no_follow_up_and_keep_their_latest_reason(
    deps: Dependencies, bus: Bus
) -> None:
    await build_realistic_history(deps, bus)

    view = await CaseViews(bus.read_models).get("case-d")

    assert view is not None
    assert (view["status"], view["stage"]) == ("closed", "closed")
    assert view["closure_reason"] == "client_independent"
    assert view["next_follow_up_due"] is None


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (CaseFilter(), ["case-a", "case-b", "case-c", "case-d"]),
        (CaseFilter(worker_id="worker-ana"), ["case-a", "case-d"]),
        (CaseFilter(status="open"), ["case-a", "case-b", "case-c"]),
        (CaseFilter(status="closed"), ["case-d"]),
        (CaseFilter(stage="intake"), ["case-c"]),
        (CaseFilter(stage="assigned"), ["case-b"]),
        (CaseFilter(need="physical_therapy"), ["case-a"]),
        (CaseFilter(need="transportation", worker_id="worker-bo"), ["case-b"]),
        (CaseFilter(overdue_before=date(2030, 3, 10)), []),
        (CaseFilter(overdue_before=date(2030, 3, 11)), ["case-a"]),
        (CaseFilter(overdue_before=date(2030, 5, 1)), ["case-a", "case-b"]),
        (CaseFilter(overdue_before=date(2030, 5, 1), worker_id="worker-bo"), ["case-b"]),
    ],
)
async def test_queries_by_worker_status_need_and_overdue_follow_up(
    deps: Dependencies, bus: Bus, where: CaseFilter, expected: list[str]
) -> None:
    await build_realistic_history(deps, bus)

    found, truncated = await CaseViews(bus.read_models).find(where, limit=10)

    assert [view["case_id"] for view in found] == expected
    assert not truncated


async def test_a_page_says_when_more_cases_matched(deps: Dependencies, bus: Bus) -> None:
    await build_realistic_history(deps, bus)
    views = CaseViews(bus.read_models)

    assert await views.find(CaseFilter(status="open"), limit=2) == (
        [await views.get("case-a"), await views.get("case-b")],
        True,
    )
    overdue = CaseFilter(overdue_before=date(2030, 5, 1))
    assert await views.find(overdue, limit=1) == ([await views.get("case-a")], True)


async def test_an_event_delivered_twice_is_applied_once(deps: Dependencies, bus: Bus) -> None:
    await build_realistic_history(deps, bus)
    before = await dump(bus.read_models, PROJECTION.collections)

    handler = bus.handler()
    for store in [bus.planning_store, *bus.stores.values()]:
        for recorded in await store.read_all(0):
            await handler(recorded)

    assert await dump(bus.read_models, PROJECTION.collections) == before


async def test_rebuilding_from_the_events_gives_identical_read_models(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore
) -> None:
    await build_realistic_history(deps, bus)
    before = await dump(read_models, PROJECTION.collections)
    assert before, "the history built something"

    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    assert await dump(read_models, PROJECTION.collections) == {}
    # Replayed one service after the other, not interleaved as first delivered: the view does
    # not depend on how the bus interleaves services.
    bus.delivered_up_to.clear()
    await bus.sync()

    assert await dump(read_models, PROJECTION.collections) == before


async def test_facts_for_decisions_come_from_the_view(deps: Dependencies, bus: Bus) -> None:
    await build_realistic_history(deps, bus)
    views = CaseViews(bus.read_models)

    facts = await views.facts("case-a")
    assert (facts.known, facts.worker_id, facts.scheduled_service_ids) == (
        True,
        "worker-ana",
        ("svc-2",),
    )
    assert (await views.facts("case-d")).reopens == 1
    assert not (await views.facts("case-unknown")).known


async def test_a_reopened_case_shows_the_plan_of_its_new_cycle_only(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore
) -> None:
    plan = Planner(deps, bus)
    views = CaseViews(bus.read_models)
    await bus.open_case("case-e")
    await plan(c.DraftPlan("case-e", "plan-1", (goal("goal-walk"),)))
    await plan(c.RecordAgreement("case-e", None, "yes", True))
    await plan(c.AchieveGoal("case-e", "goal-walk", "walks to the shop"))
    await plan(c.PlanDischarge("case-e", date(2030, 4, 1), ("walks alone",), (), False, None))
    await plan(c.CloseCase("case-e", DischargeReason.GOALS_ACHIEVED, None))
    closed = await views.get("case-e")
    assert closed is not None
    assert (closed["stage"], closed["plan"]["plan_id"]) == ("closed", "plan-1")
    assert present.case_view(closed, special=True).plan.plan_id == "plan-1", (
        "a closed case shows its plan"
    )

    await bus.record(INTAKE, "case-e", reopened("case-e"))
    await bus.record(INTAKE, "case-e", assessed("case-e"), actor=INTAKE_WORKER)
    view = await views.get("case-e")
    assert view is not None
    assert (view["status"], view["stage"]) == ("open", "assigned")
    shown = present.case_view(view, special=True)
    assert not shown.HasField("plan")
    assert not shown.HasField("discharge")
    assert [plan.plan_id for plan in shown.previous_plans] == ["plan-1"]
    assert [g.status for g in shown.previous_plans[0].goals] == ["achieved"]

    await plan(c.DraftPlan("case-e", "plan-2", (goal("goal-home"),)))
    view = await views.get("case-e")
    assert view is not None
    shown = present.case_view(view, special=True)
    assert (view["stage"], shown.plan.plan_id, shown.plan.version) == ("planning", "plan-2", 1)
    assert [g.goal.goal_id for g in shown.plan.goals] == ["goal-home"]
    assert [plan.plan_id for plan in shown.previous_plans] == ["plan-1"]

    # Reopened again and again, every cycle's plan is kept: the view lists the latest that
    # fit in their cap and says how many there are (whole, they could take the answer past
    # gRPC's 4 MiB, which never reaches the caller).
    earlier = view["previous_plans"][0]
    many = view | {
        "previous_plans": [earlier | {"plan_id": f"plan-0{n}"} for n in range(5)]
        + view["previous_plans"]
    }
    one_plan = present.case_view(view, special=True).previous_plans[0].ByteSize() + ENTRY_FRAMING
    cut = present.case_view(many, special=True)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(present, "VIEW_PREVIOUS_PLANS", Cap(100, one_plan * 2 + 2))
        present.cut_case_view(cut)
    assert [plan.plan_id for plan in cut.previous_plans] == ["plan-04", "plan-1"]
    assert (cut.previous_plans_total, cut.previous_plans_truncated) == (6, True)
    whole = present.case_view(many, special=True)
    present.cut_case_view(whole)
    assert (len(whole.previous_plans), whole.previous_plans_truncated) == (6, False)

    # Rebuilt with intake's reopening replayed after planning's new plan: the same view.
    before = await dump(read_models, PROJECTION.collections)
    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    bus.delivered_up_to.clear()
    handler = bus.handler()
    for store in [bus.planning_store, *reversed(bus.stores.values())]:
        for recorded in await store.read_all(0):
            await handler(recorded)
    assert await dump(read_models, PROJECTION.collections) == before


async def test_a_reopened_case_is_assessed_only_by_its_new_episodes_assessment(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore
) -> None:
    """Intake asks for an initial assessment per episode: the closed episode's let a reopened
    case be planned before its new one (which intake still took afterwards)."""
    plan = Planner(deps, bus)
    views = CaseViews(bus.read_models)
    await bus.open_case("case-e")
    await plan(c.CloseCase("case-e", DischargeReason.CLIENT_MOVED, None))
    await bus.record(INTAKE, "case-e", reopened("case-e"))

    facts = await views.facts("case-e")
    assert not facts.assessed
    assert facts.reopened_at is not None  # the current cycle's work is dated after it
    with pytest.raises(RuleBroken, match="no initial assessment yet"):
        await plan(c.DraftPlan("case-e", "plan-2", (goal("goal-home"),)))

    await bus.record(INTAKE, "case-e", assessed("case-e"), actor=INTAKE_WORKER)
    assert (await views.facts("case-e")).assessed
    # Delivered in any order (the new assessment before the reopening, the first assessment
    # last), the view tells the same.
    events = [r for store in bus.stores.values() for r in await store.read_all(0)]
    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    handler = bus.handler()
    for recorded in [*await bus.planning_store.read_all(0), *reversed(events)]:
        await handler(recorded)
    assert (await views.facts("case-e")).assessed


@pytest.mark.parametrize(
    ("retired", "collections"),
    [
        (FIRST_RETIRED, FIRST_RETIRED_COLLECTIONS),
        (RETIRED, RETIRED_COLLECTIONS),
        (THIRD_RETIRED, THIRD_RETIRED_COLLECTIONS),
        (FOURTH_RETIRED, FOURTH_RETIRED_COLLECTIONS),
        (FIFTH_RETIRED, FIFTH_RETIRED_COLLECTIONS),
        (LATEST_RETIRED, LATEST_RETIRED_COLLECTIONS),
    ],
    ids=["v1", "v2", "v3", "v4", "v5", "v6"],
)
async def test_the_views_of_the_older_layouts_are_retired_at_start(
    bus: Bus, read_models: ReadModelStore, retired: str, collections: tuple[str, ...]
) -> None:
    # v1's documents cannot tell which episode their assessment belongs to; v2's lost the
    # contacts that were not the latest by the closures delivered when they came; v3's took
    # the evaluation recorded last for the latest, losing the one dated last; v4's kept no
    # plan's changes, which its versions are counted from; v5's not which goal each was of;
    # v6's not which goals each agreement named.
    old = {"case_id": "case-o", "opened": True, "assessed_needs": [{"category": "home_care"}]}
    async with read_models.transaction() as transaction:
        for collection in collections:
            await transaction.put(collection, "case-o", old)
        await transaction.set_position(retired, 1)

    await retire_old_layout(read_models)

    for collection in collections:
        assert [item async for item in read_models.scan(collection)] == [], collection
    assert await read_models.applied_position(retired) == 0
    assert PROJECTION.name != retired
    assert not set(collections) & set(PROJECTION.collections)


async def test_an_evaluation_written_up_late_does_not_replace_the_latest(
    deps: Dependencies, bus: Bus
) -> None:
    """The evaluation of day 3, written up after the one of day 10, became the plan's last
    evaluation and set its goal's latest rating and adjustment: the view took the one
    recorded last for the latest."""
    plan = Planner(deps, bus)
    await bus.open_case("case-e")
    await plan(c.DraftPlan("case-e", "plan-1", (goal("goal-walk"), goal("goal-club"))))
    await plan(c.RecordAgreement("case-e", None, "yes", True))

    async def evaluated(evaluation_id: str, day: int, *ratings: GoalProgress) -> None:
        evaluation = c.EvaluateProgress("case-e", evaluation_id, ratings, (), (), day == 3)
        await plan(evaluation, occurred_at=START + timedelta(days=day))

    on_track = GoalProgress(goal_id="goal-walk", rating=ProgressRating.ON_TRACK)
    no_change = GoalProgress(goal_id="goal-walk", rating=ProgressRating.NO_CHANGE)
    club = GoalProgress(goal_id="goal-club", rating=ProgressRating.SOME_PROGRESS)
    await evaluated("eval-10", 10, on_track)
    await evaluated("eval-3", 3, no_change, club)

    document = await CaseViews(bus.read_models).get("case-e")
    assert document is not None
    view = present.case_view(document, special=True).plan
    assert (view.last_evaluated_on, view.adjustment_needed) == ("2030-03-11", False)
    # The club's only rating is of day 3's evaluation, the latest that rated it.
    assert [(g.goal.goal_id, g.latest_rating) for g in view.goals] == [
        ("goal-walk", "on_track"),
        ("goal-club", "some_progress"),
    ]
    # Two at one moment: the one recorded later is the latest.
    await evaluated("eval-10-later", 10, no_change)
    document = await CaseViews(bus.read_models).get("case-e")
    assert document is not None
    assert present.case_view(document, special=True).plan.goals[0].latest_rating == "no_change"


async def test_a_contact_logged_late_does_not_replace_the_latest_follow_up(
    deps: Dependencies, bus: Bus
) -> None:
    plan = Planner(deps, bus)
    views = CaseViews(bus.read_models)
    await bus.open_case("case-f")
    await plan(
        c.LogContact("case-f", "visit", ContactKind.HOME_VISIT, "Managing", date(2030, 3, 5)),
        occurred_at=START + timedelta(days=1),
    )
    # Yesterday's call, written up today: it asked for a follow-up further out, but today's
    # visit, later, decided the next one.
    await plan(
        c.LogContact("case-f", "call", ContactKind.PHONE_CALL, "Fine", date(2030, 4, 1)),
        occurred_at=START,
    )

    view = await views.get("case-f")
    assert view is not None
    assert (view["contacts_logged"], view["last_contact_on"], view["next_follow_up_due"]) == (
        2,
        "2030-03-02",
        "2030-03-05",
    )
    overdue, _ = await views.find(CaseFilter(overdue_before=date(2030, 3, 6)), limit=10)
    assert [found["case_id"] for found in overdue] == ["case-f"]


async def test_a_plan_is_not_dated_before_the_assessment_and_the_assignment_it_builds_on(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore
) -> None:
    """Only the opening was checked: a plan stated as drafted before the case was assessed and
    assigned was accepted, and audit's state as of it showed a plan of a case with neither."""
    plan = Planner(deps, bus)
    views = CaseViews(bus.read_models)
    day = timedelta(days=1)
    await bus.open_case("case-p", None, assess=False)
    await bus.record(INTAKE, "case-p", assessed("case-p"), occurred_at=START + day)
    await bus.record(COORDINATION, "case-p", assigned("case-p"), occurred_at=START + 2 * day)
    handed_on = reassigned("case-p", WORKER, OTHER_WORKER)
    await bus.record(COORDINATION, "case-p", handed_on, occurred_at=START + 3 * day)

    facts = await views.facts("case-p")
    # The first assignment: the case had a worker from then on.
    assert (facts.assessed_at, facts.assigned_at) == (START + day, START + 2 * day)
    draft = c.DraftPlan("case-p", "plan-1", (goal("goal-walk"),))
    for moment, rule, earlier in [
        (START + day / 2, "case case-p was assessed", START + day),
        (START + day * 3 / 2, "case case-p was first assigned a worker", START + 2 * day),
    ]:
        with pytest.raises(InvalidCommand) as refused:
            await plan(draft, COORDINATOR, occurred_at=moment)
        [problem] = refused.value.violations
        assert problem.field == "context.occurred_at"
        assert problem.problem.startswith(f"must not be before {rule} ({earlier.isoformat()}),")

    # Delivered in any order (the reassignment first), the view tells the same.
    coordination = await bus.stores[COORDINATION].read_all(0)
    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    handler = bus.handler()
    for recorded in [*await bus.stores[INTAKE].read_all(0), *reversed(coordination)]:
        await handler(recorded)
    assert await views.facts("case-p") == facts
    # A document kept before the moments were: not known, so not checked.
    kept = await read_models.get(CASE_VIEWS, "case-p")
    assert kept is not None
    del kept["assessed_at"], kept["assigned_at"]
    async with read_models.transaction() as transaction:
        await transaction.put(CASE_VIEWS, "case-p", kept)
    known = await views.facts("case-p")
    assert (known.assessed_at, known.assigned_at) == (None, None)
    await plan(draft, COORDINATOR, occurred_at=START + 2 * day)


async def test_a_reopened_cases_follow_up_is_its_new_cycles_whatever_the_earlier_ones_date(
    deps: Dependencies, bus: Bus
) -> None:
    """A closure stated before its cycle's last contact (accepted until closures were kept
    after their cycle's work): the new cycle's contact, dated before that earlier contact, was
    taken for history, and the reopened case left the overdue list for good."""
    plan = Planner(deps, bus)
    views = CaseViews(bus.read_models)
    await bus.open_case("case-f")
    late_visit = c.LogContact("case-f", "visit", ContactKind.HOME_VISIT, "ok", date(2030, 3, 20))
    await plan(late_visit, occurred_at=START + timedelta(days=10))
    closed = CaseClosed(case_id="case-f", reason=DischargeReason.CLIENT_MOVED)
    await bus.record(
        PLANNING, "case-f", closed, actor=WORKER, occurred_at=START + timedelta(days=1)
    )
    await bus.record(INTAKE, "case-f", reopened("case-f"), occurred_at=START + timedelta(days=2))
    call = c.LogContact("case-f", "call", ContactKind.PHONE_CALL, "back", date(2030, 3, 9))
    await plan(call, occurred_at=START + timedelta(days=3))

    view = await views.get("case-f")
    assert view is not None
    assert (view["status"], view["next_follow_up_due"], view["last_contact_on"]) == (
        "open",
        "2030-03-09",
        "2030-03-04",
    )
    overdue, _ = await views.find(CaseFilter(overdue_before=date(2030, 3, 10)), limit=10)
    assert [found["case_id"] for found in overdue] == ["case-f"]


async def test_an_erased_case_reads_as_its_rebuild_after_the_erasure(
    bus: Bus, read_models: ReadModelStore
) -> None:
    """Live, the erasure scrubs the view; rebuilt after it, the same events read erased from the
    start (their keys are gone). Both give the same document."""

    def erased(case_id: str) -> ClientErased:
        return ClientErased(
            client_id=f"client-{case_id}", case_ids=(case_id,), request_reference="art-17"
        )

    await bus.open_case("case-live")
    await bus.record(INTAKE, "case-live", erased("case-live"), actor=INTAKE_WORKER)
    # What the same two events read as once the client's keys are destroyed.
    marker = NeedCategory.ERASED
    opened = case_opened("case-rebuilt")
    await bus.record(
        INTAKE,
        "case-rebuilt",
        opened.model_copy(
            update={
                "presenting_needs": tuple(
                    need.model_copy(update={"category": marker}) for need in opened.presenting_needs
                )
            }
        ),
        assessed("case-rebuilt").model_copy(
            update={
                "needs": tuple(
                    need.model_copy(update={"category": marker})
                    for need in assessed("case-rebuilt").needs
                )
            }
        ),
        actor=INTAKE_WORKER,
    )
    await bus.record(COORDINATION, "case-rebuilt", assigned("case-rebuilt"))
    await bus.record(INTAKE, "case-rebuilt", erased("case-rebuilt"), actor=INTAKE_WORKER)

    live = await read_models.get(CASE_VIEWS, "case-live")
    rebuilt = await read_models.get(CASE_VIEWS, "case-rebuilt")
    assert live is not None
    assert rebuilt is not None
    assert live["needs"] == ["erased"]
    assert {**live, "case_id": "", "client_id": ""} == {**rebuilt, "case_id": "", "client_id": ""}


async def test_an_erasure_keeps_who_carries_a_goals_task(
    bus: Bus, read_models: ReadModelStore
) -> None:
    """The erasure scrubbed every value under ``kind`` at any depth, a service's kind (sealed)
    and a goal's task owner's alike: who carries the task, no special data and never sealed
    (the events, audit's plan as seen, still say the worker), read ``erased`` in the case view
    for good. Only the service's kind is forgotten."""
    await bus.open_case("case-e")
    drafted = PlanDrafted(case_id="case-e", plan_id="plan-e", goals=(goal(),))
    await bus.record(PLANNING, "case-e", drafted, actor=WORKER)
    await bus.record(COORDINATION, "case-e", scheduled("case-e", "svc-1"))
    erased = ClientErased(client_id="client-e", case_ids=("case-e",), request_reference="art-17")
    await bus.record(INTAKE, "case-e", erased, actor=INTAKE_WORKER)

    view = await read_models.get(CASE_VIEWS, "case-e")
    assert view is not None
    [task] = view["plan"]["goals"][0]["goal"]["tasks"]
    assert task["owner"] == {"kind": "worker", "owner_id": "worker-ana"}
    assert task["description"] == "[erased]"
    assert [service["kind"] for service in view["services"]] == ["erased"]


async def test_a_worker_is_known_by_their_latest_assignment_whatever_the_delivery_order(
    bus: Bus, read_models: ReadModelStore
) -> None:
    # Assignments of different cases cross partitions: the one recorded last tells of the
    # worker (a licence renewed since), however the bus hands them over.
    old = WorkerCredential(kind=CredentialKind.LICENCE, name="LMSW", valid_until=date(2030, 1, 1))
    renewed = old.model_copy(update={"valid_until": date(2032, 1, 1)})
    first = await bus.record(
        COORDINATION,
        "case-a",
        assigned("case-a").model_copy(update={"credentials": (old,)}),
    )
    second = await bus.record(
        COORDINATION,
        "case-b",
        assigned("case-b").model_copy(update={"credentials": (renewed,)}),
    )
    views = CaseViews(read_models)
    expected = {"worker-ana": StaffMember("worker-ana", Role.SOCIAL_WORKER, (renewed,))}
    assert await views.staff(["worker-ana", "worker-unknown"]) == expected

    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    handler = bus.handler()
    for recorded in [*second, *first]:
        await handler(recorded)
    assert await views.staff(["worker-ana"]) == expected


async def test_the_staff_projection_learns_assignments_the_case_view_applied_before_it_kept_staff(
    bus: Bus, read_models: ReadModelStore
) -> None:
    # An upgraded deployment: the case view applied the assignment before it kept a staff
    # collection, and keeps its position; the staff projection's own group starts at the
    # beginning of the topic and learns it, and a repeat or an older one changes nothing.
    licence = WorkerCredential(
        kind=CredentialKind.LICENCE, name="LMSW", valid_until=date(2030, 1, 1)
    )
    first = await bus.record(COORDINATION, "case-a", assigned("case-a"))
    second = await bus.record(
        COORDINATION,
        "case-b",
        assigned("case-b").model_copy(update={"credentials": (licence,)}),
    )
    await read_models.reset("staff-before-upgrade", (STAFF,))
    views = CaseViews(read_models)
    assert await views.staff(["worker-ana"]) == {}

    staff = BusProjectionHandler(read_models, StaffProjection(), service="planning")
    for recorded in [*second, *first, *second]:
        await staff(recorded)
    expected = {"worker-ana": StaffMember("worker-ana", Role.SOCIAL_WORKER, (licence,))}
    assert await views.staff(["worker-ana"]) == expected


async def test_of_two_assignments_recorded_at_one_moment_the_later_position_wins(
    read_models: ReadModelStore,
) -> None:
    # A group commit records several commands' events at one moment: the recording store's
    # position orders them, so the worker's document does not depend on the delivery order.
    old = WorkerCredential(kind=CredentialKind.LICENCE, name="LMSW", valid_until=date(2030, 6, 1))
    renewed = old.model_copy(update={"valid_until": date(2032, 6, 1)})
    first, second = (
        RecordedEvent(
            event_id=uuid4(),
            stream=f"case-{case_id}",
            sequence=2,
            position=position,
            recorded_at=START,
            event=assigned(case_id).model_copy(update={"credentials": (credential,)}),
            metadata=EventMetadata(COORDINATION, COORDINATOR, START, correlation_id=uuid4()),
        )
        for case_id, credential, position in [("case-a", old, 7), ("case-b", renewed, 8)]
    )
    expected = {"worker-ana": StaffMember("worker-ana", Role.SOCIAL_WORKER, (renewed,))}
    for projection in (PROJECTION, StaffProjection()):
        for delivery in ([first, second], [second, first]):
            await read_models.reset(projection.name, projection.collections)
            handler = BusProjectionHandler(read_models, projection, service="planning")
            for recorded in delivery:
                await handler(recorded)
            assert await CaseViews(read_models).staff(["worker-ana"]) == expected


def test_the_view_lists_its_services_and_referrals_within_their_caps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every service and referral of the case was listed: a case served for years, or one
    given thousands of services, took the answer past gRPC's 4 MiB, never to be read again."""
    monkeypatch.setattr(present, "VIEW_SERVICES", Cap(2, 1024 * 1024))
    monkeypatch.setattr(present, "VIEW_REFERRALS", Cap(2, 1024 * 1024))
    view = planning_pb2.GetCaseViewResponse(
        services=[
            planning_pb2.ServiceView(
                service_id="a", status="delivered", starts_at="2026-03-02T10:00:00+00:00"
            ),
            planning_pb2.ServiceView(
                service_id="b", status="scheduled", starts_at="2026-03-11T10:00:00+00:00"
            ),
            planning_pb2.ServiceView(
                service_id="c", status="cancelled", starts_at="2026-03-07T10:00:00+00:00"
            ),
        ],
        referrals=[
            planning_pb2.ReferralView(referral_id="r1", status="accepted"),
            planning_pb2.ReferralView(referral_id="r2", status="declined"),
            planning_pb2.ReferralView(referral_id="r3", status="completed"),
        ],
    )
    present.cut_case_view(view)
    assert [s.service_id for s in view.services] == ["b", "c"]
    assert [r.referral_id for r in view.referrals] == ["r1", "r3"]
    assert (view.services_truncated, view.services_total) == (True, 3)
    assert (view.referrals_truncated, view.referrals_total) == (True, 3)

    # A view of the largest entries stays well under 4 MiB (four-byte characters too).
    wide, long_id = "\N{GRINNING FACE}" * 500, "i" * 128
    service = planning_pb2.ServiceView(
        service_id=long_id, kind="home_care", provider_id=long_id, provider_name=wide,
        starts_at="2199-12-31T23:59:59.999999+00:00", ends_at="2199-12-31T23:59:59.999999+00:00",
        status="delivered", goal_id=long_id, referral_id=long_id,
    )  # fmt: skip
    referral = planning_pb2.ReferralView(
        referral_id=long_id, provider_id=long_id, provider_name=wide, need_category="counseling",
        service=wide, urgency="emergency", status="withdrawn",
    )  # fmt: skip
    monkeypatch.undo()
    big = planning_pb2.GetCaseViewResponse(services=[service] * 3000, referrals=[referral] * 500)
    present.cut_case_view(big)
    assert (big.services_truncated, big.referrals_truncated) == (True, True)
    assert big.ByteSize() < 2 * 1024 * 1024


GRPC_ANSWER_BYTES = 4 * 1024 * 1024
"""gRPC's default limit on a message a client receives."""
WIDE = "\N{GRINNING FACE}"
"""A character of four bytes: texts are bounded in characters."""


def _largest_goal(index: int) -> Document:
    """A goal of the current plan as the view keeps it, its catalog JSON the plan's bound's
    share (``MAX_PLAN_GOALS_BYTES`` over ``MAX_GOALS_PER_PLAN``)."""
    task = PlanTask(
        task_id="t" * 64,
        description=WIDE * 500,
        owner=TaskOwner(kind=TaskOwnerKind.PROVIDER, owner_id="p" * 64),
        target_date=date(2199, 12, 31),
    )
    shell = goal(f"goal-{index:03d}".ljust(64, "g"), WIDE).model_copy(update={"tasks": (task,)})
    share = MAX_PLAN_GOALS_BYTES // MAX_GOALS_PER_PLAN
    filled = shell.model_copy(
        update={"statement": WIDE * ((share - len(shell.model_dump_json().encode())) // 4 + 1)}
    )
    return {
        "goal": filled.model_dump(mode="json"),
        "status": "achieved",
        "latest_rating": "some_progress",
    }


def _largest_case_document(case_id: str, client_id: str) -> Document:
    """A case view document with each part at its largest: the current plan's goals at the
    plan's bound, a discharge plan of a whole event (``MAX_EVENT_BYTES``, its texts sealed
    there, so larger than here), every need, and more earlier plans, services and referrals
    of the largest entries than their caps list."""
    goals = [_largest_goal(index) for index in range(MAX_GOALS_PER_PLAN)]
    plan: Document = {
        "plan_id": "p" * 64, "version": 2**31 - 1, "agreed_version": 2**31 - 2,
        "agreement_status": "awaiting_agreement", "goals": goals,
        "last_evaluated_on": "2199-12-31", "adjustment_needed": True, "cycle": 3,
    }  # fmt: skip
    service: Document = {
        "service_id": "s" * 64, "kind": "physical_therapy", "provider_id": "p" * 64,
        "provider_name": WIDE * 500, "starts_at": "2199-12-31T23:59:59.999999+00:00",
        "ends_at": "2199-12-31T23:59:59.999999+00:00", "status": "scheduled",
        "goal_id": "g" * 64, "referral_id": "r" * 64,
    }  # fmt: skip
    referral: Document = {
        "referral_id": "r" * 64, "provider_id": "p" * 64, "provider_name": WIDE * 500,
        "need_category": "physical_therapy", "service": WIDE * 500, "urgency": "immediate",
        "status": "accepted",
    }  # fmt: skip
    document = new_document(case_id)
    needs = sorted(need.value for need in NeedCategory)
    document.update(
        client_id=client_id, opened=True, worker_id=WORKER.user_id, worker_role="social_worker",
        presented_needs=needs,
        assessed_needs=[{"category": need, "urgency": "immediate"} for need in needs],
        needs=needs, plan=plan, previous_plans=[plan | {"cycle": cycle} for cycle in range(3)],
        services=[service] * 3000, referrals=[referral] * 500, reopens=3, closures=3,
        stage="active", next_follow_up_due="2199-12-31", last_contact_on="2199-12-31",
        contacts_logged=2**31 - 1,
        discharge={
            "target_date": "2199-12-31", "criteria": [WIDE * 500] * (MAX_EVENT_BYTES // 2000),
            "aftercare": [], "long_term_maintenance": True, "cycle": 3,
        },
    )  # fmt: skip
    return document


def test_the_largest_case_view_fits_one_grpc_answer() -> None:
    """Each part of a case view was capped alone, but the caps added up past gRPC's 4 MiB: the
    current plan (1 MiB), an earlier cycle's plan (2 MiB for them), services (1.5 MiB),
    referrals (256 KiB) and the discharge plan made an answer its client refused, so the case
    could never be read again (each attempt recorded as a read). One budget now holds them."""
    assert present.CASE_VIEW_BYTES <= GRPC_ANSWER_BYTES - 512 * 1024
    view = present.case_view(_largest_case_document("case-big", "client-big"), special=True)
    rest = planning_pb2.GetCaseViewResponse()
    rest.CopyFrom(view)
    del rest.services[:], rest.referrals[:], rest.previous_plans[:]
    # What the growing lists do not take leaves them room: the running referrals and the
    # scheduled services, then the earlier plans.
    assert rest.ByteSize() < present.CASE_VIEW_BYTES - 2 * 1024 * 1024

    present.cut_case_view(view)

    assert view.ByteSize() <= present.CASE_VIEW_BYTES
    assert (view.referrals_total, view.services_total, view.previous_plans_total) == (500, 3000, 3)
    cut = (view.referrals_truncated, view.services_truncated, view.previous_plans_truncated)
    assert cut == (True, True, True)
    assert [len(view.referrals) > 0, len(view.services) > 0] == [True, True]
    # With fewer services, the earlier plans take the room they leave, the latest first.
    few = present.case_view(_largest_case_document("case-big", "client-big"), special=True)
    del few.services[10:]
    present.cut_case_view(few)
    assert few.ByteSize() <= present.CASE_VIEW_BYTES
    assert (len(few.services), few.services_truncated) == (10, False)
    assert (len(few.previous_plans), few.previous_plans_truncated) == (2, True)


async def test_the_largest_case_view_reaches_its_reader(planning: Planning) -> None:
    """Through gRPC: the view was refused RESOURCE_EXHAUSTED by its reader's client."""
    bus = planning.bus
    await bus.open_case("case-big")
    views = CaseViews(bus.read_models)
    opened = await views.get("case-big")
    assert opened is not None
    largest = _largest_case_document("case-big", opened["client_id"])
    async with bus.read_models.transaction() as transaction:
        await transaction.put(CASE_VIEWS, "case-big", largest)

    view = await planning.stub.GetCaseView(
        planning_pb2.GetCaseViewRequest(context=query(WORKER, "direct_care"), case_id="case-big")
    )

    assert view.ByteSize() <= present.CASE_VIEW_BYTES
    assert len(view.plan.goals) == MAX_GOALS_PER_PLAN
    assert (view.services_truncated, view.services_total) == (True, 3000)
