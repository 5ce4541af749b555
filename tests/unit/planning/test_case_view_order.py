"""The case view under out-of-order delivery: an event set aside (dead-lettered, parked) and
delivered after later events of its case, as ``casetrail dlq replay`` does, leaves the view as
an in-order delivery (a rebuild) builds it."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from itertools import permutations

import pytest

from casetrail_platform.projections.port import Document, ReadModelStore
from events.catalog.cases import CaseClosed, DischargeReason
from events.catalog.monitoring import ContactKind, GoalProgress, ProgressRating
from events.catalog.referrals import ReferralCompleted
from events.envelope import RecordedEvent
from services.planning.adapters.case_document import apply_event, new_document
from services.planning.adapters.case_views import CASE_VIEWS, CaseViewProjection, CaseViews
from services.planning.app.handlers import Dependencies
from services.planning.domain import commands as c
from services.planning.entrypoints import present
from tests.unit.planning.support import (
    COORDINATION,
    INTAKE,
    OTHER_WORKER,
    PLANNING,
    START,
    WORKER,
    Bus,
    Planner,
    assessed,
    assigned,
    build_realistic_history,
    cancelled,
    delivered,
    dump,
    goal,
    reassigned,
    referral,
    referral_accepted,
    reopened,
    scheduled,
)

History = Callable[[Dependencies, Bus], Awaitable[None]]

PROJECTION = CaseViewProjection()


async def build_cycles_history(deps: Dependencies, bus: Bus) -> None:
    """Plans over two cycles, revisions and evaluations (one written up late), a reassignment,
    a contact logged late and services moved: the events whose order the view's values depend
    on."""
    plan = Planner(deps, bus)
    await bus.open_case("case-e")
    await plan(c.DraftPlan("case-e", "plan-1", (goal("goal-walk"), goal("goal-club"))))
    await plan(c.RecordAgreement("case-e", None, "yes", True))
    await plan(c.AchieveGoal("case-e", "goal-walk", "walks to the shop"))
    await plan(c.DropGoal("case-e", "goal-club", "not keen"))
    await plan(c.PlanDischarge("case-e", date(2030, 4, 1), ("walks alone",), (), False, None))
    await bus.record(
        COORDINATION, "case-e", scheduled("case-e", "svc-1"), cancelled("case-e", "svc-1")
    )
    await plan(c.CloseCase("case-e", DischargeReason.GOALS_ACHIEVED, None))
    await bus.record(INTAKE, "case-e", reopened("case-e"), assessed("case-e"))
    await bus.record(COORDINATION, "case-e", reassigned("case-e", WORKER, OTHER_WORKER))
    await plan(c.DraftPlan("case-e", "plan-2", (goal("goal-home"),)), actor=OTHER_WORKER)
    await plan(c.AddGoal("case-e", goal("goal-cook", "Cook once a week")), actor=OTHER_WORKER)
    await plan(c.RecordAgreement("case-e", None, "fine", True), actor=OTHER_WORKER)
    await plan(
        c.ReviseGoal("case-e", goal("goal-cook", "Cook twice a week"), "keen"), actor=OTHER_WORKER
    )
    for evaluation_id, rating, day in (
        ("eval-1", ProgressRating.ON_TRACK, 1),
        ("eval-2", ProgressRating.NO_CHANGE, 3),
        ("written-up-late", ProgressRating.SOME_PROGRESS, 2),
    ):
        progress = (GoalProgress(goal_id="goal-home", rating=rating),)
        await plan(
            c.EvaluateProgress("case-e", evaluation_id, progress, (), (), day == 3),
            actor=OTHER_WORKER,
            occurred_at=START + timedelta(days=day),
        )
    await bus.record(
        COORDINATION, "case-e", scheduled("case-e", "svc-2"), delivered("case-e", "svc-2")
    )
    await plan(
        c.LogContact("case-e", "visit", ContactKind.HOME_VISIT, "ok", date(2030, 5, 5)),
        actor=OTHER_WORKER,
        occurred_at=START + timedelta(days=40),
    )
    await plan(
        c.LogContact("case-e", "call", ContactKind.PHONE_CALL, "fine", date(2030, 6, 1)),
        actor=OTHER_WORKER,
        occurred_at=START + timedelta(days=39),
    )
    await plan(
        c.PlanDischarge("case-e", date(2030, 9, 1), ("cooks",), (), False, None),
        actor=OTHER_WORKER,
    )


async def build_follow_ups_history(deps: Dependencies, bus: Bus) -> None:
    """Contacts over three cycles, some written up late (dated before the latest of their
    cycle), and a closure stated before its cycle's contacts (kept before that was refused):
    the events the last contact and the follow-up depend on, whichever of them comes late."""
    plan = Planner(deps, bus)
    day = timedelta(days=1)
    await bus.open_case("case-f")

    async def contact(contact_id: str, due: date, at: datetime) -> None:
        logged = c.LogContact("case-f", contact_id, ContactKind.PHONE_CALL, "ok", due)
        await plan(logged, occurred_at=at)

    await contact("visit", date(2030, 3, 20), START + 10 * day)
    await contact("written-up-late", date(2030, 3, 25), START + 5 * day)
    closed = CaseClosed(case_id="case-f", reason=DischargeReason.CLIENT_MOVED)
    await bus.record(PLANNING, "case-f", closed, actor=WORKER, occurred_at=START + day)
    await bus.record(INTAKE, "case-f", reopened("case-f"), occurred_at=START + 2 * day)
    await contact("back", date(2030, 3, 9), START + 3 * day)
    await contact("noted-late", date(2030, 4, 1), START + 2 * day)
    await plan(
        c.CloseCase("case-f", DischargeReason.CLIENT_MOVED, None), occurred_at=START + 4 * day
    )
    await bus.record(INTAKE, "case-f", reopened("case-f"), occurred_at=START + 5 * day)
    await contact("third", date(2030, 3, 15), START + 6 * day)


HISTORIES = pytest.mark.parametrize(
    "history",
    [build_realistic_history, build_cycles_history, build_follow_ups_history],
    ids=["realistic", "cycles", "follow-ups"],
)


async def _every_event(bus: Bus) -> list[RecordedEvent]:
    events: list[RecordedEvent] = []
    for store in [bus.planning_store, *bus.stores.values()]:
        events.extend(await store.read_all(0))
    return events


@HISTORIES
async def test_each_event_delivered_after_the_later_ones_of_its_case_changes_nothing(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore, history: History
) -> None:
    await history(deps, bus)
    in_order = await dump(read_models, PROJECTION.collections)
    events = await _every_event(bus)

    wrong = []
    for late in events:
        await read_models.reset(PROJECTION.name, PROJECTION.collections)
        handler = bus.handler()
        for recorded in events:
            if recorded is not late:
                await handler(recorded)
        await handler(late)
        if await dump(read_models, PROJECTION.collections) != in_order:
            wrong.append(f"{late.event_type}#{late.sequence} of {late.stream}")

    assert wrong == []


@HISTORIES
async def test_every_stream_delivered_backwards_builds_the_view_a_rebuild_builds(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore, history: History
) -> None:
    await history(deps, bus)
    in_order = await dump(read_models, PROJECTION.collections)

    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    handler = bus.handler()
    for recorded in reversed(await _every_event(bus)):
        await handler(recorded)

    assert await dump(read_models, PROJECTION.collections) == in_order


async def test_a_replayed_assignment_does_not_bring_back_the_worker_the_case_was_taken_from(
    bus: Bus, read_models: ReadModelStore
) -> None:
    await bus.open_case("case-r", assess=False)
    first, later = await bus.record(
        COORDINATION,
        "case-r",
        assigned("case-r", OTHER_WORKER),
        reassigned("case-r", OTHER_WORKER, WORKER),
    )
    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    handler = bus.handler()
    for recorded in await _every_event(bus):
        if recorded not in (first, later):
            await handler(recorded)
    await handler(later)
    await handler(first)  # dead-lettered, replayed after the reassignment

    facts = await CaseViews(read_models).facts("case-r")
    assert facts.worker_id == WORKER.user_id


async def test_a_replayed_closure_does_not_close_the_reopened_case_again(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore
) -> None:
    await bus.open_case("case-o", assess=False)
    await Planner(deps, bus)(c.CloseCase("case-o", DischargeReason.CLIENT_MOVED, None))
    await bus.record(INTAKE, "case-o", reopened("case-o"))
    events = await _every_event(bus)
    closure = next(r for r in events if r.event_type == "casetrail.case.closed")

    await read_models.reset(PROJECTION.name, PROJECTION.collections)
    handler = bus.handler()
    for recorded in events:
        if recorded is not closure:
            await handler(recorded)
    await handler(closure)

    view = await CaseViews(read_models).get("case-o")
    assert view is not None
    assert (view["status"], view["closure_reason"], view["reopens"]) == ("open", None, 1)


@HISTORIES
async def test_any_delivery_order_builds_the_view_a_rebuild_builds(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore, history: History
) -> None:
    await history(deps, bus)
    in_order = await dump(read_models, PROJECTION.collections)
    events = await _every_event(bus)

    for seed in range(20):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        await read_models.reset(PROJECTION.name, PROJECTION.collections)
        handler = bus.handler()
        for recorded in shuffled:
            await handler(recorded)
        assert await dump(read_models, PROJECTION.collections) == in_order, f"seed {seed}"


async def test_any_order_of_the_contacts_and_closures_leaves_one_follow_up(
    deps: Dependencies, bus: Bus
) -> None:
    """Each order planning's contacts and closures may reach the view in (a closure
    dead-lettered and replayed after the reopened case's contacts, say): the follow-up and the
    last contact were picked by the closures delivered so far, and a contact dropped then never
    came back."""
    await build_follow_ups_history(deps, bus)
    others = [r for store in bus.stores.values() for r in await store.read_all(0)]
    planning = await bus.planning_store.read_all(0)
    in_order = new_document("case-f")
    for recorded in [*others, *planning]:
        apply_event(in_order, recorded)
    assert (in_order["last_contact_on"], in_order["next_follow_up_due"]) == (
        "2030-03-07",
        "2030-03-15",
    )

    for order in permutations(planning):
        document = new_document("case-f")
        for recorded in [*others, *order]:
            apply_event(document, recorded)
        assert document == in_order, [f"{r.event_type}#{r.sequence}" for r in order]


_KEPT_SINCE = {
    # The closures' sequences and the contact candidates, and a plan's changes and agreement:
    # every case_view_v7 document has them.
    "document": ("sequences",),
    "plan": ("made_sequence", "sequences"),
    "entry": ("made_sequence", "sequences", "order"),
}


def _as_kept_before(document: Document) -> Document:
    """``document`` as the view stored it before it kept sequences."""
    for key in (*_KEPT_SINCE["document"], "early"):
        document.pop(key, None)
    for plan in [*document["previous_plans"], document["plan"]]:
        for key in _KEPT_SINCE["plan"]:
            plan.pop(key, None)
        for goal_entry in plan["goals"]:
            for key in _KEPT_SINCE["entry"]:
                goal_entry.pop(key, None)
    for entry in [*document["services"], *document["referrals"], document["discharge"]]:
        for key in _KEPT_SINCE["entry"]:
            entry.pop(key, None)
    return document


async def test_a_document_kept_before_the_sequences_goes_on_as_a_new_one_would(
    deps: Dependencies, bus: Bus, read_models: ReadModelStore
) -> None:
    plan = Planner(deps, bus)
    for case_id in ("case-old", "case-new"):
        await bus.open_case(case_id)
        await plan(c.DraftPlan(case_id, "plan-1", (goal("goal-walk"),)))
        await plan(c.RecordAgreement(case_id, None, "yes", True))
        await plan(c.PlanDischarge(case_id, date(2030, 4, 1), ("walks",), (), False, None))
        await bus.record(COORDINATION, case_id, referral(case_id), scheduled(case_id, "svc-1"))
        await plan(c.LogContact(case_id, "visit", ContactKind.HOME_VISIT, "ok", date(2030, 3, 9)))
    kept = await read_models.get(CASE_VIEWS, "case-old")
    assert kept is not None
    async with read_models.transaction() as transaction:
        await transaction.put(CASE_VIEWS, "case-old", _as_kept_before(kept))

    for case_id in ("case-old", "case-new"):
        await bus.record(COORDINATION, case_id, reassigned(case_id, WORKER, OTHER_WORKER))
        done = ReferralCompleted(
            case_id=case_id, referral_id="ref-1", provider_id="prov-physio", outcome="walks"
        )
        await bus.record(COORDINATION, case_id, referral_accepted(case_id), done)
        await bus.record(COORDINATION, case_id, cancelled(case_id, "svc-1"))
        revised = goal("goal-walk", "Walk to the park")
        await plan(c.ReviseGoal(case_id, revised, "better"), actor=OTHER_WORKER)
        await plan(c.CloseCase(case_id, DischargeReason.CLIENT_MOVED, None), actor=OTHER_WORKER)
        await bus.record(INTAKE, case_id, reopened(case_id), assessed(case_id))
        await plan(c.DraftPlan(case_id, "plan-2", (goal("goal-home"),)), actor=OTHER_WORKER)
        await plan(
            c.LogContact(case_id, "call", ContactKind.PHONE_CALL, "ok", date(2030, 5, 1)),
            actor=OTHER_WORKER,
        )

    views = CaseViews(read_models)
    shown = {}
    for case_id in ("case-old", "case-new"):
        document = await views.get(case_id)
        assert document is not None
        view = present.case_view(document, special=True)
        view.case_id = view.client_id = ""
        shown[case_id] = view
    assert shown["case-old"] == shown["case-new"]
    assert (shown["case-new"].worker.worker_id, shown["case-new"].plan.plan_id) == (
        OTHER_WORKER.user_id,
        "plan-2",
    )
