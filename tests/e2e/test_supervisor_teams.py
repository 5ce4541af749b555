"""A supervisor's coordination commands on a case (TransferCase, ReserveBudget, ReleaseBudget)
follow the case's team as coordination records it: the moment a transfer to another team is
answered, the previous team's supervisor is refused and the new team's acts, whatever the bus
has delivered to the access policy's facts yet."""

from __future__ import annotations

import grpc
import pytest

from casetrail.coordination.v1 import coordination_pb2 as co
from cli.rpc import Person, command, refused
from cli.walk.story import COORDINATOR
from tests.e2e.conftest import Casetrail
from tests.e2e.support import new_case
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")

EAST = Person("sup-omar-haddad", "supervisor", team="team-east")
WEST = Person("sup-helen-reyes", "supervisor", team="team-west")
FLEX = "flex-fund-fy2025"


async def test_a_transfer_to_another_team_moves_its_supervision_at_once(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "socialisation")
    coordinator = casetrail.stubs.as_(COORDINATOR).coordination
    await coordinator.AssignCase(
        co.AssignCaseRequest(
            context=command(key()), case_id=case.case_id, worker_id="cm-dana-reyes"
        )
    )
    # From cm-dana-reyes of team-east to sw-tom-becker of team-west (the agency's file).
    await coordinator.TransferCase(
        co.TransferCaseRequest(
            context=command(key()),
            case_id=case.case_id,
            worker_id="sw-tom-becker",
            reason="the client moved west",
        )
    )
    east = casetrail.stubs.as_(EAST).coordination
    west = casetrail.stubs.as_(WEST).coordination

    def reserve() -> co.ReserveBudgetRequest:
        return co.ReserveBudgetRequest(
            context=command(key()),
            case_id=case.case_id,
            budget_line=FLEX,
            amount=co.Money(amount_minor_units=100, currency="USD"),
        )

    def transfer(worker_id: str) -> co.TransferCaseRequest:
        return co.TransferCaseRequest(
            context=command(key()), case_id=case.case_id, worker_id=worker_id, reason="balance"
        )

    reserved = await west.ReserveBudget(reserve())
    release = co.ReleaseBudgetRequest(
        context=command(key()),
        case_id=case.case_id,
        budget_line=FLEX,
        reservation_id=reserved.reservation_id,
        reason="not needed",
    )
    for call in (
        east.ReserveBudget(reserve()),
        east.ReleaseBudget(release),
        east.TransferCase(transfer("cm-dana-reyes")),
    ):
        refusal = await refused(call)
        assert (refusal.code, refusal.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NO_RELATIONSHIP",
        )
    await west.ReleaseBudget(release)
    moved = await west.TransferCase(transfer("cm-sam-patel"))
    assert moved.previous_worker_id == "sw-tom-becker"
