"""The example from the sources: an elderly client leaving hospital needs home care, counseling
to adjust to his altered physical state, transport to appointments and physical therapy. The
coordinator assigns a licensed social worker, checks the state programme he qualifies for,
schedules his services so that counseling is never at the same time as physical therapy, and
funds them within the agency's budget lines."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.ages import age_on
from events.catalog.values import NeedCategory
from services.coordination.domain.eligibility import RECORDED_AGE
from tests.unit.coordination.rpc import (
    COUNSELING_CENTRE,
    HOME,
    HOME_CARE_CO,
    PARATRANSIT,
    PT_CLINIC,
    assign,
    recorded_reasons,
    refer,
    refused,
    schedule_request,
    usd,
)
from tests.unit.coordination.support import (
    IntakeFeed,
    command_context,
    query_context,
    timestamp,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

TUESDAY = datetime(2026, 3, 3, tzinfo=UTC)


AMARA = "sw-lcsw"
"""The licensed social worker Walter's case is assigned to: she does the case's work."""


async def test_the_elderly_client_leaving_hospital(stub: Stub, intake: IntakeFeed) -> None:
    await intake.register_client("walter", date(1947, 11, 2))
    await intake.open_case(
        "walter-1",
        "walter",
        [NeedCategory.HOME_CARE, NeedCategory.PHYSICAL_THERAPY],
        assessed=[NeedCategory.COUNSELING, NeedCategory.TRANSPORTATION],
    )

    # A case manager may not counsel: the answer proposes the referral instead.
    refusal = await refused(assign(stub, "walter-1", "cm-dana"))
    assert refusal.rule == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert "counselor" in refusal.metadata["suggested_referrals"]
    assigned = await assign(stub, "walter-1", "sw-lcsw")
    assert set(assigned.matched_needs) == {
        "home_care",
        "physical_therapy",
        "counseling",
        "transportation",
    }

    waiver = await stub.DetermineEligibility(
        pb.DetermineEligibilityRequest(
            context=command_context("social_worker", user=AMARA),
            case_id="walter-1",
            program_id="home-care-medicaid-waiver",
            facts=pb.EligibilityFacts(monthly_income=usd(162_000), residence="us-ca-alameda"),
        )
    )
    assert waiver.eligible
    age = age_on(date(1947, 11, 2), datetime.now(UTC).date())  # on the server's date
    # The age is the record's: the answer says it meets the rule, the decision recorded holds it.
    assert waiver.reasons[0] == f"{RECORDED_AGE} is at least the minimum of 65"
    assert (await recorded_reasons(stub, "walter-1"))[0][0] == (
        f"age {age} is at least the minimum of 65"
    )

    await intake.consent("walter-1", "walter")
    counseling_referral = await refer(stub, "walter-1", "counseling", COUNSELING_CENTRE)
    await stub.AcceptReferral(
        pb.AcceptReferralRequest(
            context=command_context("partner_agency", agency=COUNSELING_CENTRE.provider_id),
            case_id="walter-1",
            referral_id=counseling_referral.referral_id,
            provider_id=COUNSELING_CENTRE.provider_id,
        )
    )

    def at(hour: int, minute: int = 0) -> datetime:
        return TUESDAY + timedelta(hours=hour, minutes=minute)

    care = await stub.ScheduleService(
        schedule_request(
            "walter-1",
            "home_care",
            at(8),
            hours=1.5,
            provider=HOME_CARE_CO,
            location=HOME,
            role="social_worker",
            user=AMARA,
        )
    )
    ride = await stub.ScheduleService(
        schedule_request(
            "walter-1",
            "transportation",
            at(9, 30),
            hours=0.5,
            provider=PARATRANSIT,
            role="social_worker",
            user=AMARA,
        )
    )
    therapy = await stub.ScheduleService(
        schedule_request(
            "walter-1",
            "physical_therapy",
            at(10),
            provider=PT_CLINIC,
            role="social_worker",
            user=AMARA,
        )
    )

    # Counseling at the same time as physical therapy is refused, naming the appointment.
    clash = await refused(
        stub.ScheduleService(
            schedule_request(
                "walter-1",
                "counseling",
                at(10, 30),
                provider=COUNSELING_CENTRE,
                referral_id=counseling_referral.referral_id,
                role="social_worker",
                user=AMARA,
            )
        )
    )
    assert clash.rule == "SCHEDULE_CONFLICT"
    assert clash.metadata["conflicting_service_id"] == therapy.service_id
    assert clash.metadata["conflicting_kind"] == "physical_therapy"
    assert clash.metadata["conflicting_starts_at"] == "2026-03-03T10:00:00+00:00"

    counseling = await stub.ScheduleService(
        schedule_request(
            "walter-1",
            "counseling",
            at(14),
            provider=COUNSELING_CENTRE,
            referral_id=counseling_referral.referral_id,
            role="social_worker",
            user=AMARA,
        )
    )

    def reserve(line: str, service_id: str, cents: int) -> pb.ReserveBudgetRequest:
        return pb.ReserveBudgetRequest(
            context=command_context("coordinator"),
            case_id="walter-1",
            budget_line=line,
            amount=usd(cents),
            service_id=service_id,
        )

    await stub.ReserveBudget(reserve("home-care-fy2026", care.service_id, 9_000))
    funded = await stub.ReserveBudget(reserve("flex", ride.service_id, 3_500))
    assert funded.available == usd(46_500)
    over = await refused(stub.ReserveBudget(reserve("home-care-fy2026", care.service_id, 95_000)))
    assert (over.rule, over.metadata["available"]) == ("BUDGET_EXCEEDED", "91000")

    # Claimed once it took place (only delivered services can be).
    await stub.RecordServiceDelivered(
        pb.RecordServiceDeliveredRequest(
            context=command_context("partner_agency", agency=PT_CLINIC.provider_id),
            case_id="walter-1",
            service_id=therapy.service_id,
            starts_at=timestamp(at(10)),
            ends_at=timestamp(at(11)),
        )
    )
    await stub.FileInsuranceClaim(
        pb.FileInsuranceClaimRequest(
            context=command_context("coordinator"),
            case_id="walter-1",
            insurer=pb.Provider(provider_id="medicare", name="Medicare"),
            amount_claimed=usd(15_000),
            service_ids=[therapy.service_id],
        )
    )

    day = await stub.GetClientSchedule(
        pb.GetClientScheduleRequest(context=query_context("coordinator"), client_id="walter")
    )
    # Physical therapy took place (delivered, then claimed): no longer upcoming.
    assert [s.kind for s in day.services] == ["home_care", "transportation", "counseling"]
    assert counseling.service_id == day.services[-1].service_id
    view = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(
            context=query_context("auditor", "confidentiality_review"), case_id="walter-1"
        )
    )
    assert (view.worker_id, len(view.services), len(view.claims)) == ("sw-lcsw", 4, 1)
    assert [r.status for r in view.referrals] == ["accepted"]
