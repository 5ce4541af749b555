"""A supervisor's CloseCase while the case's transfer to another team has reached planning's
case view but not yet the policy's facts (two consumer groups, each at its own pace): the
facts still name the team the case left, so its supervisor would close a case no longer theirs.
Planning answers UNAVAILABLE (FACTS_NOT_CAUGHT_UP, retry) and writes nothing until the facts
hold the transfer too, then decides on them. On both read-model backends: the positions
compared are kept in the documents each stores."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import Role
from services.planning.app.handlers import Dependencies
from services.planning.entrypoints.grpc_server import SERVICE_NAME, PlanningServicer
from tests.support.backends import read_models_on
from tests.support.grpc import details, mentions, refusal, serving, unpacked
from tests.support.identity import TestIssuer, acting
from tests.support.waiting import eventually
from tests.unit.planning.conftest import NOW, Planning
from tests.unit.planning.support import (
    COORDINATION,
    INTAKE,
    INTAKE_WORKER,
    WORKER,
    Bus,
    case_opened,
)

CASE = "case-1"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def read_models(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ReadModelStore]:
    """Planning's read models (case view and policy facts) on each backend."""
    async with read_models_on(request.param, tmp_path, "planning_lag") as opened:
        yield opened


async def east_case(bus: Bus) -> None:
    """The case opened and assigned to a worker of team-east, delivered to both."""
    await bus.record(INTAKE, CASE, case_opened(CASE), actor=INTAKE_WORKER)
    await bus.record(
        COORDINATION,
        CASE,
        CaseAssigned(
            case_id=CASE,
            worker_id=WORKER.user_id,
            worker_role=WORKER.role,
            worker_team="team-east",
            reason="fits",
        ),
    )


async def transfer_west(bus: Bus, *, delivered_to: str) -> None:
    """Coordination moves the case to a worker of team-west; the bus has delivered it to one
    of planning's consumer groups only (``"view"`` or ``"facts"``)."""
    recorded = await bus.append(
        COORDINATION,
        CASE,
        CaseReassigned(
            case_id=CASE,
            previous_worker_id=WORKER.user_id,
            worker_id="worker-west",
            worker_role=Role.CASE_MANAGER,
            worker_team="team-west",
            reason="moved to team-west",
        ),
    )
    handler = bus.handler() if delivered_to == "view" else bus.facts_handler()
    for event in recorded:
        await handler(event)


def close(planning: Planning, team: str, key: str) -> Awaitable[Any]:
    supervisor = Person(f"super-{team}", "supervisor", team=team)
    request = planning_pb2.CloseCaseRequest(
        context=acting(supervisor, common_pb2.CommandContext(idempotency_key=key)),
        case_id=CASE,
        reason="client_moved",
    )
    answer: Awaitable[Any] = planning.stub.CloseCase(request)
    return answer


async def refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo]:
    code, status = await refusal(call)
    [info] = [d for d in unpacked(status) if isinstance(d, error_details_pb2.ErrorInfo)]
    return code, info


async def test_the_previous_teams_supervisor_waits_for_the_facts_then_is_refused(
    planning: Planning,
) -> None:
    await east_case(planning.bus)
    await transfer_west(planning.bus, delivered_to="view")

    code, info = await refused(close(planning, "team-east", "east-1"))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert info.reason == "FACTS_NOT_CAUGHT_UP"
    assert info.metadata["subject"] == CASE
    # The facts still name team-east: team-west's supervisor is refused as before, for now.
    code, info = await refused(close(planning, "team-west", "west-1"))
    assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    assert await planning.store.read_all(0) == [], "nothing written while the facts trail"

    await planning.bus.sync()  # the facts learn the transfer
    attempts = iter(range(2, 1000))

    async def decided() -> tuple[grpc.StatusCode, str] | None:
        # A cached copy of the facts is forgotten when the commit that changed them is told
        # (on PostgreSQL by NOTIFY, a moment after the commit): until then, still a retry.
        code, info = await refused(close(planning, "team-east", f"east-{next(attempts)}"))
        return None if info.reason == "FACTS_NOT_CAUGHT_UP" else (code, info.reason)

    outcome = await eventually(decided, "the facts hold the transfer")
    assert outcome == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    assert await planning.store.read_all(0) == []
    closed = await close(planning, "team-west", "west-2")
    assert closed.result.version == 1


async def test_facts_ahead_of_the_case_view_decide_as_they_stand(planning: Planning) -> None:
    await east_case(planning.bus)
    await transfer_west(planning.bus, delivered_to="facts")

    code, info = await refused(close(planning, "team-east", "east"))
    assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    closed = await close(planning, "team-west", "west")
    assert closed.result.version == 1


async def test_another_teams_supervisor_learns_nothing_from_trailing_facts(
    planning: Planning,
) -> None:
    """The facts' refusal comes first: a supervisor of neither team is told PERMISSION_DENIED,
    as for a case that does not exist, not that the case has news on its way."""
    await east_case(planning.bus)
    await transfer_west(planning.bus, delivered_to="view")

    code, info = await refused(close(planning, "team-north", "north"))
    assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")


async def test_a_supervisor_s_closure_retried_after_a_transfer_answers_as_the_first(
    planning: Planning,
) -> None:
    """Team-east's supervisor closed the case, then it went to team-west: the same request
    retried under its key (its first answer lost) gets the first answer again, not the
    refusal a new closure of theirs gets (the retry is looked up before the team is checked,
    as intake's ReopenCase and coordination's supervisor commands do)."""
    await east_case(planning.bus)
    first = await close(planning, "team-east", "east-1")
    await transfer_west(planning.bus, delivered_to="view")
    await planning.bus.sync()

    assert await close(planning, "team-east", "east-1") == first
    code, info = await refused(close(planning, "team-east", "east-2"))
    assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    assert len(await planning.store.read_all(0)) == 1, "the retry wrote nothing"


WEST_CASE = "case-west-9"
"""A case of team-west, which a team-east supervisor's list matches (any team's) but may not
see."""


class Behind:
    """``case_facts_caught_up``: the facts' group holds every case's facts on the bus but
    ``behind``'s (its barrier's wait ran out)."""

    def __init__(self, behind: str) -> None:
        self.behind = behind
        self.asked: list[str] = []

    async def __call__(self, case_id: str) -> bool:
        self.asked.append(case_id)
        return case_id != self.behind


@pytest.fixture
async def reads_behind(
    deps: Dependencies, planning: Planning, store: SqliteEventStore, issuer: TestIssuer
) -> AsyncIterator[tuple[planning_pb2_grpc.PlanningServiceAsyncStub, Behind]]:
    """Planning over the same bus and store as ``planning``, its reads waiting at a barrier
    that ``WEST_CASE``'s facts do not pass."""
    barrier = Behind(WEST_CASE)
    access = AccessControl(
        store,
        CaseFactsReader(planning.bus.read_models),
        "casetrail/planning",
        home_agency=DEFAULT_HOME_AGENCY,
        case_facts_caught_up=barrier,
    )
    servicer = PlanningServicer(deps, access, clock=lambda: NOW)

    def register(server: grpc.aio.Server) -> None:
        planning_pb2_grpc.add_PlanningServiceServicer_to_server(servicer, server)

    async with serving(register, SERVICE_NAME, issuer) as channel:
        yield planning_pb2_grpc.PlanningServiceStub(channel), barrier  # type: ignore[misc]


async def test_a_supervisor_s_list_whose_facts_trail_names_the_list_not_a_case_found(
    planning: Planning,
    reads_behind: tuple[planning_pb2_grpc.PlanningServiceAsyncStub, Behind],
) -> None:
    """ListCases finds the cases matching the filter, any team's, then waits for each one's
    facts before deciding: a refusal naming the trailing case would tell team-east's
    supervisor of a team-west case, with nothing recorded. It names the list, as a refused
    list is recorded (``CASE_LIST``)."""
    stub, barrier = reads_behind
    await east_case(planning.bus)
    await planning.bus.record(INTAKE, WEST_CASE, case_opened(WEST_CASE), actor=INTAKE_WORKER)
    await planning.bus.record(
        COORDINATION,
        WEST_CASE,
        CaseAssigned(
            case_id=WEST_CASE,
            worker_id="worker-west",
            worker_role=Role.CASE_MANAGER,
            worker_team="team-west",
            reason="fits",
        ),
    )
    written = await planning.store.read_all(0)
    supervisor = Person("super-team-east", "supervisor", team="team-east")
    request = planning_pb2.ListCasesRequest(
        context=acting(supervisor, common_pb2.QueryContext(purpose="supervision"))
    )

    code, status = await refusal(stub.ListCases(request))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert WEST_CASE in barrier.asked
    assert not mentions(status, WEST_CASE), status
    [info] = details(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["subject"]) == ("FACTS_NOT_CAUGHT_UP", "case-list")
    assert "case-list" in status.message
    assert await planning.store.read_all(0) == written, "nothing decided, so nothing recorded"

    barrier.behind = "none"
    listed = await stub.ListCases(request)
    assert [case.case_id for case in listed.cases] == [CASE]
