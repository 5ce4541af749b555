"""The complete public catalog: every current event model, every superseded one, every upcaster.

This is the one place that lists them. Services get a registry from ``default_registry()`` in
their bootstrap; nothing is built when this module is imported.
"""

from __future__ import annotations

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
    legacy,
    monitoring,
    planning,
    referrals,
    scheduling,
)
from events.catalog.base import CaseEvent
from events.registry import EventRegistry, Upcaster


def current_models() -> tuple[type[CaseEvent], ...]:
    """The current model of every event type, in case-cycle order."""
    return (
        clients.ClientRegistered,
        clients.ClientDateOfBirthCorrected,
        cases.CaseOpened,
        assessment.InitialAssessmentRecorded,
        assignment.CaseAssigned,
        assignment.CaseReassigned,
        planning.PlanDrafted,
        planning.GoalAdded,
        planning.GoalRevised,
        planning.GoalAchieved,
        planning.GoalDropped,
        planning.PlanAgreed,
        referrals.ReferralMade,
        referrals.ReferralAccepted,
        referrals.ReferralDeclined,
        referrals.ReferralCompleted,
        referrals.ReferralWithdrawn,
        scheduling.ServiceScheduled,
        scheduling.ServiceRescheduled,
        scheduling.ServiceCancelled,
        scheduling.ServiceDelivered,
        eligibility.EligibilityDetermined,
        funding.BudgetReserved,
        funding.BudgetReleased,
        funding.InsuranceClaimFiled,
        funding.InsuranceClaimDecided,
        monitoring.ContactLogged,
        monitoring.ProgressEvaluated,
        cases.DischargePlanned,
        cases.CaseClosed,
        cases.CaseReopened,
        access.RecordAccessed,
        access.RecordAccessDenied,
        access.ConsentGranted,
        access.ConsentRevoked,
        emergency.EmergencyAccessOpened,
        emergency.EmergencyAccessReviewed,
        emergency.EmergencyAccessClosed,
        erasure.RetentionHoldPlaced,
        erasure.RetentionHoldReleased,
        erasure.ClientErased,
        ledger.LedgerInconsistencyDetected,
    )


def legacy_models() -> tuple[type[CaseEvent], ...]:
    """Superseded (type, version) models whose schemas stay published for subscribers."""
    return (
        legacy.CaseOpenedV1,
        legacy.ClientRegisteredV1,
        legacy.CaseAssignedV1,
        legacy.CaseReassignedV1,
        legacy.RecordAccessedV1,
        legacy.RecordAccessedV2,
        legacy.RecordAccessedV3,
        legacy.RecordAccessDeniedV1,
        legacy.ConsentGrantedV1,
        legacy.ReferralMadeV1,
        legacy.ServiceScheduledV1,
        legacy.ServiceRescheduledV1,
        legacy.ServiceCancelledV1,
        legacy.PlanDraftedV1,
        legacy.GoalAddedV1,
        legacy.GoalRevisedV1,
        legacy.GoalDroppedV1,
        legacy.DischargePlannedV1,
        legacy.ReferralAcceptedV1,
        legacy.ReferralDeclinedV1,
        legacy.InsuranceClaimFiledV1,
        legacy.InsuranceClaimDecidedV1,
        legacy.ConsentGrantedV2,
        legacy.ConsentRevokedV1,
        legacy.EligibilityDeterminedV1,
        legacy.InitialAssessmentRecordedV1,
        legacy.ConsentGrantedV3,
        legacy.CaseOpenedV2,
        legacy.RetentionHoldPlacedV1,
        legacy.RetentionHoldReleasedV1,
    )


def upcasters() -> tuple[tuple[str, int, Upcaster], ...]:
    """(event type, from version, upcaster) for every supported version step."""
    return (
        (cases.CaseOpened.event_type, 1, legacy.upcast_case_opened_v1_to_v2),
        (clients.ClientRegistered.event_type, 1, legacy.upcast_client_registered_v1_to_v2),
        (assignment.CaseAssigned.event_type, 1, legacy.upcast_case_assigned_v1_to_v2),
        (assignment.CaseReassigned.event_type, 1, legacy.upcast_case_reassigned_v1_to_v2),
        (access.RecordAccessed.event_type, 1, legacy.upcast_record_accessed_v1_to_v2),
        (access.RecordAccessed.event_type, 2, legacy.upcast_record_accessed_v2_to_v3),
        (access.RecordAccessed.event_type, 3, legacy.upcast_record_accessed_v3_to_v4),
        (access.RecordAccessDenied.event_type, 1, legacy.upcast_record_access_denied_v1_to_v2),
        (access.ConsentGranted.event_type, 1, legacy.upcast_consent_granted_v1_to_v2),
        (referrals.ReferralMade.event_type, 1, legacy.upcast_referral_made_v1_to_v2),
        (scheduling.ServiceScheduled.event_type, 1, legacy.upcast_service_scheduled_v1_to_v2),
        (scheduling.ServiceRescheduled.event_type, 1, legacy.upcast_service_rescheduled_v1_to_v2),
        (scheduling.ServiceCancelled.event_type, 1, legacy.upcast_service_cancelled_v1_to_v2),
        (planning.PlanDrafted.event_type, 1, legacy.upcast_plan_drafted_v1_to_v2),
        (planning.GoalAdded.event_type, 1, legacy.upcast_goal_added_v1_to_v2),
        (planning.GoalRevised.event_type, 1, legacy.upcast_goal_revised_v1_to_v2),
        (planning.GoalDropped.event_type, 1, legacy.upcast_goal_dropped_v1_to_v2),
        (cases.DischargePlanned.event_type, 1, legacy.upcast_discharge_planned_v1_to_v2),
        (referrals.ReferralAccepted.event_type, 1, legacy.upcast_referral_accepted_v1_to_v2),
        (referrals.ReferralDeclined.event_type, 1, legacy.upcast_referral_declined_v1_to_v2),
        (funding.InsuranceClaimFiled.event_type, 1, legacy.upcast_insurance_claim_filed_v1_to_v2),
        (
            funding.InsuranceClaimDecided.event_type,
            1,
            legacy.upcast_insurance_claim_decided_v1_to_v2,
        ),
        (access.ConsentGranted.event_type, 2, legacy.upcast_consent_granted_v2_to_v3),
        (access.ConsentRevoked.event_type, 1, legacy.upcast_consent_revoked_v1_to_v2),
        (
            eligibility.EligibilityDetermined.event_type,
            1,
            legacy.upcast_eligibility_determined_v1_to_v2,
        ),
        (
            assessment.InitialAssessmentRecorded.event_type,
            1,
            legacy.upcast_initial_assessment_recorded_v1_to_v2,
        ),
        (access.ConsentGranted.event_type, 3, legacy.upcast_consent_granted_v3_to_v4),
        (cases.CaseOpened.event_type, 2, legacy.upcast_case_opened_v2_to_v3),
        (
            erasure.RetentionHoldPlaced.event_type,
            1,
            legacy.upcast_retention_hold_placed_v1_to_v2,
        ),
        (
            erasure.RetentionHoldReleased.event_type,
            1,
            legacy.upcast_retention_hold_released_v1_to_v2,
        ),
    )


def build_registry() -> EventRegistry:
    """A new registry with the whole catalog; use it when a caller must own its registry."""
    registry = EventRegistry(current_models())
    for event_type, from_version, upcaster in upcasters():
        registry.register_upcaster(event_type, from_version, upcaster)
    for model in legacy_models():
        registry.register_superseded(model)
    return registry


@cache
def default_registry() -> EventRegistry:
    """The shared registry of the whole catalog. Do not register anything else into it."""
    return build_registry()


@cache
def all_event_types() -> tuple[str, ...]:
    """Every public event type name, sorted (the lazily built ``ALL_EVENT_TYPES``)."""
    return tuple(sorted(model.event_type for model in current_models()))


@cache
def _models_by_name() -> dict[str, type[CaseEvent]]:
    """The current models by the title their ``ValidationError`` carries (the class's name
    unless its config gives another). Two of one title are refused: the lookup would pick one
    silently (a model kept under its old name in another module, say), and say the other's
    bounds. Superseded models are not here: they keep the title of their current model."""
    by_name: dict[str, type[CaseEvent]] = {}
    for model in current_models():
        name = _title(model)
        first = by_name.setdefault(name, model)
        if first is not model:
            raise ValueError(
                f"two current catalog models are titled {name}: {_where(first)} and {_where(model)}"
            )
    return by_name


def _title(model: type[CaseEvent]) -> str:
    return model.model_config.get("title") or model.__name__


def _where(model: type[CaseEvent]) -> str:
    return f"{model.__module__}.{model.__qualname__}"


def model_named(name: str) -> type[CaseEvent] | None:
    """The current catalog model titled ``name`` (a ``ValidationError``'s ``title``, so a
    refusal of a whole event can say its texts' bounds), or ``None``."""
    return _models_by_name().get(name)
