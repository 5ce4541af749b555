"""A service booked from a referral is read by the referral's provider, so a kind that tells of
a sensitive category (``addiction_counseling``: substance use) discloses it as a referral of
that need would: it comes only from a referral of that need, or from one made under a consent
in force naming the category. Booked from a home-care referral under a consent naming none, it
told a partner of the client's substance use that MakeReferral had refused to tell it."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import grpc

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import ConsentRevoked, SensitiveCategory
from events.catalog.scheduling import ServiceScheduled
from events.catalog.values import NeedCategory
from services.coordination.domain.facts import schedule_stream
from tests.unit.coordination.rpc import (
    COUNSELING_CENTRE,
    NEXT_WEEK,
    accept,
    refer,
    refused,
    schedule_request,
)
from tests.unit.coordination.support import IntakeFeed, carried_by

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

PARTNER = COUNSELING_CENTRE.provider_id


def _booking(
    referral_id: str | None, kind: str = "addiction_counseling", hours: int = 0
) -> pb.ScheduleServiceRequest:
    return schedule_request(
        "case-1",
        kind,
        NEXT_WEEK + timedelta(hours=hours),
        provider=COUNSELING_CENTRE,
        referral_id=referral_id,
    )


async def _referred(stub: Stub, need: str) -> str:
    made = await refer(stub, "case-1", need)
    await accept(stub, "case-1", made.referral_id)
    return made.referral_id


async def _kinds_booked(store: SqliteEventStore) -> list[str]:
    return [
        recorded.event.kind.value
        for recorded in await store.read_stream(schedule_stream("client-1"))
        if isinstance(recorded.event, ServiceScheduled)
    ]


async def test_a_kind_telling_of_a_category_the_referral_has_no_consent_for_is_refused(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await intake.consent("case-1", "client-1", PARTNER)  # names no sensitive category
    await carried_by(store, "case-1")
    home_care = await _referred(stub, "home_care")

    refusal = await refused(stub.ScheduleService(_booking(home_care)))

    assert (refusal.code, refusal.rule) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_REQUIRED")
    assert refusal.metadata == {
        "subject": "case/case-1",
        "recipient": PARTNER,
        "purpose": "coordination",
        "scope": "services",
        "category_field": "kind",
    }
    said = " ".join([refusal.message, *(str(detail) for detail in refusal.details)])
    for special in ("addiction_counseling", *(c.value for c in SensitiveCategory)):
        assert special not in said
    # Of no sensitive kind, or booked by the agency for itself (no referral: its provider
    # reads nothing of it), the service is booked as before.
    await stub.ScheduleService(_booking(home_care, "home_care", hours=2))
    await stub.ScheduleService(_booking(None, hours=4))
    assert sorted(await _kinds_booked(store)) == ["addiction_counseling", "home_care"]


async def test_the_referrals_need_or_its_consent_naming_the_category_lets_the_kind_be_booked(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.SUBSTANCE_USE])
    await intake.consent("case-1", "client-1", PARTNER, [SensitiveCategory.SUBSTANCE_USE])
    await carried_by(store, "case-1")
    substance_use = await _referred(stub, "substance_use")
    home_care = await _referred(stub, "home_care")

    await stub.ScheduleService(_booking(substance_use))
    await stub.ScheduleService(_booking(home_care, hours=2))
    assert await _kinds_booked(store) == ["addiction_counseling"] * 2

    # The consent revoked, the home-care referral's consent names the category no more.
    await intake.deliver(
        ConsentRevoked(
            case_id="case-1", client_id="client-1", consent_id=f"consent-case-1-{PARTNER}"
        ),
        "case-case-1",
    )
    refusal = await refused(stub.ScheduleService(_booking(home_care, hours=4)))
    assert refusal.rule == "CONSENT_REQUIRED"
