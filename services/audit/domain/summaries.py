"""One line per event for "who did what", built only from fields that are not sensitive.

Nothing the catalog marks sensitive appears here: neither free text (notes, goal statements,
reasons about the client) nor sensitive codes (need categories, service kinds). Ids, dates,
amounts, roles and agency names do; the full event is in the timeline for those entitled.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from events.catalog import (
    access,
    assessment,
    assignment,
    cases,
    clients,
    eligibility,
    emergency,
    erasure,
    funding,
    monitoring,
    planning,
    referrals,
    scheduling,
)
from events.catalog.base import CaseEvent
from events.catalog.values import Money


def summary(event: CaseEvent) -> str:
    for describe in (
        _client,
        _case_cycle,
        _plan,
        _referral_or_service,
        _money_and_follow_up,
        _access,
    ):
        text = describe(event)
        if text is not None:
            return text
    return _generic(event)


def _client(event: CaseEvent) -> str | None:
    """The client's own events, shown in each of their cases' timelines."""
    match event:
        case clients.ClientRegistered():
            return f"registered client {event.client_id}"
        case clients.ClientDateOfBirthCorrected():
            # The date and the reason are personal: the event in full holds them.
            return f"corrected the date of birth of client {event.client_id}"
        case erasure.RetentionHoldPlaced():
            until = "" if event.until is None else f" until {event.until.isoformat()}"
            return f"placed retention hold {event.hold_id} on client {event.client_id}{until}"
        case erasure.RetentionHoldReleased():
            return f"released retention hold {event.hold_id} on client {event.client_id}"
        case erasure.ClientErased():
            cases_known = len(event.case_ids)
            return f"erased client {event.client_id}'s personal data ({cases_known} case(s))"
    return None


def _case_cycle(event: CaseEvent) -> str | None:
    match event:
        case cases.CaseOpened():
            source = event.referral_source.kind.value
            return (
                f"opened the case for client {event.client_id} (from {source}) with "
                f"{len(event.presenting_needs)} presenting need(s)"
            )
        case assessment.InitialAssessmentRecorded():
            return (
                f"recorded initial assessment {event.assessment_id}: {len(event.needs)} need(s), "
                f"{len(event.risks)} risk(s), {len(event.strengths)} strength(s)"
            )
        case assignment.CaseAssigned():
            return f"assigned the case to {event.worker_id} ({event.worker_role.value})"
        case assignment.CaseReassigned():
            return (
                f"reassigned the case from {event.previous_worker_id} to {event.worker_id} "
                f"({event.worker_role.value})"
            )
        case cases.DischargePlanned():
            maintenance = ", long-term maintenance" if event.long_term_maintenance else ""
            return f"planned discharge for {event.target_date.isoformat()}{maintenance}"
        case cases.CaseClosed():
            return f"closed the case ({event.reason.value})"
        case cases.CaseReopened():
            return "reopened the case"
    return None


def _plan(event: CaseEvent) -> str | None:
    match event:
        case planning.PlanDrafted():
            return f"drafted plan {event.plan_id} with {len(event.goals)} goal(s)"
        case planning.GoalAdded():
            goal = event.goal
            return f"added {goal.term.value}-term goal {goal.goal_id} to plan {event.plan_id}"
        case planning.GoalRevised():
            return f"revised goal {event.goal.goal_id} of plan {event.plan_id}"
        case planning.GoalAchieved():
            return f"marked goal {event.goal_id} of plan {event.plan_id} achieved"
        case planning.GoalDropped():
            return f"dropped goal {event.goal_id} from plan {event.plan_id}"
        case planning.PlanAgreed():
            signed = "signed" if event.signed_by_client else "not signed"
            # The event numbers the agreement; the version agreed counts the plan's changes
            # (``case_state``), which one event does not tell.
            return (
                f"recorded the client's agreement no. {event.plan_version} to plan "
                f"{event.plan_id} ({signed}); goals: {', '.join(event.goal_ids)}"
            )
    return None


def _referral_or_service(event: CaseEvent) -> str | None:
    match event:
        case referrals.ReferralMade():
            return (
                f"referred the client to {event.provider.name} ({event.urgency.value}), "
                f"referral {event.referral_id}"
            )
        case referrals.ReferralAccepted():
            return f"recorded that {event.provider_id} accepted referral {event.referral_id}"
        case referrals.ReferralDeclined():
            return f"recorded that {event.provider_id} declined referral {event.referral_id}"
        case referrals.ReferralCompleted():
            return f"recorded that {event.provider_id} completed referral {event.referral_id}"
        case referrals.ReferralWithdrawn():
            return f"withdrew referral {event.referral_id} to {event.provider_id}"
        case scheduling.ServiceScheduled():
            return (
                f"scheduled service {event.service_id} with {event.provider.name}, "
                f"{event.starts_at.isoformat()} to {event.ends_at.isoformat()}"
            )
        case scheduling.ServiceRescheduled():
            return (
                f"rescheduled service {event.service_id} to {event.starts_at.isoformat()} "
                f"to {event.ends_at.isoformat()}"
            )
        case scheduling.ServiceCancelled():
            return f"cancelled service {event.service_id} (by {event.cancelled_by.value})"
        case scheduling.ServiceDelivered():
            return f"recorded delivery of service {event.service_id}"
    return None


def _money_and_follow_up(event: CaseEvent) -> str | None:
    match event:
        case eligibility.EligibilityDetermined():
            verdict = "eligible" if event.eligible else "not eligible"
            return f"determined the client {verdict} for {event.program_name}"
        case funding.BudgetReserved():
            return (
                f"reserved {_money(event.amount)} on {event.budget_line} "
                f"(reservation {event.reservation_id})"
            )
        case funding.BudgetReleased():
            return (
                f"released {_money(event.amount)} on {event.budget_line} "
                f"(reservation {event.reservation_id})"
            )
        case funding.InsuranceClaimFiled():
            return (
                f"filed claim {event.claim_id} with {event.insurer.name} for "
                f"{_money(event.amount_claimed)}"
            )
        case funding.InsuranceClaimDecided():
            return (
                f"recorded that {event.insurer_id} {event.decision.value} claim {event.claim_id} "
                f"({_money(event.amount_approved)})"
            )
        case monitoring.ContactLogged():
            return f"logged {event.kind.value} contact {event.contact_id}"
        case monitoring.ProgressEvaluated():
            adjust = "plan adjustment needed" if event.plan_adjustment_needed else "plan holds"
            return (
                f"evaluated progress on {len(event.goal_progress)} goal(s) of plan "
                f"{event.plan_id}: {adjust}"
            )
    return None


def consents_named(consent_ids: tuple[str, ...]) -> str:
    """``consent a`` or ``consents a, b``: every consent a read rested on, as audit tells it."""
    plural = "s" if len(consent_ids) > 1 else ""
    return f"consent{plural} {', '.join(consent_ids)}"


def _access(event: CaseEvent) -> str | None:
    match event:
        case access.RecordAccessed():
            return f"viewed {_names(event.sections)} for {event.purpose.value}" + (
                f" under {consents_named(event.consent_ids)}" if event.consent_ids else ""
            )
        case access.ConsentGranted():
            return (
                f"recorded consent {event.consent_id} to disclose {_names(event.scope)} "
                f"to {event.recipient.name} for {event.purpose.value}"
            )
        case access.RecordAccessDenied():
            return f"was refused {event.action} for {event.purpose.value} ({event.rule})"
        case access.ConsentRevoked():
            return f"recorded that the client revoked consent {event.consent_id}"
        case emergency.EmergencyAccessOpened():
            return (
                f"broke the glass: emergency access {event.emergency_access_id} until"
                f" {event.expires_at.isoformat()}"
            )
        case emergency.EmergencyAccessReviewed():
            return f"reviewed emergency access {event.emergency_access_id}: {event.outcome.value}"
        case emergency.EmergencyAccessClosed():
            return (
                f"closed emergency access {event.emergency_access_id} at"
                f" {event.closed_at.isoformat()}"
            )
    return None


def _generic(event: CaseEvent) -> str:
    first_line = (type(event).__doc__ or event.event_type).strip().splitlines()[0]
    return first_line.rstrip(".")


def _names(values: Iterable[StrEnum]) -> str:
    return ", ".join(value.value for value in values)


def _money(money: Money) -> str:
    return f"{money.amount_minor_units} {money.currency} minor units"
