"""A contact or a discharge plan checked against the server's day (a follow-up not due before
it, a target not before it), whose first answer was lost and which is retried the next day:
the retry gets the first answer, not a refusal of what was recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.store.sqlite import SqliteEventStore
from services.planning.app.handlers import Dependencies
from services.planning.entrypoints.grpc_server import SERVICE_NAME, PlanningServicer
from tests.support.grpc import serving
from tests.support.identity import TestIssuer
from tests.unit.planning.conftest import NOW
from tests.unit.planning.support import Bus, ctx, one, refused


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def clocked(
    deps: Dependencies, bus: Bus, store: SqliteEventStore, issuer: TestIssuer
) -> AsyncIterator[tuple[planning_pb2_grpc.PlanningServiceAsyncStub, Clock]]:
    clock = Clock()
    access = AccessControl(
        store,
        CaseFactsReader(bus.read_models),
        "casetrail/planning",
        home_agency=DEFAULT_HOME_AGENCY,
    )
    servicer = PlanningServicer(deps, access, clock=clock)

    def register(server: grpc.aio.Server) -> None:
        planning_pb2_grpc.add_PlanningServiceServicer_to_server(servicer, server)

    async with serving(register, SERVICE_NAME, issuer) as channel:
        yield planning_pb2_grpc.PlanningServiceStub(channel), clock  # type: ignore[misc]


async def test_a_contact_retried_the_next_day_gets_its_first_answer(
    clocked: tuple[planning_pb2_grpc.PlanningServiceAsyncStub, Clock], bus: Bus
) -> None:
    stub, clock = clocked
    await bus.open_case("case-1")
    request = planning_pb2.LogContactRequest(
        context=ctx(key="contact-today"),
        case_id="case-1",
        kind="phone_call",
        summary="called",
        next_follow_up_due=NOW.date().isoformat(),
    )
    first = await stub.LogContact(request)

    clock.now = NOW + timedelta(days=1)
    assert await stub.LogContact(request) == first

    request.context.idempotency_key = "contact-tomorrow"
    code, details = await refused(stub.LogContact(request))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    [violation] = one(details, error_details_pb2.BadRequest).field_violations
    assert violation.field == "next_follow_up_due"
