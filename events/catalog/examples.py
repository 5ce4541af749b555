"""One fictional, complete example of every catalog event (current and superseded versions).

They are published in the JSON Schemas (``examples``) for subscribers, and the tests use them to
prove every type round-trips. All people, places and numbers are invented.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from events.catalog.access import (
    AccessPurpose,
    ConsentGranted,
    ConsentRecipient,
    ConsentRevoked,
    DisclosureBasis,
    RecipientKind,
    RecordAccessDenied,
    RecordAccessed,
    RecordSection,
    SensitiveCategory,
)
from events.catalog.assessment import (
    AssessedNeed,
    AssessmentFactors,
    InitialAssessmentRecorded,
    Risk,
    RiskSeverity,
)
from events.catalog.assignment import (
    CaseAssigned,
    CaseReassigned,
    CredentialKind,
    WorkerCredential,
)
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import (
    CaseClosed,
    CaseOpened,
    CaseReopened,
    DischargePlanned,
    DischargeReason,
    PresentingNeed,
    ReferralSource,
    ReferralSourceKind,
)
from events.catalog.clients import (
    ClientDateOfBirthCorrected,
    ClientRegistered,
    ContactDetails,
    PersonalIdentifier,
    PersonName,
)
from events.catalog.eligibility import EligibilityDetermined, EligibilityFacts
from events.catalog.emergency import (
    EmergencyAccessClosed,
    EmergencyAccessOpened,
    EmergencyAccessOutcome,
    EmergencyAccessReviewed,
)
from events.catalog.erasure import ClientErased, RetentionHoldPlaced, RetentionHoldReleased
from events.catalog.funding import (
    BudgetReleased,
    BudgetReserved,
    ClaimDecision,
    InsuranceClaimDecided,
    InsuranceClaimFiled,
)
from events.catalog.ledger import LedgerInconsistencyDetected
from events.catalog.legacy import (
    CaseAssignedV1,
    CaseOpenedV1,
    CaseOpenedV2,
    CaseReassignedV1,
    ClientRegisteredV1,
    ConsentGrantedV1,
    ConsentGrantedV2,
    ConsentGrantedV3,
    ConsentRevokedV1,
    DischargePlannedV1,
    EligibilityDeterminedV1,
    GoalAddedV1,
    GoalDroppedV1,
    GoalRevisedV1,
    InitialAssessmentRecordedV1,
    InsuranceClaimDecidedV1,
    InsuranceClaimFiledV1,
    PlanDraftedV1,
    RecordAccessDeniedV1,
    RecordAccessedV1,
    RecordAccessedV2,
    RecordAccessedV3,
    ReferralAcceptedV1,
    ReferralDeclinedV1,
    ReferralMadeV1,
    RetentionHoldPlacedV1,
    RetentionHoldReleasedV1,
    ServiceCancelledV1,
    ServiceRescheduledV1,
    ServiceScheduledV1,
)
from events.catalog.monitoring import (
    ContactKind,
    ContactLogged,
    GoalProgress,
    ProgressEvaluated,
    ProgressRating,
)
from events.catalog.planning import (
    Goal,
    GoalAchieved,
    GoalAdded,
    GoalDropped,
    GoalRevised,
    GoalTerm,
    PlanAgreed,
    PlanDrafted,
    PlanTask,
    TaskOwner,
    TaskOwnerKind,
)
from events.catalog.referrals import (
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralMade,
    ReferralWithdrawn,
)
from events.catalog.scheduling import (
    CancelledBy,
    LocationKind,
    ServiceCancelled,
    ServiceDelivered,
    ServiceKind,
    ServiceLocation,
    ServiceRescheduled,
    ServiceScheduled,
)
from events.catalog.values import Money, NeedCategory, Provider, Urgency

CASE = "case-2024-0042"
CLIENT = "client-7f3a"
PLAN = "plan-1"
CET = timezone(timedelta(hours=1))


def _goal(goal_id: str = "goal-mobility", statement: str | None = None) -> Goal:
    return Goal(
        goal_id=goal_id,
        statement=statement or "Walk to the corner shop unaided within three months",
        term=GoalTerm.SHORT,
        need_category=NeedCategory.PHYSICAL_THERAPY,
        objectives=("Physical therapy twice a week", "Walks 200 m with a cane by week 6"),
        tasks=(
            PlanTask(
                task_id="task-transport",
                description="Book transport to the Tuesday and Friday therapy sessions",
                owner=TaskOwner(kind=TaskOwnerKind.WORKER, owner_id="worker-ana"),
                target_date=date(2024, 3, 8),
            ),
        ),
    )


def example_events() -> tuple[CaseEvent, ...]:
    """One example per current event type, in case-cycle order."""
    physio = Provider(provider_id="prov-physio-north", name="North Physiotherapy Practice")
    return (
        ClientRegistered(
            client_id=CLIENT,
            name=PersonName(given_names="Marco", family_name="Bellini", preferred_name="Nonno"),
            date_of_birth=date(1941, 6, 2),
            identifiers=(
                PersonalIdentifier(scheme="national_id", value="BLLMRC41H02F205X"),
                PersonalIdentifier(scheme="mrn:st-mary-hospital", value="SMH-0099812"),
            ),
            contact=ContactDetails(phone="+39 02 555 0199", postal_address="Via Roma 12, Milano"),
            preferred_language="it",
        ),
        ClientDateOfBirthCorrected(
            client_id=CLIENT,
            date_of_birth=date(1941, 6, 12),
            reason="Identity card seen at the first home visit: intake typed the 2nd for the 12th",
        ),
        CaseOpened(
            case_id=CASE,
            client_id=CLIENT,
            referral_source=ReferralSource(
                kind=ReferralSourceKind.HOSPITAL, name="St Mary Hospital discharge team"
            ),
            presenting_needs=(
                PresentingNeed(
                    category=NeedCategory.HOME_CARE,
                    description="Leaving hospital after a hip fracture, lives alone",
                ),
                PresentingNeed(category=NeedCategory.TRANSPORTATION),
            ),
        ),
        InitialAssessmentRecorded(
            case_id=CASE,
            assessment_id="assess-1",
            factors=AssessmentFactors(
                psychosocial="Widowed last year, withdrawn since",
                biological="Hip replacement, uses a walker",
                psychological="Low mood, fears falling again",
                cultural="Practising Catholic, parish is his main social link",
                social="Daughter lives 300 km away, calls weekly",
                economic="State pension only, no savings",
            ),
            strengths=("Motivated to stay at home", "Good relationship with his daughter"),
            resources=("State pension", "Ground-floor flat"),
            risks=(Risk(description="Fall risk at home", severity=RiskSeverity.HIGH),),
            needs=(
                AssessedNeed(category=NeedCategory.HOME_CARE, urgency=Urgency.IMMEDIATE),
                AssessedNeed(
                    category=NeedCategory.COUNSELING,
                    urgency=Urgency.SOON,
                    description="Adjusting to his altered physical state",
                ),
                AssessedNeed(category=NeedCategory.SOCIALISATION, urgency=Urgency.ROUTINE),
            ),
        ),
        CaseAssigned(
            case_id=CASE,
            worker_id="worker-ana",
            worker_role=Role.SOCIAL_WORKER,
            credentials=(
                WorkerCredential(kind=CredentialKind.DEGREE, name="MSW"),
                WorkerCredential(
                    kind=CredentialKind.LICENCE,
                    name="LMSW",
                    issued_by="State Board of Social Work",
                    valid_until=date(2026, 12, 31),
                ),
            ),
            matched_needs=(NeedCategory.COUNSELING, NeedCategory.HOME_CARE),
            reason="Licensed to counsel; experienced with older clients leaving hospital",
            worker_team="team-east",
        ),
        CaseReassigned(
            case_id=CASE,
            previous_worker_id="worker-ana",
            worker_id="worker-luca",
            worker_role=Role.CASE_MANAGER,
            credentials=(WorkerCredential(kind=CredentialKind.CERTIFICATION, name="C-ASWCM"),),
            reason="Counseling handed to a partner agency; remaining work is coordination",
            worker_team="team-west",
        ),
        PlanDrafted(case_id=CASE, plan_id=PLAN, goals=(_goal(),)),
        GoalAdded(
            case_id=CASE,
            plan_id=PLAN,
            goal=Goal(
                goal_id="goal-social",
                statement="Go back to the Thursday parish group",
                term=GoalTerm.LONG,
                need_category=NeedCategory.SOCIALISATION,
                tasks=(
                    PlanTask(
                        task_id="task-group-lift",
                        description="Ask the parish for a lift while he cannot take the bus",
                        owner=TaskOwner(kind=TaskOwnerKind.FAMILY),
                        target_date=date(2024, 3, 14),
                    ),
                ),
            ),
        ),
        GoalRevised(
            case_id=CASE,
            plan_id=PLAN,
            goal=_goal(statement="Walk to the corner shop unaided within four months"),
            reason="Recovery slower than expected after a cold",
        ),
        GoalAchieved(
            case_id=CASE,
            plan_id=PLAN,
            goal_id="goal-mobility",
            evidence="Walked to the shop and back with the therapist watching",
        ),
        GoalDropped(
            case_id=CASE,
            plan_id=PLAN,
            goal_id="goal-social",
            reason="Client prefers the neighbourhood seniors' club, new goal added",
        ),
        PlanAgreed(
            case_id=CASE,
            plan_id=PLAN,
            plan_version=1,
            goal_ids=("goal-mobility", "goal-social"),
            client_statement="I want to manage at home, not go to a care home",
            signed_by_client=True,
        ),
        ReferralMade(
            case_id=CASE,
            referral_id="ref-counsel",
            provider=Provider(provider_id="agency-harbour", name="Harbour Counseling Centre"),
            need_category=NeedCategory.COUNSELING,
            service="Grief and adjustment counseling",
            urgency=Urgency.SOON,
            reason="Low mood since bereavement and the fall",
            disclosure_basis=DisclosureBasis.CONSENT,
            consent_id="consent-4",
        ),
        ReferralAccepted(
            case_id=CASE,
            referral_id="ref-counsel",
            provider_id="agency-harbour",
            expected_start_date=date(2024, 3, 4),
            contact_person="Dr. Ines Ruiz",
        ),
        ReferralDeclined(
            case_id=CASE,
            referral_id="ref-meals",
            provider_id="agency-meals-on-wheels",
            reason="Address outside the delivery area",
        ),
        ReferralCompleted(
            case_id=CASE,
            referral_id="ref-counsel",
            provider_id="agency-harbour",
            outcome="Ten sessions; mood improved, client attends a bereavement group",
        ),
        ReferralWithdrawn(
            case_id=CASE,
            referral_id="ref-transport",
            provider_id="agency-dial-a-ride",
            reason="Client's daughter now drives him to his appointments",
        ),
        ServiceScheduled(
            case_id=CASE,
            service_id="svc-physio-1",
            kind=ServiceKind.PHYSICAL_THERAPY,
            provider=physio,
            starts_at=datetime(2024, 3, 5, 10, 0, tzinfo=CET),
            ends_at=datetime(2024, 3, 5, 11, 0, tzinfo=CET),
            location=ServiceLocation(kind=LocationKind.CLIENT_HOME),
            goal_id="goal-mobility",
        ),
        ServiceRescheduled(
            case_id=CASE,
            service_id="svc-physio-1",
            starts_at=datetime(2024, 3, 5, 14, 0, tzinfo=CET),
            ends_at=datetime(2024, 3, 5, 15, 0, tzinfo=CET),
            location=ServiceLocation(
                kind=LocationKind.PROVIDER_SITE, address="Via Dante 3, Milano"
            ),
            reason="Counseling moved to the morning slot",
        ),
        ServiceCancelled(
            case_id=CASE,
            service_id="svc-transport-9",
            cancelled_by=CancelledBy.CLIENT,
            reason="Daughter drives him this week",
        ),
        ServiceDelivered(
            case_id=CASE,
            service_id="svc-physio-1",
            starts_at=datetime(2024, 3, 5, 14, 5, tzinfo=CET),
            ends_at=datetime(2024, 3, 5, 15, 0, tzinfo=CET),
            note="Good effort; some pain on stairs",
        ),
        EligibilityDetermined(
            case_id=CASE,
            program_id="prog-home-care-65",
            program_name="State home-care allowance for people over 65",
            eligible=True,
            reasons=("Over 65", "Income below the threshold", "Resident in the region"),
            facts=EligibilityFacts(
                age=82,
                monthly_income=Money(amount_minor_units=98_000, currency="EUR"),
                household_size=1,
                residence="IT-MI",
            ),
            valid_until=date(2025, 2, 28),
        ),
        BudgetReserved(
            case_id=CASE,
            reservation_id="res-17",
            budget_line="home-care-2024",
            amount=Money(amount_minor_units=120_000, currency="EUR"),
            service_id="svc-home-care",
        ),
        BudgetReleased(
            case_id=CASE,
            reservation_id="res-17",
            budget_line="home-care-2024",
            amount=Money(amount_minor_units=30_000, currency="EUR"),
            service_id="svc-home-care",
            reason="Fewer home-care hours needed than planned",
        ),
        InsuranceClaimFiled(
            case_id=CASE,
            claim_id="claim-3",
            insurer=Provider(provider_id="ins-mutua", name="Mutua Salute"),
            policy_number="MS-448812",
            amount_claimed=Money(amount_minor_units=45_000, currency="EUR"),
            service_ids=("svc-physio-1",),
        ),
        InsuranceClaimDecided(
            case_id=CASE,
            claim_id="claim-3",
            insurer_id="ins-mutua",
            decision=ClaimDecision.PARTIAL,
            amount_approved=Money(amount_minor_units=30_000, currency="EUR"),
            reason="Policy covers eight sessions a year",
        ),
        ContactLogged(
            case_id=CASE,
            contact_id="contact-12",
            kind=ContactKind.HOME_VISIT,
            summary="Managing stairs; says he feels less alone since the group",
            next_follow_up_due=date(2024, 4, 2),
        ),
        ProgressEvaluated(
            case_id=CASE,
            evaluation_id="eval-2",
            plan_id=PLAN,
            goal_progress=(
                GoalProgress(goal_id="goal-mobility", rating=ProgressRating.ON_TRACK),
                GoalProgress(
                    goal_id="goal-social",
                    rating=ProgressRating.SOME_PROGRESS,
                    note="Went twice, nervous about the bus",
                ),
            ),
            helping_factors=("Daughter's weekly calls",),
            hindering_factors=("Fear of falling outdoors",),
            plan_adjustment_needed=False,
        ),
        DischargePlanned(
            case_id=CASE,
            target_date=date(2024, 9, 30),
            criteria=("Walks outdoors unaided", "Home care arranged privately"),
            aftercare=("Seniors' club", "Quarterly phone check"),
            note="Client and daughter agree with the timing",
        ),
        CaseClosed(
            case_id=CASE,
            reason=DischargeReason.GOALS_ACHIEVED,
            note="Independent at home with weekly private home care",
        ),
        CaseReopened(case_id=CASE, reason="New fall in January, back in hospital for a week"),
        RecordAccessed(
            case_id=CASE,
            accessor_id="auditor-kim",
            accessor_role=Role.AUDITOR,
            purpose=AccessPurpose.CONFIDENTIALITY_REVIEW,
            sections=(RecordSection.ASSESSMENT, RecordSection.ACCESS_LOG),
            fields=("assessment.factors.psychological",),
            rule="auditor-review",
            policy_version="2026.12-1",
            client_application="casetrail-console",
        ),
        RecordAccessDenied(
            case_id=CASE,
            accessor_id="worker-luca",
            accessor_role=Role.CASE_MANAGER,
            accessor_agency_id="eastbay-dss",
            purpose=AccessPurpose.SUPERVISION,
            action="read a case view",
            rule="purpose-not-permitted",
            policy_version="2026.12-1",
            client_application="casetrail-console",
        ),
        ConsentGranted(
            case_id=CASE,
            client_id=CLIENT,
            consent_id="consent-5",
            scope=(RecordSection.PLAN, RecordSection.SERVICES),
            categories=(SensitiveCategory.HEALTH,),
            recipient=ConsentRecipient(
                kind=RecipientKind.AGENCY, recipient_id=physio.provider_id, name=physio.name
            ),
            purpose=AccessPurpose.COORDINATION,
            expires_at=datetime(2024, 12, 31, 23, 59, tzinfo=CET),
            document_reference="scan://consents/2024/consent-5.pdf",
        ),
        ConsentRevoked(
            case_id=CASE,
            client_id=CLIENT,
            consent_id="consent-5",
            reason="Therapy finished",
        ),
        EmergencyAccessOpened(
            case_id=CASE,
            emergency_access_id="emergency-2",
            grantee_id="worker-noor",
            grantee_role=Role.SOCIAL_WORKER,
            grantee_agency_id="eastbay-dss",
            grantee_team="team-west",
            entitlement="break_glass",
            reason="On call: client found confused at home, needs the medication list now",
            opened_at=datetime(2024, 11, 2, 22, 40, tzinfo=CET),
            expires_at=datetime(2024, 11, 2, 23, 40, tzinfo=CET),
        ),
        EmergencyAccessClosed(
            case_id=CASE,
            emergency_access_id="emergency-2",
            closed_by_id="worker-noor",
            closed_by_role=Role.SOCIAL_WORKER,
            closed_at=datetime(2024, 11, 2, 23, 5, tzinfo=CET),
        ),
        EmergencyAccessReviewed(
            case_id=CASE,
            emergency_access_id="emergency-2",
            reviewer_id="supervisor-ines",
            reviewer_role=Role.SUPERVISOR,
            outcome=EmergencyAccessOutcome.JUSTIFIED,
            note="Out-of-hours call confirmed with the on-call log",
        ),
        RetentionHoldPlaced(
            client_id=CLIENT,
            hold_id="hold-1",
            legal_basis="litigation 2026-CV-113 (court order of 2026-11-02)",
            until=date(2027, 12, 31),
        ),
        RetentionHoldReleased(
            client_id=CLIENT, hold_id="hold-1", reason="Proceedings closed on 2027-03-01"
        ),
        ClientErased(
            client_id=CLIENT,
            case_ids=(CASE,),
            request_reference="dms://privacy/requests/2027-0311",
        ),
        LedgerInconsistencyDetected(
            origin="casetrail/example-agency/planning",
            held_size=1200,
            checkpoint_size=1250,
            first_bad_position=1117,
            problem="the log's leaf at position 1117 is not the one audit witnessed",
        ),
    )


def legacy_example_events() -> tuple[CaseEvent, ...]:
    """One example per superseded (type, version) whose schema is still published."""
    return (
        CaseOpenedV1(
            case_id=CASE,
            client_id=CLIENT,
            referral_source=ReferralSource(kind=ReferralSourceKind.FAMILY, name="Daughter"),
            presenting_need="Cannot manage at home after a fall",
        ),
        ClientRegisteredV1(
            client_id=CLIENT,
            name=PersonName(given_names="Marco", family_name="Bellini", preferred_name="Nonno"),
            date_of_birth=date(1941, 6, 2),
            identifiers=(
                PersonalIdentifier(scheme="national_id", value="BLLMRC41H02F205X"),
                PersonalIdentifier(scheme="mrn:st-mary-hospital", value="SMH-0099812"),
            ),
            contact=ContactDetails(phone="+39 02 555 0199", postal_address="Via Roma 12, Milano"),
            preferred_language="it",
        ),
        CaseAssignedV1(
            case_id=CASE,
            worker_id="worker-ana",
            worker_role=Role.SOCIAL_WORKER,
            credentials=(
                WorkerCredential(kind=CredentialKind.DEGREE, name="MSW"),
                WorkerCredential(
                    kind=CredentialKind.LICENCE,
                    name="LMSW",
                    issued_by="State Board of Social Work",
                    valid_until=date(2026, 12, 31),
                ),
            ),
            matched_needs=(NeedCategory.COUNSELING, NeedCategory.HOME_CARE),
            reason="Licensed to counsel; experienced with older clients leaving hospital",
        ),
        CaseReassignedV1(
            case_id=CASE,
            previous_worker_id="worker-ana",
            worker_id="worker-luca",
            worker_role=Role.CASE_MANAGER,
            credentials=(WorkerCredential(kind=CredentialKind.CERTIFICATION, name="C-ASWCM"),),
            reason="Counseling handed to a partner agency; remaining work is coordination",
        ),
        RecordAccessedV1(
            case_id=CASE,
            accessor_id="auditor-kim",
            accessor_role=Role.AUDITOR,
            purpose=AccessPurpose.CONFIDENTIALITY_REVIEW,
            sections=(RecordSection.ASSESSMENT, RecordSection.ACCESS_LOG),
            fields=("assessment.factors.psychological",),
        ),
        RecordAccessedV2(
            case_id=CASE,
            accessor_id="auditor-kim",
            accessor_role=Role.AUDITOR,
            purpose=AccessPurpose.CONFIDENTIALITY_REVIEW,
            sections=(RecordSection.ASSESSMENT, RecordSection.ACCESS_LOG),
            fields=("assessment.factors.psychological",),
            rule="auditor-review",
            policy_version="2026.12-1",
        ),
        RecordAccessedV3(
            case_id=CASE,
            accessor_id="auditor-kim",
            accessor_role=Role.AUDITOR,
            purpose=AccessPurpose.CONFIDENTIALITY_REVIEW,
            sections=(RecordSection.ASSESSMENT, RecordSection.ACCESS_LOG),
            fields=("assessment.factors.psychological",),
            rule="auditor-review",
            policy_version="2026.12-1",
            client_application="casetrail-console",
        ),
        RecordAccessDeniedV1(
            case_id=CASE,
            accessor_id="worker-luca",
            accessor_role=Role.CASE_MANAGER,
            accessor_agency_id="eastbay-dss",
            purpose=AccessPurpose.SUPERVISION,
            action="read a case view",
            rule="purpose-not-permitted",
            policy_version="2026.12-1",
        ),
        ConsentGrantedV1(
            case_id=CASE,
            client_id=CLIENT,
            consent_id="consent-5",
            scope=(RecordSection.PLAN, RecordSection.SERVICES),
            recipient_agency=Provider(
                provider_id="prov-physio-north", name="North Physiotherapy Practice"
            ),
            purpose="Coordinate therapy with home care",
            expires_at=datetime(2024, 12, 31, 23, 59, tzinfo=CET),
        ),
        ReferralMadeV1(
            case_id=CASE,
            referral_id="ref-counsel",
            provider=Provider(provider_id="agency-harbour", name="Harbour Counseling Centre"),
            need_category=NeedCategory.COUNSELING,
            service="Grief and adjustment counseling",
            urgency=Urgency.SOON,
            reason="Low mood since bereavement and the fall",
        ),
        *(
            superseded.model_validate(_current_example(superseded.event_type).model_dump())
            for superseded in _MARKED_SINCE
        ),
    )


_MARKED_SINCE: tuple[type[CaseEvent], ...] = (
    ServiceScheduledV1,
    ServiceRescheduledV1,
    ServiceCancelledV1,
    PlanDraftedV1,
    GoalAddedV1,
    GoalRevisedV1,
    GoalDroppedV1,
    DischargePlannedV1,
    ReferralAcceptedV1,
    ReferralDeclinedV1,
    InsuranceClaimFiledV1,
    InsuranceClaimDecidedV1,
    ConsentGrantedV2,
    ConsentRevokedV1,
    EligibilityDeterminedV1,
    InitialAssessmentRecordedV1,
    ConsentGrantedV3,
    CaseOpenedV2,
    RetentionHoldPlacedV1,
    RetentionHoldReleasedV1,
)
"""Superseded versions whose successor only marked more fields sensitive or personal: the
same shape, so their examples are the current examples' data."""


def _current_example(event_type: str) -> CaseEvent:
    return next(event for event in example_events() if event.event_type == event_type)
