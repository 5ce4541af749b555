"""A case's coordination is a bounded answer (``convert.CASE_*``, ``*_truncated``, ``*_total``),
through the real gRPC server: the services as a client's schedule chooses them, and of the other
lists that grow with the case the entries still running first, then the latest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.grpc_platform.answer_caps import Cap
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import RecordAccessed
from events.catalog.values import NeedCategory
from services.coordination.entrypoints import convert
from tests.unit.coordination.rpc import COUNSELING_CENTRE, booked_and_cancelled, schedule_request
from tests.unit.coordination.support import IntakeFeed, carried_by, query_context

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MiB = 1024 * 1024


async def test_the_case_lists_at_most_its_cap_of_services_and_says_so(
    stub: Stub, intake: IntakeFeed, monkeypatch: pytest.MonkeyPatch, store: SqliteEventStore
) -> None:
    # Unbounded, 4,000 services were a 4.4 MB answer: refused RESOURCE_EXHAUSTED by the client
    # after the read was recorded, so the case could never be read again.
    ids = await booked_and_cancelled(stub, intake, store)
    monkeypatch.setattr(convert, "CASE_SERVICES", Cap(3, MiB))
    read = pb.GetCaseCoordinationRequest(context=query_context(), case_id="case-1")

    view = await stub.GetCaseCoordination(read)
    # Both still scheduled, then the latest cancelled one; in start order.
    assert [s.service_id for s in view.services] == [ids[1], ids[2], ids[3]]
    assert (view.services_truncated, view.services_total) == (True, 4)
    assert (view.referrals_truncated, view.referrals_total) == (False, 0)

    monkeypatch.setattr(convert, "CASE_SERVICES", Cap(4, MiB))
    whole = await stub.GetCaseCoordination(read)
    assert [s.service_id for s in whole.services] == ids
    assert (whole.services_truncated, whole.services_total) == (False, 4)


async def test_the_cut_counts_only_what_the_caller_may_read_and_records_what_it_lists(
    stub: Stub, intake: IntakeFeed, monkeypatch: pytest.MonkeyPatch, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.SUBSTANCE_USE])
    await carried_by(store, "case-1")
    counseling = await stub.ScheduleService(
        schedule_request("case-1", "addiction_counseling", MONDAY_10, provider=COUNSELING_CENTRE)
    )
    for day in (1, 2):
        await stub.ScheduleService(
            schedule_request("case-1", "home_care", MONDAY_10 + timedelta(days=day))
        )
    monkeypatch.setattr(convert, "CASE_SERVICES", Cap(2, MiB))

    # A coordinator may not see addiction counseling: the cut is among the two others, and
    # neither the list nor its total tells that a third was withheld.
    seen = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(context=query_context(), case_id="case-1")
    )
    assert [s.kind for s in seen.services] == ["home_care", "home_care"]
    assert (seen.services_truncated, seen.services_total) == (False, 2)

    # An auditor reviewing confidentiality sees all three, the counseling first (the soonest);
    # the read records the sensitive field shown, of the services listed.
    before = await store.last_position()
    audited = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(
            context=query_context("auditor", "confidentiality_review"), case_id="case-1"
        )
    )
    assert audited.services[0].service_id == counseling.service_id
    assert (audited.services_truncated, audited.services_total) == (True, 3)
    [access] = [
        e.event for e in await store.read_all(before) if isinstance(e.event, RecordAccessed)
    ]
    assert "services.kind" in access.fields

    # Listed without the counseling, no kind of it is read, and none is recorded as read.
    monkeypatch.setattr(convert, "CASE_SERVICES", Cap(1, MiB))
    later = await stub.ScheduleService(
        schedule_request("case-1", "home_care", MONDAY_10 - timedelta(hours=3))
    )
    before = await store.last_position()
    audited = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(
            context=query_context("auditor", "confidentiality_review"), case_id="case-1"
        )
    )
    assert [s.service_id for s in audited.services] == [later.service_id]
    [access] = [
        e.event for e in await store.read_all(before) if isinstance(e.event, RecordAccessed)
    ]
    assert "services.kind" not in access.fields


def _service(service_id: str, day: int, status: str) -> pb.ScheduledService:
    service = pb.ScheduledService(service_id=service_id, case_id="case-1", status=status)
    service.starts_at.FromDatetime(MONDAY_10 + timedelta(days=day))
    return service


def test_the_cut_keeps_what_still_runs_then_the_latest_in_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for cap in ("CASE_SERVICES", "CASE_REFERRALS", "CASE_ELIGIBILITY", "CASE_CLAIMS"):
        monkeypatch.setattr(convert, cap, Cap(2, MiB))
    answer = pb.GetCaseCoordinationResponse(
        services=[
            _service("a", 0, "delivered"),
            _service("b", 9, "scheduled"),
            _service("c", 5, "cancelled"),
        ],
        referrals=[
            pb.Referral(referral_id="r1", status="accepted"),
            pb.Referral(referral_id="r2", status="declined"),
            pb.Referral(referral_id="r3", status="completed"),
            pb.Referral(referral_id="r4", status="withdrawn"),
        ],
        eligibility=[
            pb.EligibilityDecision(program_id="food", eligible=True),
            pb.EligibilityDecision(program_id="waiver", eligible=False),
            pb.EligibilityDecision(program_id="waiver", eligible=True),
        ],
        claims=[
            pb.Claim(claim_id="c1", status="filed"),
            pb.Claim(claim_id="c2", status="denied"),
            pb.Claim(claim_id="c3", status="approved"),
        ],
    )

    convert.cut_case_coordination(answer)

    assert [s.service_id for s in answer.services] == ["b", "c"]
    assert [r.referral_id for r in answer.referrals] == ["r1", "r4"]
    # Each programme's latest decision, the earlier waiver decision left out.
    assert [(d.program_id, d.eligible) for d in answer.eligibility] == [
        ("food", True),
        ("waiver", True),
    ]
    assert [c.claim_id for c in answer.claims] == ["c1", "c3"]
    assert (answer.services_total, answer.referrals_total) == (3, 4)
    assert (answer.eligibility_total, answer.claims_total) == (3, 3)
    assert answer.services_truncated
    assert answer.referrals_truncated
    assert answer.eligibility_truncated
    assert answer.claims_truncated


@pytest.mark.parametrize("letter", ["a", "\N{GRINNING FACE}"])
def test_an_answer_of_entries_of_the_largest_size_stays_well_under_4_mib(letter: str) -> None:
    # Texts are bounded in characters (500), of up to 4 bytes each: the caps are in bytes too.
    long_id, name = "i" * 64, letter * 500
    provider = pb.Provider(provider_id=long_id, name=name)
    service = pb.ScheduledService(
        service_id=long_id,
        case_id=long_id,
        kind="addiction_counseling",
        provider=provider,
        location=pb.ServiceLocation(kind="provider_site", address=name),
        status="cancelled",
        referral_id=long_id,
        goal_id=long_id,
    )
    service.starts_at.FromDatetime(datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    service.ends_at.CopyFrom(service.starts_at)
    money = pb.Money(amount_minor_units=2**63 - 1, currency="USD")
    answer = pb.GetCaseCoordinationResponse(
        case_id=long_id,
        client_id=long_id,
        needs=[need.value for need in NeedCategory],
        worker_id=long_id,
        worker_role="social_worker",
        services=[service] * 5000,
        referrals=[
            pb.Referral(
                referral_id=long_id,
                provider=provider,
                need_category="domestic_violence",
                service=name,
                urgency="emergency",
                status="withdrawn",
            )
        ]
        * 1000,
        eligibility=[
            pb.EligibilityDecision(
                program_id=long_id,
                program_name=name,
                eligible=True,
                reasons=[name] * 4,
                valid_until="2199-12-31",
            )
        ]
        * 1000,
        claims=[
            pb.Claim(
                claim_id=long_id,
                insurer=provider,
                amount_claimed=money,
                service_ids=[long_id] * 100,
                status="partial",
                amount_approved=money,
            )
        ]
        * 1000,
        version=2**62,
    )

    convert.cut_case_coordination(answer)

    assert answer.ByteSize() < 3 * MiB
    assert (answer.services_total, answer.claims_total) == (5000, 1000)
    if letter == "a":
        # Of plain text, the counts are what bind.
        assert len(answer.services) == convert.CASE_SERVICES.listed == 1000
        assert len(answer.referrals) == len(answer.eligibility) == len(answer.claims) == 100
