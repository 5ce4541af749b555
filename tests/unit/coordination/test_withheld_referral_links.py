"""A referral of a special-data need is withheld whole from a reader not entitled to sensitive
values, and so is its id where a service names it: a counseling service booked from a
substance-use referral kept the referral's id in a coordinator's GetCaseCoordination, whose
referrals did not list it (an id no listed referral has could only be a withheld one's), and in
their GetClientSchedule, beside that answer."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.policy.guard import REDACTED_KEY
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import RecordAccessed, SensitiveCategory
from events.catalog.values import NeedCategory
from tests.unit.coordination.rpc import (
    COUNSELING_CENTRE,
    NEXT_WEEK,
    accept,
    refer,
    schedule_request,
)
from tests.unit.coordination.support import CASE_MANAGER, IntakeFeed, carried_by, query_context

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

PARTNER = COUNSELING_CENTRE.provider_id
COORDINATOR = ("coordinator", "coordination")
WORKER = ("case_manager", "direct_care")
"""The case's worker (``carried_by``'s), entitled to sensitive values."""


async def _booked_from(stub: Stub, need: str, hours: int) -> tuple[str, str]:
    """A counseling service (no special-data kind) booked from an accepted referral of
    ``need``: the referral's and the service's ids."""
    made = await refer(stub, "case-1", need)
    await accept(stub, "case-1", made.referral_id)
    booked = await stub.ScheduleService(
        schedule_request(
            "case-1",
            "counseling",
            NEXT_WEEK + timedelta(hours=hours),
            provider=COUNSELING_CENTRE,
            referral_id=made.referral_id,
        )
    )
    return made.referral_id, booked.service_id


async def test_a_service_names_no_referral_withheld_from_its_reader(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case(
        "case-1", "client-1", [NeedCategory.HOME_CARE, NeedCategory.SUBSTANCE_USE]
    )
    await intake.consent("case-1", "client-1", PARTNER, [SensitiveCategory.SUBSTANCE_USE])
    await carried_by(store, "case-1")
    await intake.policy_told_assigned("case-1", CASE_MANAGER, "team-east")
    detox, from_detox = await _booked_from(stub, "substance_use", 0)
    home, from_home = await _booked_from(stub, "home_care", 2)

    async def links(reader: tuple[str, str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
        # Contexts alike are told apart by who built them last: each is built before its call.
        case = stub.GetCaseCoordination(
            pb.GetCaseCoordinationRequest(context=query_context(*reader), case_id="case-1")
        )
        schedule = stub.GetClientSchedule(
            pb.GetClientScheduleRequest(context=query_context(*reader), client_id="client-1")
        )
        withheld = [
            dict(await call.trailing_metadata()).get(REDACTED_KEY, "") for call in (case, schedule)
        ]
        return (
            {s.service_id: s.referral_id for s in (await case).services},
            {s.service_id: s.referral_id for s in (await schedule).services},
            withheld,
        )

    in_case, in_schedule, withheld = await links(COORDINATOR)
    # The service stays (counseling is no special data); the referral it came from does not show.
    assert in_case == in_schedule == {from_detox: "", from_home: home}
    assert all("services.referral_id" in paths.split(",") for paths in withheld)
    [*_, read] = [r.event for r in await store.read_stream("access-case-1")]
    assert isinstance(read, RecordAccessed)
    assert "services.referral_id" in read.redacted_fields

    in_case, in_schedule, withheld = await links(WORKER)
    assert in_case == in_schedule == {from_detox: detox, from_home: home}
    assert withheld == ["", ""]


async def test_the_referral_link_is_listed_as_withheld_whatever_the_case_holds(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """Listed only when a referral's id was cleared, the path would tell that the case has a
    referral of a special-data need: the case reads the same before and after one (its service
    of a kind no special data is the only trace, and names no referral)."""
    await intake.open_case(
        "case-1", "client-1", [NeedCategory.HOME_CARE, NeedCategory.SUBSTANCE_USE]
    )
    await intake.consent("case-1", "client-1", PARTNER, [SensitiveCategory.SUBSTANCE_USE])
    await carried_by(store, "case-1")
    await _booked_from(stub, "home_care", 0)
    read = pb.GetCaseCoordinationRequest(context=query_context(*COORDINATOR), case_id="case-1")
    without = stub.GetCaseCoordination(read)
    await without
    await _booked_from(stub, "substance_use", 2)
    read = pb.GetCaseCoordinationRequest(context=query_context(*COORDINATOR), case_id="case-1")
    with_one = stub.GetCaseCoordination(read)
    await with_one
    trailers = [dict(await call.trailing_metadata()) for call in (without, with_one)]
    assert trailers[0] == trailers[1]
    assert "services.referral_id" in trailers[0][REDACTED_KEY].split(",")
