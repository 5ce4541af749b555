"""A command that states no moment happens now, and is checked so: every moment may be stated
up to five minutes ahead (``OCCURRED_AT_CLOCK_SKEW``), so a contact stated a few minutes ahead
and a closure sent after it stating none was recorded before the contact, unchecked (a CloseCase
stating now was refused), and a plan drafted stating none before the assessment stated ahead.
On the server's real clock, as the edge checks the stated moments on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc
from casetrail_platform.commands import CommandContext, InvalidCommand
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.monitoring import ContactKind, ContactLogged
from services.planning.app.handlers import Dependencies, handle
from services.planning.domain import commands as c
from services.planning.entrypoints.grpc_server import SERVICE_NAME, PlanningServicer
from tests.support.grpc import serving
from tests.support.identity import TestIssuer
from tests.unit.planning.support import (
    COORDINATION,
    INTAKE,
    INTAKE_WORKER,
    WORKER,
    Bus,
    assessed,
    assigned,
    case_opened,
    ctx,
    one,
    refused,
)

AHEAD = timedelta(minutes=4)
"""Within the five minutes a stated moment may be ahead of the server's clock."""


@pytest.fixture
async def stub(
    deps: Dependencies, bus: Bus, store: SqliteEventStore, issuer: TestIssuer
) -> AsyncIterator[planning_pb2_grpc.PlanningServiceAsyncStub]:
    """Planning's API on the real clock (the servicer's default)."""
    access = AccessControl(
        store,
        CaseFactsReader(bus.read_models),
        "casetrail/planning",
        home_agency=DEFAULT_HOME_AGENCY,
    )
    servicer = PlanningServicer(deps, access)

    def register(server: grpc.aio.Server) -> None:
        planning_pb2_grpc.add_PlanningServiceServicer_to_server(servicer, server)

    async with serving(register, SERVICE_NAME, issuer) as channel:
        yield planning_pb2_grpc.PlanningServiceStub(channel)  # type: ignore[misc]


def _stating(key: str, moment: datetime) -> common_pb2.CommandContext:
    context = ctx(key=key)
    context.occurred_at.FromDatetime(moment)
    return context


async def _refused_naming(call: Awaitable[Any], what: str) -> None:
    """``call`` is refused INVALID_ARGUMENT naming ``context.occurred_at``, ``what`` it would
    come before, and what to do: state a moment at or after it."""
    code, details = await refused(call)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    [violation] = one(details, error_details_pb2.BadRequest).field_violations
    assert violation.field == "context.occurred_at"
    assert what in violation.description
    assert "the moment it states, else now): state a moment at or after" in violation.description


async def test_a_closure_stating_no_moment_does_not_come_before_the_contact_stated_ahead(
    stub: planning_pb2_grpc.PlanningServiceAsyncStub, bus: Bus, store: SqliteEventStore
) -> None:
    earlier = datetime.now(UTC) - timedelta(hours=1)
    await bus.record(
        INTAKE, "case-1", case_opened("case-1"), assessed("case-1"), occurred_at=earlier
    )
    await bus.record(COORDINATION, "case-1", assigned("case-1"), occurred_at=earlier)
    ahead = datetime.now(UTC) + AHEAD
    await stub.LogContact(
        planning_pb2.LogContactRequest(
            context=_stating("visit", ahead), case_id="case-1", kind="phone_call", summary="ok"
        )
    )
    await bus.sync()
    [contact] = await store.read_stream("case-case-1")
    assert isinstance(contact.event, ContactLogged)
    logged = f"contact {contact.event.contact_id} was logged"

    for context in (ctx(key="close"), _stating("close-now", datetime.now(UTC))):
        closure = planning_pb2.CloseCaseRequest(
            context=context, case_id="case-1", reason="client_moved"
        )
        await _refused_naming(stub.CloseCase(closure), logged)
    assert await store.read_stream("case-case-1") == [contact], "a refusal writes nothing"

    closure = planning_pb2.CloseCaseRequest(
        context=_stating("close-after", ahead), case_id="case-1", reason="client_moved"
    )
    await stub.CloseCase(closure)
    assert [r.metadata.occurred_at for r in await store.read_stream("case-case-1")] == [
        contact.metadata.occurred_at,
        contact.metadata.occurred_at,
    ]


async def test_a_plan_stating_no_moment_does_not_come_before_the_assessment_stated_ahead(
    stub: planning_pb2_grpc.PlanningServiceAsyncStub, bus: Bus, store: SqliteEventStore
) -> None:
    earlier = datetime.now(UTC) - timedelta(hours=1)
    await bus.record(INTAKE, "case-1", case_opened("case-1"), occurred_at=earlier)
    await bus.record(COORDINATION, "case-1", assigned("case-1"), occurred_at=earlier)
    ahead = datetime.now(UTC) + AHEAD
    await bus.record(INTAKE, "case-1", assessed("case-1"), actor=INTAKE_WORKER, occurred_at=ahead)
    draft = planning_pb2.DraftPlanRequest(
        context=ctx(key="draft"),
        case_id="case-1",
        goals=[
            planning_pb2.Goal(
                goal_id="goal-walk", statement="Walk", term="short", need_category="home_care"
            )
        ],
    )

    await _refused_naming(stub.DraftPlan(draft), "case case-1 was assessed")
    assert await store.read_all(0) == []

    draft.context.CopyFrom(_stating("draft-after", ahead))
    await stub.DraftPlan(draft)


async def test_the_moment_checked_is_the_one_the_events_carry(deps: Dependencies, bus: Bus) -> None:
    """A command stating none happens on the server's clock (``CommandContext.clock``): its
    events carry the moment its order was checked at, not another read of the wall clock."""
    opened_at = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)
    await bus.record(
        INTAKE, "case-1", case_opened("case-1"), assessed("case-1"), occurred_at=opened_at
    )
    await bus.record(COORDINATION, "case-1", assigned("case-1"), occurred_at=opened_at)
    contact = c.LogContact("case-1", "call", ContactKind.PHONE_CALL, "ok", None)

    def at(moment: datetime) -> CommandContext:
        return CommandContext(WORKER, f"key-{moment}", clock=lambda: moment)

    with pytest.raises(InvalidCommand, match="must not be before case case-1 was opened"):
        await handle(deps, at(opened_at - timedelta(seconds=1)), contact)
    outcome = await handle(deps, at(opened_at), contact)
    [logged] = outcome.recorded
    assert logged.metadata.occurred_at == opened_at
