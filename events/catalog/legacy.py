"""Superseded schema versions and the upcasters that bring their stored data forward.

The models here are never registered as the current shape of their type; they exist so that
their JSON Schemas stay published for subscribers still reading old events, and so that each
upcaster can validate old data before transforming it (bad old data fails with the old field's
name instead of a confusing error about the new shape).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from events.catalog.access import (
    AccessPurpose,
    ClientApplication,
    ConsentRecipient,
    FieldPath,
    PolicyVersion,
    RecipientKind,
    RecordSection,
    RuleName,
    SensitiveCategories,
)
from events.catalog.assessment import AssessedNeed, AssessmentFactors, PersonalLine, Risk
from events.catalog.assignment import WorkerCredential
from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Personal, Role, Sensitive
from events.catalog.cases import PresentingNeed, ReferralSource, SensitiveLine
from events.catalog.clients import (
    ContactDetails,
    LanguageTag,
    PersonalIdentifier,
    PersonalText,
    PersonName,
)
from events.catalog.eligibility import EligibilityFacts
from events.catalog.funding import ClaimDecision
from events.catalog.planning import Goal
from events.catalog.scheduling import (
    CancelledBy,
    ServiceKind,
    ServiceLocation,
    ends_after_start,
)
from events.catalog.values import (
    Day,
    Money,
    NeedCategory,
    Note,
    Provider,
    SensitiveNeedCategory,
    SensitiveNote,
    Urgency,
)
from events.errors import InvalidEventError
from events.validation import event_problems


class CaseOpenedV1(CaseEvent):
    """A case was opened for a client, with the one need that brought them to the agency."""

    event_type: ClassVar[str] = "casetrail.case.opened"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    client_id: Identifier
    referral_source: ReferralSource
    presenting_need: SensitiveNote


def upcast_case_opened_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 recorded a single free-text need; v2 records categorised needs.

    The old text becomes the description of one need of category ``other``: the category was
    never captured in v1, and guessing it from the text would put words in the worker's mouth.
    """
    old = _validated(CaseOpenedV1, data).model_dump(mode="json")
    need = old.pop("presenting_need")
    old["presenting_needs"] = [{"category": NeedCategory.OTHER.value, "description": need}]
    return old


class ClientRegisteredV1(CaseEvent):
    """A person seeking help was registered as a client of the agency."""

    # The title it was published under while it was current: v1.json stays as subscribers saw it.
    model_config = ConfigDict(title="ClientRegistered")

    event_type: ClassVar[str] = "casetrail.client.registered"
    schema_version: ClassVar[int] = 1
    subject_field: ClassVar[str] = "client_id"

    client_id: Identifier
    name: PersonName
    # Marked as v2 is, so that the stored form of a v1 registration is sealed like its
    # publication (the marks are annotations only: the shape subscribers saw is unchanged).
    date_of_birth: Annotated[date | None, Personal] = None
    identifiers: Annotated[tuple[PersonalIdentifier, ...], Personal] = ()
    contact: Annotated[ContactDetails | None, Personal] = None
    preferred_language: LanguageTag | None = None


def upcast_client_registered_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 records whom the registrar confirmed the person is not; v1 never recorded it, so no
    one (a v1 registration that overrode a duplicate warning cannot say which one)."""
    old = _validated(ClientRegisteredV1, data).model_dump(mode="json")
    old["confirmed_not_duplicate_of"] = []
    return old


class CaseAssignedV1(CaseEvent):
    """The case was assigned to a worker whose qualifications fit the client's needs."""

    model_config = ConfigDict(title="CaseAssigned")

    event_type: ClassVar[str] = "casetrail.case.assigned"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    worker_id: Identifier
    worker_role: Role
    credentials: tuple[WorkerCredential, ...] = ()
    matched_needs: tuple[SensitiveNeedCategory, ...] = Field(
        default=(), description="The client's needs this worker was chosen for."
    )
    reason: NonEmptyStr


class CaseReassignedV1(CaseEvent):
    """The case was handed from one worker to another."""

    model_config = ConfigDict(title="CaseReassigned")

    event_type: ClassVar[str] = "casetrail.case.reassigned"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    previous_worker_id: Identifier
    worker_id: Identifier
    worker_role: Role
    credentials: tuple[WorkerCredential, ...] = ()
    reason: NonEmptyStr


def upcast_case_assigned_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 did not record the worker's team: unknown (no team supervisor until reassigned)."""
    old = _validated(CaseAssignedV1, data).model_dump(mode="json")
    old["worker_team"] = None
    return old


def upcast_case_reassigned_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """As for assignments: the team of a v1 reassignment is unknown."""
    old = _validated(CaseReassignedV1, data).model_dump(mode="json")
    old["worker_team"] = None
    return old


class RecordAccessedV1(CaseEvent):
    """Someone viewed parts of a case record: who, why, and exactly what they saw."""

    model_config = ConfigDict(title="RecordAccessed")

    event_type: ClassVar[str] = "casetrail.record.accessed"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    accessor_id: Identifier
    accessor_role: Role
    accessor_agency_id: Identifier | None = None
    purpose: AccessPurpose
    sections: Annotated[tuple[RecordSection, ...], Field(min_length=1)]
    fields: tuple[FieldPath, ...] = Field(
        default=(), description="Individual fields viewed, when narrower than whole sections."
    )
    consent_id: Identifier | None = Field(
        default=None, description="The consent that allowed a disclosure to another agency."
    )


LEGACY_ACCESS_RULE = "role-check-before-policy"
"""The rule v1 accesses are shown under: before the access policy, a role check decided."""


def upcast_record_accessed_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 was recorded by the role checks that preceded the access policy (policy "0")."""
    old = _validated(RecordAccessedV1, data).model_dump(mode="json")
    old.update(rule=LEGACY_ACCESS_RULE, policy_version="0", redacted_fields=[])
    old["emergency_access_id"] = None
    return old


class RecordAccessedV2(CaseEvent):
    """Someone viewed parts of a case record: who, why, and exactly what they saw."""

    model_config = ConfigDict(title="RecordAccessed")

    event_type: ClassVar[str] = "casetrail.record.accessed"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    accessor_id: Identifier
    accessor_role: Role
    accessor_agency_id: Identifier | None = None
    purpose: AccessPurpose
    sections: Annotated[tuple[RecordSection, ...], Field(min_length=1)]
    fields: tuple[FieldPath, ...] = Field(
        default=(), description="Individual fields viewed, when narrower than whole sections."
    )
    consent_id: Identifier | None = Field(
        default=None, description="The consent that allowed a disclosure to another agency."
    )
    rule: RuleName = Field(description="The access-policy rule that allowed the read.")
    policy_version: PolicyVersion
    redacted_fields: tuple[FieldPath, ...] = Field(
        default=(), description="Sensitive fields of the answer withheld from the reader."
    )
    emergency_access_id: Identifier | None = Field(
        default=None, description="The break-the-glass access the read was made under."
    )


def upcast_record_accessed_v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """v2 did not name the client application the read came through: unknown."""
    old = _validated(RecordAccessedV2, data).model_dump(mode="json")
    old["client_application"] = None
    return old


class RecordAccessedV3(CaseEvent):
    """Someone viewed parts of a case record: who, why, and exactly what they saw."""

    model_config = ConfigDict(title="RecordAccessed")

    event_type: ClassVar[str] = "casetrail.record.accessed"
    schema_version: ClassVar[int] = 3

    case_id: Identifier
    accessor_id: Identifier
    accessor_role: Role
    accessor_agency_id: Identifier | None = None
    purpose: AccessPurpose
    sections: Annotated[tuple[RecordSection, ...], Field(min_length=1)]
    fields: tuple[FieldPath, ...] = Field(
        default=(), description="Individual fields viewed, when narrower than whole sections."
    )
    consent_id: Identifier | None = Field(
        default=None, description="The consent that allowed a disclosure to another agency."
    )
    rule: RuleName = Field(description="The access-policy rule that allowed the read.")
    policy_version: PolicyVersion
    redacted_fields: tuple[FieldPath, ...] = Field(
        default=(), description="Sensitive fields of the answer withheld from the reader."
    )
    emergency_access_id: Identifier | None = Field(
        default=None, description="The break-the-glass access the read was made under."
    )
    client_application: ClientApplication | None = Field(
        default=None,
        description="The client application the read came through (e.g. casetrail-console),"
        " as the caller named it (x-casetrail-client); declared, not verified.",
    )


def upcast_record_accessed_v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    """v3 named one consent: the one it names is all that is known of those relied on (a
    partner's read under several referrals' consents named the first only)."""
    old = _validated(RecordAccessedV3, data).model_dump(mode="json")
    consent_id = old.pop("consent_id")
    old["consent_ids"] = [] if consent_id is None else [consent_id]
    return old


class RecordAccessDeniedV1(CaseEvent):
    """Someone asked to read a case record and was refused. Carries no case content."""

    model_config = ConfigDict(title="RecordAccessDenied")

    event_type: ClassVar[str] = "casetrail.record.access_denied"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    accessor_id: Identifier
    accessor_role: Role
    accessor_agency_id: Identifier | None = None
    purpose: AccessPurpose
    action: NonEmptyStr = Field(description="What was asked, e.g. read a case view.")
    rule: RuleName = Field(description="The access-policy rule that refused it.")
    policy_version: PolicyVersion


def upcast_record_access_denied_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 did not name the client application the request came through: unknown."""
    old = _validated(RecordAccessDeniedV1, data).model_dump(mode="json")
    old["client_application"] = None
    return old


class ConsentGrantedV1(CaseEvent):
    """The client consented to parts of their record being disclosed to an agency."""

    model_config = ConfigDict(title="ConsentGranted")

    event_type: ClassVar[str] = "casetrail.consent.granted"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    client_id: Identifier
    consent_id: Identifier
    scope: Annotated[tuple[RecordSection, ...], Field(min_length=1)]
    recipient_agency: Provider
    purpose: NonEmptyStr
    expires_at: AwareDatetime | None = None


def upcast_consent_granted_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 named an agency and a free-text purpose; v2 a recipient and a purpose of the access
    vocabulary. A v1 purpose that is not one of those words covers nothing (``client_request``
    is the narrowest: only the client's own asking), rather than a guessed wider purpose."""
    old = _validated(ConsentGrantedV1, data).model_dump(mode="json")
    agency = old.pop("recipient_agency")
    old["recipient"] = {
        "kind": RecipientKind.AGENCY.value,
        "recipient_id": agency["provider_id"],
        "name": agency["name"],
    }
    purposes = {purpose.value for purpose in AccessPurpose}
    if old["purpose"] not in purposes:
        old["purpose"] = AccessPurpose.CLIENT_REQUEST.value
    old.update(categories=[], document_reference=None)
    return old


class ReferralMadeV1(CaseEvent):
    """The client was referred to an agency or professional for a service."""

    model_config = ConfigDict(title="ReferralMade")

    event_type: ClassVar[str] = "casetrail.referral.made"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    referral_id: Identifier
    provider: Provider
    need_category: SensitiveNeedCategory
    service: Annotated[NonEmptyStr, Sensitive] = Field(
        description="The service asked for, e.g. addiction counseling."
    )
    urgency: Urgency
    reason: SensitiveNote


def upcast_referral_made_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 referrals were made before disclosures were checked against consent: their basis is
    unknown, not "consent"."""
    old = _validated(ReferralMadeV1, data).model_dump(mode="json")
    old.update(disclosure_basis=None, consent_id=None)
    return old


def _validated(model: type[CaseEvent], data: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = event_problems(error, model, f" (schema version {model.schema_version})")
        raise InvalidEventError(model.event_type, problems) from None


# Free text and codes marked sensitive or personal after they were first published (the
# rev21 reviews): the shape of the data is unchanged, only where a value may now be sealed.
# Each superseded model carries the same marks as its successor, as client.registered v1 does,
# so that a stored form of it is sealed like its publication. Data stored before the marks holds
# these values in clear: the opener leaves a value that is not sealed as it is, and the upcaster
# brings it forward unchanged (the store then seals it again when it is published).


class ServiceScheduledV1(CaseEvent):
    """A service for the client was scheduled with a provider."""

    model_config = ConfigDict(title="ServiceScheduled")

    event_type: ClassVar[str] = "casetrail.service.scheduled"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    service_id: Identifier
    kind: Annotated[ServiceKind, Sensitive]
    provider: Provider
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    location: ServiceLocation
    referral_id: Identifier | None = None
    goal_id: Identifier | None = None

    _ends_after_start = field_validator("ends_at")(ends_after_start)


class ServiceRescheduledV1(CaseEvent):
    """A scheduled service was moved to another slot (and possibly another place)."""

    model_config = ConfigDict(title="ServiceRescheduled")

    event_type: ClassVar[str] = "casetrail.service.rescheduled"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    service_id: Identifier
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    location: ServiceLocation
    reason: SensitiveNote

    _ends_after_start = field_validator("ends_at")(ends_after_start)


class ServiceCancelledV1(CaseEvent):
    """A scheduled service was called off."""

    model_config = ConfigDict(title="ServiceCancelled")

    event_type: ClassVar[str] = "casetrail.service.cancelled"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    service_id: Identifier
    cancelled_by: CancelledBy
    reason: SensitiveNote


class PlanDraftedV1(CaseEvent):
    """A draft intervention plan was written for the case, possibly with its first goals."""

    model_config = ConfigDict(title="PlanDrafted")

    event_type: ClassVar[str] = "casetrail.plan.drafted"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    plan_id: Identifier
    goals: tuple[Goal, ...] = ()


class GoalAddedV1(CaseEvent):
    """A goal was added to the plan."""

    model_config = ConfigDict(title="GoalAdded")

    event_type: ClassVar[str] = "casetrail.goal.added"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    plan_id: Identifier
    goal: Goal


class GoalRevisedV1(CaseEvent):
    """A goal of the plan was revised; the event carries the goal's complete new form."""

    model_config = ConfigDict(title="GoalRevised")

    event_type: ClassVar[str] = "casetrail.goal.revised"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    plan_id: Identifier
    goal: Goal
    reason: Annotated[NonEmptyStr, Sensitive]


class GoalDroppedV1(CaseEvent):
    """A goal was taken out of the plan without being reached."""

    model_config = ConfigDict(title="GoalDropped")

    event_type: ClassVar[str] = "casetrail.goal.dropped"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    plan_id: Identifier
    goal_id: Identifier
    reason: SensitiveNote


class DischargePlannedV1(CaseEvent):
    """The discharge of the client was planned: target date, criteria and aftercare."""

    model_config = ConfigDict(title="DischargePlanned")

    event_type: ClassVar[str] = "casetrail.discharge.planned"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    target_date: Day
    criteria: Annotated[tuple[SensitiveLine, ...], Field(min_length=1)] = Field(
        description="What must be true for the client to be discharged, e.g. stable housing."
    )
    aftercare: tuple[SensitiveLine, ...] = Field(
        default=(), description="Supports that continue after discharge, e.g. a peer group."
    )
    long_term_maintenance: bool = Field(
        default=False,
        description="The client will be maintained long term at low cost rather than closed.",
    )
    note: SensitiveNote | None = None


class ReferralAcceptedV1(CaseEvent):
    """The agency or professional accepted the referral."""

    model_config = ConfigDict(title="ReferralAccepted")

    event_type: ClassVar[str] = "casetrail.referral.accepted"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    referral_id: Identifier
    provider_id: Identifier
    expected_start_date: Day | None = None
    contact_person: Annotated[NonEmptyStr | None, Personal] = None


class ReferralDeclinedV1(CaseEvent):
    """The agency or professional declined the referral."""

    model_config = ConfigDict(title="ReferralDeclined")

    event_type: ClassVar[str] = "casetrail.referral.declined"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    referral_id: Identifier
    provider_id: Identifier
    reason: SensitiveNote


class InsuranceClaimFiledV1(CaseEvent):
    """A claim was filed with the client's insurer for services of the case."""

    model_config = ConfigDict(title="InsuranceClaimFiled")

    event_type: ClassVar[str] = "casetrail.insurance_claim.filed"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    claim_id: Identifier
    insurer: Provider
    policy_number: Annotated[NonEmptyStr | None, Personal] = None
    amount_claimed: Money
    service_ids: Annotated[tuple[Identifier, ...], Field(min_length=1)]


class InsuranceClaimDecidedV1(CaseEvent):
    """The insurer decided a claim: approved, denied or partly approved."""

    model_config = ConfigDict(title="InsuranceClaimDecided")

    event_type: ClassVar[str] = "casetrail.insurance_claim.decided"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    claim_id: Identifier
    insurer_id: Identifier
    decision: ClaimDecision
    amount_approved: Money
    reason: SensitiveNote | None = None


class ConsentGrantedV2(CaseEvent):
    """The client consented to parts of their record being disclosed to a recipient."""

    model_config = ConfigDict(title="ConsentGranted")

    event_type: ClassVar[str] = "casetrail.consent.granted"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    client_id: Identifier
    consent_id: Identifier
    scope: Annotated[tuple[RecordSection, ...], Field(min_length=1)]
    categories: SensitiveCategories = Field(
        default=(),
        description="Sensitive categories the client names for disclosure (e.g. substance_use);"
        " without them those data stay withheld even inside the consented sections.",
    )
    recipient: ConsentRecipient
    purpose: AccessPurpose
    expires_at: AwareDatetime | None = Field(
        default=None, description="Always set by the consent API; absent only in v1 data."
    )
    document_reference: Annotated[NonEmptyStr | None, Personal] = Field(
        default=None, description="Where the signed consent document is kept."
    )


class ConsentGrantedV3(CaseEvent):
    """The client consented to parts of their record being disclosed to a recipient."""

    model_config = ConfigDict(title="ConsentGranted")

    event_type: ClassVar[str] = "casetrail.consent.granted"
    schema_version: ClassVar[int] = 3

    case_id: Identifier
    client_id: Identifier
    consent_id: Identifier
    scope: Annotated[tuple[RecordSection, ...], Field(min_length=1)]
    categories: SensitiveCategories = Field(
        default=(),
        description="Sensitive categories the client names for disclosure (e.g. substance_use);"
        " without them those data stay withheld even inside the consented sections. Sealed"
        " whole (since v3): once the client is erased it reads empty, and covers nothing.",
    )
    recipient: ConsentRecipient
    purpose: AccessPurpose
    expires_at: AwareDatetime | None = Field(
        default=None, description="Always set by the consent API; absent only in v1 data."
    )
    document_reference: Annotated[NonEmptyStr | None, Personal] = Field(
        default=None, description="Where the signed consent document is kept."
    )


class CaseOpenedV2(CaseEvent):
    """A case was opened for a client, with the needs that brought them to the agency."""

    model_config = ConfigDict(title="CaseOpened")

    event_type: ClassVar[str] = "casetrail.case.opened"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    client_id: Identifier
    referral_source: ReferralSource
    presenting_needs: Annotated[tuple[PresentingNeed, ...], Field(min_length=1)]


class RetentionHoldPlacedV1(CaseEvent):
    """A legal obligation to keep the client's records (litigation, a statutory retention
    period, an inquiry): while it holds, ``EraseClient`` is refused naming it."""

    model_config = ConfigDict(title="RetentionHoldPlaced")

    event_type: ClassVar[str] = "casetrail.client.retention_hold_placed"
    schema_version: ClassVar[int] = 1
    subject_field: ClassVar[str] = "client_id"

    client_id: Identifier
    hold_id: Identifier
    legal_basis: Annotated[NonEmptyStr, Personal] = Field(
        description="Why the records must be kept, e.g. 'litigation 2026-CV-113'."
    )
    until: Day | None = Field(
        default=None, description="When the obligation ends, when known (it is released then)."
    )


class RetentionHoldReleasedV1(CaseEvent):
    """A retention hold no longer applies."""

    model_config = ConfigDict(title="RetentionHoldReleased")

    event_type: ClassVar[str] = "casetrail.client.retention_hold_released"
    schema_version: ClassVar[int] = 1
    subject_field: ClassVar[str] = "client_id"

    client_id: Identifier
    hold_id: Identifier
    reason: Annotated[Note | None, Personal] = None


class ConsentRevokedV1(CaseEvent):
    """The client withdrew a consent to disclosure."""

    model_config = ConfigDict(title="ConsentRevoked")

    event_type: ClassVar[str] = "casetrail.consent.revoked"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    client_id: Identifier
    consent_id: Identifier
    reason: Annotated[NonEmptyStr | None, Sensitive] = None


class EligibilityDeterminedV1(CaseEvent):
    """It was determined whether the client qualifies for a programme, and why."""

    model_config = ConfigDict(title="EligibilityDetermined")

    event_type: ClassVar[str] = "casetrail.eligibility.determined"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    program_id: Identifier
    program_name: NonEmptyStr
    eligible: bool
    reasons: Annotated[tuple[PersonalText, ...], Field(min_length=1)]
    facts: EligibilityFacts
    valid_until: Day | None = None


class InitialAssessmentRecordedV1(CaseEvent):
    """The initial assessment of the client's situation, strengths, resources, risks and needs
    was recorded."""

    model_config = ConfigDict(title="InitialAssessmentRecorded")

    event_type: ClassVar[str] = "casetrail.initial_assessment.recorded"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    assessment_id: Identifier
    factors: AssessmentFactors
    strengths: tuple[PersonalLine, ...] = Field(
        default=(), description="What the client can build on, e.g. a supportive sister."
    )
    resources: tuple[PersonalLine, ...] = Field(
        default=(), description="What the client already has, e.g. a pension, a car."
    )
    risks: tuple[Risk, ...] = ()
    needs: Annotated[tuple[AssessedNeed, ...], Field(min_length=1)]


def _same_shape(model: type[CaseEvent]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The upcaster from ``model``'s version to the next when only marks changed: the data,
    validated as ``model`` (a value stored in clear stays as it was: the next version seals it
    where the store or the bus writes it)."""

    def upcast(data: dict[str, Any]) -> dict[str, Any]:
        return _validated(model, data).model_dump(mode="json")

    upcast.__name__ = upcast.__qualname__ = f"upcast_{model.__name__}_unchanged"
    upcast.__doc__ = (
        f"{model.event_type} v{model.schema_version} -> v{model.schema_version + 1}: same"
        " shape; the next version marks free text sensitive (or personal), sealed once stored."
    )
    return upcast


upcast_service_scheduled_v1_to_v2 = _same_shape(ServiceScheduledV1)
upcast_service_rescheduled_v1_to_v2 = _same_shape(ServiceRescheduledV1)
upcast_service_cancelled_v1_to_v2 = _same_shape(ServiceCancelledV1)
upcast_plan_drafted_v1_to_v2 = _same_shape(PlanDraftedV1)
upcast_goal_added_v1_to_v2 = _same_shape(GoalAddedV1)
upcast_goal_revised_v1_to_v2 = _same_shape(GoalRevisedV1)
upcast_goal_dropped_v1_to_v2 = _same_shape(GoalDroppedV1)
upcast_discharge_planned_v1_to_v2 = _same_shape(DischargePlannedV1)
upcast_referral_accepted_v1_to_v2 = _same_shape(ReferralAcceptedV1)
upcast_referral_declined_v1_to_v2 = _same_shape(ReferralDeclinedV1)
upcast_insurance_claim_filed_v1_to_v2 = _same_shape(InsuranceClaimFiledV1)
upcast_insurance_claim_decided_v1_to_v2 = _same_shape(InsuranceClaimDecidedV1)
upcast_consent_granted_v2_to_v3 = _same_shape(ConsentGrantedV2)
upcast_consent_revoked_v1_to_v2 = _same_shape(ConsentRevokedV1)
upcast_eligibility_determined_v1_to_v2 = _same_shape(EligibilityDeterminedV1)
upcast_initial_assessment_recorded_v1_to_v2 = _same_shape(InitialAssessmentRecordedV1)
upcast_consent_granted_v3_to_v4 = _same_shape(ConsentGrantedV3)
upcast_case_opened_v2_to_v3 = _same_shape(CaseOpenedV2)
upcast_retention_hold_placed_v1_to_v2 = _same_shape(RetentionHoldPlacedV1)
upcast_retention_hold_released_v1_to_v2 = _same_shape(RetentionHoldReleasedV1)
