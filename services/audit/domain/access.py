"""Which parts of the record an audit query discloses.

Who may query the trail is the access policy's decision (``casetrail_platform.policy``: auditors for
a confidentiality review, supervisors of the case's team for supervision); every disclosure is
itself recorded (``casetrail.record.accessed``), so a review sees who saw what, including other
reviewers.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

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
    ledger,
    monitoring,
    planning,
    referrals,
    scheduling,
)
from events.catalog.access import RecordSection
from events.catalog.base import CaseEvent
from services.audit.domain.history import ACCESS_TYPES, TimelineQuery

STATE_SECTIONS = (
    RecordSection.IDENTITY,
    RecordSection.ASSESSMENT,
    RecordSection.ASSIGNMENT,
    RecordSection.PLAN,
    RecordSection.REFERRALS,
    RecordSection.SERVICES,
    RecordSection.CONSENTS,
    RecordSection.DISCHARGE,
)
"""What a case state shows: client id, needs, worker, plan, referrals, services, consents,
closure."""


def sections_disclosed(events: Iterable[CaseEvent]) -> tuple[RecordSection, ...]:
    """The record sections that showing ``events`` in full discloses, in catalog order."""
    return _sections_of(event.event_type for event in events)


def sections_asked(query: TimelineQuery) -> tuple[RecordSection, ...]:
    """The record sections a view of ``query`` is about, in catalog order: those of the event
    types it names, or of every type it may show when it names none (all but the access
    records when it leaves them out). A page is recorded by what it shows
    (``sections_disclosed``); one that shows nothing still tells of these sections: that the
    case holds no event of them in the view's range, or none by its actor."""
    by_type = sections_by_type()
    left_out = ACCESS_TYPES if query.without_accesses else frozenset()
    return _sections_of(query.event_types or by_type.keys() - left_out)


def _sections_of(event_types: Iterable[str]) -> tuple[RecordSection, ...]:
    by_type = sections_by_type()
    everything = tuple(RecordSection)
    # A type missing from the map would be a catalog addition nobody classified yet: claim
    # every section rather than under-report what someone saw.
    seen = {
        section for event_type in event_types for section in by_type.get(event_type, everything)
    }
    return tuple(section for section in RecordSection if section in seen)


@cache
def sections_by_type() -> dict[str, tuple[RecordSection, ...]]:
    """The record section(s) each event type belongs to; every catalog type is listed."""
    groups: list[tuple[tuple[RecordSection, ...], tuple[type[CaseEvent], ...]]] = [
        (
            (RecordSection.IDENTITY,),
            (clients.ClientRegistered, clients.ClientDateOfBirthCorrected),
        ),
        ((RecordSection.IDENTITY, RecordSection.ASSESSMENT), (cases.CaseOpened,)),
        ((RecordSection.ASSESSMENT,), (assessment.InitialAssessmentRecorded,)),
        (
            (RecordSection.ASSIGNMENT,),
            (assignment.CaseAssigned, assignment.CaseReassigned),
        ),
        ((RecordSection.PLAN,), planning.PLAN_CHANGES),
        (
            (RecordSection.REFERRALS,),
            (
                referrals.ReferralMade,
                referrals.ReferralAccepted,
                referrals.ReferralDeclined,
                referrals.ReferralCompleted,
                referrals.ReferralWithdrawn,
            ),
        ),
        (
            (RecordSection.SERVICES,),
            (
                scheduling.ServiceScheduled,
                scheduling.ServiceRescheduled,
                scheduling.ServiceCancelled,
                scheduling.ServiceDelivered,
            ),
        ),
        ((RecordSection.ELIGIBILITY,), (eligibility.EligibilityDetermined,)),
        (
            (RecordSection.FUNDING,),
            (
                funding.BudgetReserved,
                funding.BudgetReleased,
                funding.InsuranceClaimFiled,
                funding.InsuranceClaimDecided,
            ),
        ),
        ((RecordSection.CONTACTS,), (monitoring.ContactLogged,)),
        ((RecordSection.PROGRESS,), (monitoring.ProgressEvaluated,)),
        (
            (RecordSection.DISCHARGE,),
            (cases.DischargePlanned, cases.CaseClosed, cases.CaseReopened),
        ),
        ((RecordSection.CONSENTS,), (access.ConsentGranted, access.ConsentRevoked)),
        (
            (RecordSection.ACCESS_LOG,),
            (
                access.RecordAccessed,
                access.RecordAccessDenied,
                emergency.EmergencyAccessOpened,
                emergency.EmergencyAccessReviewed,
                emergency.EmergencyAccessClosed,
            ),
        ),
        # The client's identity record: who may erase it and what forbids it.
        (
            (RecordSection.IDENTITY,),
            (erasure.RetentionHoldPlaced, erasure.RetentionHoldReleased, erasure.ClientErased),
        ),
        # About a service's log, not a case: part of no case record.
        ((), (ledger.LedgerInconsistencyDetected,)),
    ]
    return {model.event_type: sections for sections, models in groups for model in models}


def sensitive_fields_shown(events: Iterable[CaseEvent]) -> list[str]:
    """``<event type>.<field>`` of each sensitive field holding a value in ``events``."""
    return sorted(
        {
            f"{event.event_type}.{name}"
            for event in events
            for name in _sensitive_names(type(event))
            if getattr(event, name)
        }
    )


@cache
def _sensitive_names(model: type[CaseEvent]) -> frozenset[str]:
    return model.sensitive_fields()
