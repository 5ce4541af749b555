"""A service of a special-data kind (addiction counseling) is withheld whole from a reader not
entitled to sensitive values, and so is what is about it though none of its own fields is
special data: a claim naming it in a coordinator's GetCaseCoordination, whose services did not
list it, and a reservation for it in their GetBudgetLine (an id the case's services do not list
could only be a withheld one's, telling them of the substance use)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.policy.guard import REDACTED_KEY
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import RecordAccessed
from events.catalog.values import NeedCategory
from tests.unit.coordination.rpc import COUNSELING_CENTRE, HOME_CARE_CO, schedule_request, usd
from tests.unit.coordination.support import (
    CASE_MANAGER,
    OPENED,
    IntakeFeed,
    carried_by,
    command_context,
    query_context,
    timestamp,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

COORDINATOR = ("coordinator", "coordination")
WORKER = ("case_manager", "direct_care")
"""The case's worker (``carried_by``'s), entitled to sensitive values."""


async def _delivered_claimed_and_funded(
    stub: Stub, kind: str, provider: pb.Provider, hour: int
) -> str:
    """A service of ``kind`` given on the day after the case's opening at ``hour``, money
    reserved for it on the flexible fund and a claim filed for it: the service's id."""
    starts_at = OPENED + timedelta(days=1, hours=hour)
    booked: pb.ScheduleServiceResponse = await stub.ScheduleService(
        schedule_request("case-1", kind, starts_at, provider=provider)
    )
    await stub.RecordServiceDelivered(
        pb.RecordServiceDeliveredRequest(
            context=command_context("case_manager"),
            case_id="case-1",
            service_id=booked.service_id,
            starts_at=timestamp(starts_at),
            ends_at=timestamp(starts_at + timedelta(hours=1)),
        )
    )
    await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="flex",
            amount=usd(1_000),
            service_id=booked.service_id,
        )
    )
    await stub.FileInsuranceClaim(
        pb.FileInsuranceClaimRequest(
            context=command_context("case_manager"),
            case_id="case-1",
            insurer=pb.Provider(provider_id="medicare", name="Medicare"),
            amount_claimed=usd(1_000),
            service_ids=[booked.service_id],
        )
    )
    return booked.service_id


async def test_a_claim_or_reservation_for_a_withheld_service_is_withheld_with_it(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case(
        "case-1", "client-1", [NeedCategory.HOME_CARE, NeedCategory.SUBSTANCE_USE]
    )
    await carried_by(store, "case-1")
    await intake.policy_told_assigned("case-1", CASE_MANAGER, "team-east")
    home = await _delivered_claimed_and_funded(stub, "home_care", HOME_CARE_CO, 0)
    detox = await _delivered_claimed_and_funded(stub, "addiction_counseling", COUNSELING_CENTRE, 2)

    async def read(reader: tuple[str, str]) -> tuple[list[str], list[str], int, list[str]]:
        # Contexts alike are told apart by who built them last: each is built before its call.
        case = stub.GetCaseCoordination(
            pb.GetCaseCoordinationRequest(context=query_context(*reader), case_id="case-1")
        )
        line = stub.GetBudgetLine(
            pb.GetBudgetLineRequest(context=query_context(*reader), budget_line="flex")
        )
        withheld = [
            dict(await call.trailing_metadata()).get(REDACTED_KEY, "") for call in (case, line)
        ]
        answer = await case
        return (
            [service_id for claim in answer.claims for service_id in claim.service_ids],
            [r.service_id for r in (await line).reservations],
            answer.claims_total,
            withheld,
        )

    claimed, reserved, claims_total, withheld = await read(COORDINATOR)
    assert (claimed, reserved, claims_total) == ([home], [home], 1)
    assert "claims.service_ids" in withheld[0].split(",")
    assert "reservations.service_id" in withheld[1].split(",")
    # Each read recorded with the path it withheld (in either order: the calls ran together).
    *_, one, other = [r.event for r in await store.read_stream("access-case-1")]
    assert isinstance(one, RecordAccessed)
    assert isinstance(other, RecordAccessed)
    recorded = {*one.redacted_fields, *other.redacted_fields}
    assert {"claims.service_ids", "reservations.service_id"} <= recorded

    claimed, reserved, claims_total, withheld = await read(WORKER)
    assert (sorted(claimed), sorted(reserved), claims_total) == (
        sorted([home, detox]),
        sorted([home, detox]),
        2,
    )
    assert withheld == ["", ""]
