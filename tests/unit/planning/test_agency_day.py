"""Planning's days are the agency's dates (``CASETRAIL_AGENCY_TIME_ZONE``), as intake's and
coordination's: at 17:00 in Los Angeles, UTC is already on the next day."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import grpc
import pytest

from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.assignment import CredentialKind, WorkerCredential
from events.catalog.monitoring import ContactKind, GoalProgress, ProgressRating
from services.planning.adapters.case_views import CaseViews
from services.planning.app.handlers import Dependencies
from services.planning.domain import commands as c
from services.planning.entrypoints import present
from services.planning.entrypoints.grpc_server import SERVICE_NAME, PlanningServicer
from tests.support.grpc import serving
from tests.support.identity import TestIssuer
from tests.unit.planning.support import (
    COORDINATION,
    WORKER,
    Bus,
    Planner,
    assigned,
    ctx,
    goal,
    query,
)

EVENING = datetime(2030, 3, 2, 1, 0, tzinfo=UTC)
"""17:00 on 1 March 2030 in Los Angeles."""
AGENCY_TODAY = date(2030, 3, 1)


@pytest.fixture
async def west_of_utc(
    deps: Dependencies, bus: Bus, store: SqliteEventStore, issuer: TestIssuer
) -> AsyncIterator[planning_pb2_grpc.PlanningServiceAsyncStub]:
    access = AccessControl(
        store,
        CaseFactsReader(bus.read_models),
        "casetrail/planning",
        home_agency=DEFAULT_HOME_AGENCY,
    )
    servicer = PlanningServicer(
        deps, access, clock=lambda: EVENING, time_zone=ZoneInfo("America/Los_Angeles")
    )

    def register(server: grpc.aio.Server) -> None:
        planning_pb2_grpc.add_PlanningServiceServicer_to_server(servicer, server)

    async with serving(register, SERVICE_NAME, issuer) as channel:
        yield planning_pb2_grpc.PlanningServiceStub(channel)  # type: ignore[misc]


async def test_the_days_planning_checks_are_the_agencys_dates(
    west_of_utc: planning_pb2_grpc.PlanningServiceAsyncStub, bus: Bus
) -> None:
    """On UTC's date the contact's follow-up due today was refused as before the contact, a
    licence valid through today (as coordination holds it) refused for counseling, and a
    follow-up due today listed as overdue."""
    stub = west_of_utc
    await bus.open_case("case-1", None)
    through_today = WorkerCredential(
        kind=CredentialKind.LICENCE, name="LCSW", valid_until=AGENCY_TODAY
    )
    await bus.record(
        COORDINATION,
        "case-1",
        assigned("case-1", WORKER).model_copy(update={"credentials": (through_today,)}),
    )
    counsel = planning_pb2.Goal(
        statement="Come to terms with the fall",
        term="short",
        need_category="mental_health",
        tasks=[
            planning_pb2.Task(
                description="Weekly sessions",
                owner=planning_pb2.TaskOwner(kind="worker", owner_id=WORKER.user_id),
                target_date=AGENCY_TODAY.isoformat(),
            )
        ],
    )

    await stub.DraftPlan(
        planning_pb2.DraftPlanRequest(context=ctx(key="draft"), case_id="case-1", goals=[counsel])
    )
    await stub.LogContact(
        planning_pb2.LogContactRequest(
            context=ctx(key="contact"),
            case_id="case-1",
            kind="phone_call",
            summary="called",
            next_follow_up_due=AGENCY_TODAY.isoformat(),
        )
    )
    await bus.sync()
    overdue = await stub.ListCases(planning_pb2.ListCasesRequest(context=query(), overdue_now=True))

    assert list(overdue.cases) == [], "due today, not overdue"


async def test_the_case_view_shows_the_agencys_dates(deps: Dependencies, bus: Bus) -> None:
    """A contact and an evaluation at 17:00 in Los Angeles are of that day there, as the
    follow-up the contact set for it: on UTC's date the view put them on the next day, the
    follow-up due before the contact that set it."""
    bus.time_zone = ZoneInfo("America/Los_Angeles")
    plan = Planner(deps, bus)
    await bus.open_case("case-1")
    await plan(c.DraftPlan("case-1", "plan-1", (goal("goal-walk"),)))
    await plan(c.RecordAgreement("case-1", None, "yes", True))
    call = c.LogContact("case-1", "call", ContactKind.PHONE_CALL, "Fine", AGENCY_TODAY)
    await plan(call, occurred_at=EVENING)
    on_track = GoalProgress(goal_id="goal-walk", rating=ProgressRating.ON_TRACK)
    evaluation = c.EvaluateProgress("case-1", "eval-1", (on_track,), (), (), False)
    await plan(evaluation, occurred_at=EVENING)

    document = await CaseViews(bus.read_models).get("case-1")

    assert document is not None
    view = present.case_view(document, special=True)
    today = AGENCY_TODAY.isoformat()
    assert (view.last_contact_on, view.next_follow_up_due) == (today, today)
    assert view.plan.last_evaluated_on == today
