"""Days 1 to 9: referrals, the schedule (with the clash caught), funding and monitoring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from cli.present import short
from cli.rpc import eventually, not_known_yet, refused, timestamp
from cli.walk.story import (
    COORDINATOR,
    COUNSELING_CLASH,
    DELIVERIES,
    HOME_CARE_BUDGET,
    PHYSIO,
    PROGRESS,
    PROVIDERS,
    REFERRALS,
    SCHEDULE,
    SENIOR_CENTRE,
    SOCIAL_WORKER,
    Slot,
    provider,
    slot,
)
from cli.walk.walk import Walk
from events.catalog.values import Money, in_major_units


async def referrals(walk: Walk) -> None:
    walk.section("Referrals to partner agencies")
    walk.when(1, "11:30")
    for referral in REFERRALS:
        partner = referral.partner
        await walk.as_(SOCIAL_WORKER).intake.GrantConsent(
            intake_pb2.GrantConsentRequest(
                context=walk.command(f"consent-{referral.need}"),
                case_id=walk.case_id,
                recipient=intake_pb2.ConsentRecipient(
                    kind="agency", recipient_id=partner.user_id, name=PROVIDERS[partner.user_id]
                ),
                purpose="coordination",
                scope=["identity", "referrals", "services"],
                expires_at=timestamp(datetime.now(UTC) + timedelta(days=365)),
                document_reference=f"scan://consents/{walk.case_id}/{partner.user_id}.pdf",
            )
        )
    walk.line(SOCIAL_WORKER, "recorded Marco's signed consents to refer him to each partner")
    walk.when(1, "12:00")
    coordination = walk.as_(SOCIAL_WORKER).coordination
    for referral in REFERRALS:
        request = co.MakeReferralRequest(
            context=walk.command(f"refer-{referral.need}"),
            case_id=walk.case_id,
            provider=provider(referral.partner),
            need_category=referral.need,
            service=referral.service,
            urgency=referral.urgency,
            reason="Discharged from hospital after a hip fracture",
        )
        made = await eventually(
            lambda request=request: coordination.MakeReferral(request),  # type: ignore[misc]
            what="coordination to learn the case",
            patience=walk.patience,
            retry=not_known_yet,
        )
        walk.result.referral_ids[referral.need] = made.referral_id
        walk.line(
            SOCIAL_WORKER, f"referred {referral.need} to {PROVIDERS[referral.partner.user_id]}"
        )
    walk.when(1, "15:00")
    await walk.as_(PHYSIO).coordination.AcceptReferral(
        co.AcceptReferralRequest(
            context=walk.command("accept-physical-therapy"),
            case_id=walk.case_id,
            referral_id=walk.result.referral_ids["physical_therapy"],
            provider_id=PHYSIO.user_id,
            expected_start_date=walk.story.date(3),
            contact_person="Jo Nakamura, PT",
        )
    )
    walk.line(PHYSIO, "accepted the physical-therapy referral")
    walk.when(1, "15:10")
    await walk.as_(SENIOR_CENTRE).coordination.AcceptReferral(
        co.AcceptReferralRequest(
            context=walk.command("accept-socialisation"),
            case_id=walk.case_id,
            referral_id=walk.result.referral_ids["socialisation"],
            provider_id=SENIOR_CENTRE.user_id,
            expected_start_date=walk.story.date(6),
        )
    )
    walk.line(SENIOR_CENTRE, "accepted the socialisation referral")


async def scheduling(walk: Walk) -> None:
    walk.section("Scheduling: counseling must not clash with physical therapy")
    walk.when(1, "16:00")
    for planned in SCHEDULE:
        if planned is COUNSELING_CLASH:
            await _clash(walk, planned)
            continue
        scheduled = await walk.as_(SOCIAL_WORKER).coordination.ScheduleService(
            _request(walk, planned)
        )
        walk.result.service_ids[planned.name] = scheduled.service_id
        walk.line(SOCIAL_WORKER, f"scheduled {_slot_text(walk, planned)}")


async def _clash(walk: Walk, planned: Slot) -> None:
    refusal = await refused(
        walk.as_(SOCIAL_WORKER).coordination.ScheduleService(_request(walk, planned))
    )
    walk.result.schedule_conflict = refusal
    details = refusal.metadata
    starts = details.get("conflicting_starts_at")
    when = walk.show(datetime.fromisoformat(starts)) if starts else "?"
    walk.line(SOCIAL_WORKER, f"schedule {_slot_text(walk, planned)}: REFUSED")
    walk.detail(
        f"{refusal.code.name} {refusal.reason}: Marco is at {details.get('conflicting_kind')} "
        f"(service {short(details.get('conflicting_service_id', '?'))}) at {when}"
    )
    walk.detail("rescheduled: counseling the next morning instead")


def _slot_text(walk: Walk, planned: Slot) -> str:
    starts = walk.show(walk.story.at(planned.day, planned.start))
    return f"{planned.kind:<16} {starts}-{planned.end}  {PROVIDERS[planned.partner.user_id]}"


def _request(walk: Walk, planned: Slot) -> co.ScheduleServiceRequest:
    return co.ScheduleServiceRequest(
        context=walk.command(f"schedule-{planned.name}"),
        case_id=walk.case_id,
        kind=planned.kind,
        provider=provider(planned.partner),
        starts_at=timestamp(walk.story.at(planned.day, planned.start)),
        ends_at=timestamp(walk.story.at(planned.day, planned.end)),
        location=co.ServiceLocation(kind=planned.location),
        referral_id=walk.result.referral_ids.get(planned.kind, ""),
        goal_id=walk.result.goal_ids.get(planned.kind, ""),
    )


async def funding(walk: Walk) -> None:
    walk.section("Funding: agency budget for the home care")
    walk.when(1, "16:30")
    reserved = await walk.as_(COORDINATOR).coordination.ReserveBudget(
        co.ReserveBudgetRequest(
            context=walk.command("reserve-home-care"),
            case_id=walk.case_id,
            budget_line=HOME_CARE_BUDGET,
            amount=co.Money(amount_minor_units=12 * 4_500, currency="USD"),
            service_id=walk.result.service_ids["home-care"],
        )
    )
    walk.result.reservation = reserved
    left = Money(
        amount_minor_units=reserved.available.amount_minor_units,
        currency=reserved.available.currency,
    )
    walk.line(COORDINATOR, f"reserved 540.00 USD (12 visits) on {HOME_CARE_BUDGET}")
    # In its currency's own unit: an agency's line in yen or dinars has no cents.
    walk.detail(f"{in_major_units(left)} left on the line")


async def monitoring(walk: Walk) -> None:
    walk.section("Implementation and monitoring")
    for delivery in DELIVERIES:
        planned = slot(delivery.slot)
        walk.when(delivery.day, delivery.clock)
        await walk.as_(delivery.partner).coordination.RecordServiceDelivered(
            co.RecordServiceDeliveredRequest(
                context=walk.command(f"delivered-{delivery.slot}"),
                case_id=walk.case_id,
                service_id=walk.result.service_ids[delivery.slot],
                starts_at=timestamp(walk.story.at(planned.day, planned.start)),
                ends_at=timestamp(walk.story.at(planned.day, planned.end)),
                note=delivery.note,
            )
        )
        walk.line(delivery.partner, f"delivered {planned.kind}: {delivery.note}")
    walk.when(7, "10:00")
    await walk.as_(SOCIAL_WORKER).planning.LogContact(
        pl.LogContactRequest(
            context=walk.command("home-visit"),
            case_id=walk.case_id,
            kind="home_visit",
            summary="Walks indoors with a cane; the aide helps him bathe; enjoyed the centre",
            next_follow_up_due=walk.story.date(14),
        )
    )
    walk.line(SOCIAL_WORKER, "follow-up home visit logged; next follow-up due on day 14")
    walk.when(8, "09:30")
    await walk.as_(SOCIAL_WORKER).planning.EvaluateProgress(
        pl.EvaluateProgressRequest(
            context=walk.command("evaluate"),
            case_id=walk.case_id,
            goal_progress=[
                pl.GoalProgress(goal_id=walk.result.goal_ids[need], rating=rating)
                for need, rating in PROGRESS
            ],
            helping_factors=["Daily exercises, encouraged by his daughter"],
            hindering_factors=["Two flights of stairs to his flat"],
        )
    )
    walk.line(SOCIAL_WORKER, "progress evaluated")
    walk.detail(", ".join(f"{need} {rating}" for need, rating in PROGRESS))
