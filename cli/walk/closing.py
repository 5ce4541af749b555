"""Days 9 to 14: the referrals completed, discharge, closure (refused while a session is still
booked; with every goal achieved), then the case view and the audit trail."""

from __future__ import annotations

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.planning.v1 import planning_pb2 as pl
from cli.present import activity_lines, case_view_lines, short, shown
from cli.rpc import Person, Stubs, eventually, query, refused
from cli.walk.story import (
    ACHIEVEMENTS,
    AUDITOR,
    DELIVERIES,
    PHYSIO,
    SENIOR_CENTRE,
    SOCIAL_WORKER,
)
from cli.walk.walk import Walk


async def closure(walk: Walk) -> None:
    walk.section("Discharge and closure")
    walk.when(9, "16:05")
    await _complete_referral(
        walk, SENIOR_CENTRE, "socialisation", "A member now: comes to the weekly lunch on his own"
    )
    walk.when(9, "17:00")
    await walk.as_(SOCIAL_WORKER).planning.PlanDischarge(
        pl.PlanDischargeRequest(
            context=walk.command("plan-discharge"),
            case_id=walk.case_id,
            target_date=walk.story.date(14),
            criteria=["Washes and dresses with the aide's help only", "Goes out with a cane"],
            aftercare=["Home care under the waiver", "Weekly lunch at the senior centre"],
        )
    )
    walk.line(SOCIAL_WORKER, "discharge planned for day 14")
    second_session = walk.result.service_ids["physical-therapy-2"]
    expected = {walk.result.service_ids[delivery.slot]: "delivered" for delivery in DELIVERIES}
    expected[second_session] = "scheduled"
    await walk.view(
        lambda view: expected.items() <= {(s.service_id, s.status) for s in view.services},
        "planning to learn the deliveries",
    )
    walk.when(14, "09:00")
    refusal = await refused(
        walk.as_(SOCIAL_WORKER).planning.CloseCase(
            pl.CloseCaseRequest(
                context=walk.command("close-too-early"),
                case_id=walk.case_id,
                reason="goals_achieved",
            )
        )
    )
    walk.result.closure_refusal = refusal
    walk.line(SOCIAL_WORKER, f"close the case: REFUSED {refusal.code.name} {refusal.reason}")
    booked = refusal.metadata.get("service_ids", "")
    walk.detail(f"still scheduled: service {', '.join(short(s) for s in booked.split(','))}")
    walk.when(14, "09:20")
    await walk.as_(PHYSIO).coordination.CancelService(
        co.CancelServiceRequest(
            context=walk.command("cancel-physical-therapy-2"),
            case_id=walk.case_id,
            service_id=second_session,
            cancelled_by="provider",
            reason="Discharged from therapy: goals met, exercises continue at home",
        )
    )
    walk.line(PHYSIO, "called off the last physical-therapy session: goals met")
    # Completed once its last session is called off: a completion calls off the sessions still
    # to come itself, and this one, on day 15, may be still to come as the walk runs.
    walk.when(14, "09:22")
    await _complete_referral(
        walk,
        PHYSIO,
        "physical_therapy",
        "Walks 400 m with a cane; home exercise programme in place",
    )
    await walk.view(
        lambda view: (
            all(s.status != "scheduled" for s in view.services)
            and all(r.status == "completed" for r in view.referrals)
        ),
        "planning to learn of the cancellation and the completion",
    )
    walk.when(14, "09:25")
    # Closing with reason goals_achieved needs every goal of the agreed plan achieved.
    for need, evidence in ACHIEVEMENTS:
        await walk.as_(SOCIAL_WORKER).planning.AchieveGoal(
            pl.AchieveGoalRequest(
                context=walk.command(f"achieved-{need}"),
                case_id=walk.case_id,
                goal_id=walk.result.goal_ids[need],
                evidence=evidence,
            )
        )
    walk.line(SOCIAL_WORKER, f"recorded the {len(ACHIEVEMENTS)} goals achieved, with Marco")
    walk.when(14, "09:30")
    await walk.as_(SOCIAL_WORKER).planning.CloseCase(
        pl.CloseCaseRequest(
            context=walk.command("close"),
            case_id=walk.case_id,
            reason="goals_achieved",
            note="Marco manages at home with home care and the senior centre",
        )
    )
    walk.line(SOCIAL_WORKER, "closed the case: goals achieved")


async def review(walk: Walk) -> None:
    walk.section("The case view (planning)")
    view = await walk.view(lambda view: view.status == "closed", "planning to show the closure")
    walk.result.case_view = view
    for text in case_view_lines(view, walk.show):
        walk.say(text)
    walk.section("Who did what (audit)")
    request = audit_pb2.WhoDidWhatRequest(
        context=query("confidentiality_review"), case_id=walk.case_id
    )
    answer = await eventually(
        lambda: walk.as_(AUDITOR).audit.WhoDidWhat(request),
        lambda found: any(a.event_type == "casetrail.case.closed" for a in found.activities),
        what="audit to record the closure",
        patience=walk.patience,
    )
    walk.result.activities = list(answer.activities)
    for text in activity_lines(answer.activities, walk.show):
        walk.say(text)
    walk.result.timeline = await timeline(walk.as_(AUDITOR), walk.case_id)
    sources = sorted({entry.source for entry in walk.result.timeline})
    walk.say(
        f"\n{len(walk.result.timeline)} events in audit's timeline,"
        f" from {shown(', '.join(sources))}"
    )


async def timeline(stubs: Stubs, case_id: str) -> list[audit_pb2.TimelineEntry]:
    """Every entry of the case's timeline (occurred-at order), all pages; ``stubs`` call as
    an auditor."""
    entries: list[audit_pb2.TimelineEntry] = []
    token = ""
    while True:
        page = await stubs.audit.GetTimeline(
            audit_pb2.GetTimelineRequest(
                context=query("confidentiality_review"),
                case_id=case_id,
                page_size=1000,
                page_token=token,
            )
        )
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            return entries


async def _complete_referral(walk: Walk, partner: Person, need: str, outcome: str) -> None:
    """The partner completes the referral of ``need`` (its key in the walk's referrals)."""
    slug = need.replace("_", "-")
    await walk.as_(partner).coordination.CompleteReferral(
        co.CompleteReferralRequest(
            context=walk.command(f"complete-{slug}"),
            case_id=walk.case_id,
            referral_id=walk.result.referral_ids[need],
            provider_id=partner.user_id,
            outcome=outcome,
        )
    )
    walk.line(partner, f"completed the {slug} referral")
