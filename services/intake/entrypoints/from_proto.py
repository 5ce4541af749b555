"""Requests to commands and queries. Empty proto strings mean "not given"."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC

from casetrail.intake.v1 import intake_pb2
from services.intake.app.commands import (
    AssessedNeedInput,
    CloseEmergencyAccess,
    ContactInput,
    CorrectClientDateOfBirth,
    EraseClient,
    FactorsInput,
    FindDuplicates,
    GrantConsent,
    IdentifierInput,
    ListEmergencyAccesses,
    NameInput,
    OpenCase,
    OpenEmergencyAccess,
    PlaceRetentionHold,
    PresentingNeedInput,
    RecipientInput,
    RecordInitialAssessment,
    ReferralSourceInput,
    RegisterClient,
    ReleaseRetentionHold,
    ReopenCase,
    ReviewEmergencyAccess,
    RevokeConsent,
    RiskInput,
)


def optional(text: str) -> str | None:
    return text or None


def name_input(message: intake_pb2.PersonName) -> NameInput:
    return NameInput(
        given_names=message.given_names,
        family_name=optional(message.family_name),
        preferred_name=optional(message.preferred_name),
    )


def identifier_inputs(
    messages: Iterable[intake_pb2.PersonalIdentifier],
) -> tuple[IdentifierInput, ...]:
    return tuple(IdentifierInput(scheme=m.scheme, value=m.value) for m in messages)


def register_client(request: intake_pb2.RegisterClientRequest) -> RegisterClient:
    contact = None
    if request.HasField("contact"):
        contact = ContactInput(
            phone=optional(request.contact.phone),
            email=optional(request.contact.email),
            postal_address=optional(request.contact.postal_address),
        )
    return RegisterClient(
        name=name_input(request.name),
        date_of_birth=optional(request.date_of_birth),
        identifiers=identifier_inputs(request.identifiers),
        contact=contact,
        preferred_language=optional(request.preferred_language),
        confirmed_not_duplicate=request.confirmed_not_duplicate,
    )


def open_case(request: intake_pb2.OpenCaseRequest) -> OpenCase:
    return OpenCase(
        client_id=request.client_id,
        referral_source=ReferralSourceInput(
            kind=request.referral_source.kind, name=optional(request.referral_source.name)
        ),
        presenting_needs=tuple(
            PresentingNeedInput(category=need.category, description=optional(need.description))
            for need in request.presenting_needs
        ),
    )


def record_initial_assessment(
    request: intake_pb2.RecordInitialAssessmentRequest,
) -> RecordInitialAssessment:
    factors = request.factors
    return RecordInitialAssessment(
        case_id=request.case_id,
        factors=FactorsInput(
            psychosocial=optional(factors.psychosocial),
            biological=optional(factors.biological),
            psychological=optional(factors.psychological),
            cultural=optional(factors.cultural),
            social=optional(factors.social),
            economic=optional(factors.economic),
        ),
        needs=tuple(
            AssessedNeedInput(
                category=need.category,
                urgency=need.urgency,
                description=optional(need.description),
            )
            for need in request.needs
        ),
        strengths=tuple(request.strengths),
        resources=tuple(request.resources),
        risks=tuple(
            RiskInput(description=risk.description, severity=risk.severity)
            for risk in request.risks
        ),
    )


def reopen_case(request: intake_pb2.ReopenCaseRequest) -> ReopenCase:
    return ReopenCase(case_id=request.case_id, reason=request.reason)


def find_duplicates(request: intake_pb2.FindPossibleDuplicatesRequest) -> FindDuplicates:
    return FindDuplicates(
        name=name_input(request.name) if request.HasField("name") else None,
        date_of_birth=optional(request.date_of_birth),
        identifiers=identifier_inputs(request.identifiers),
    )


def grant_consent(request: intake_pb2.GrantConsentRequest) -> GrantConsent:
    recipient = request.recipient
    return GrantConsent(
        case_id=request.case_id,
        recipient=(
            RecipientInput(
                kind=optional(recipient.kind),
                recipient_id=optional(recipient.recipient_id),
                name=optional(recipient.name),
            )
            if request.HasField("recipient")
            else None
        ),
        purpose=optional(request.purpose),
        scope=tuple(request.scope),
        categories=tuple(request.categories),
        expires_at=(
            request.expires_at.ToDatetime(tzinfo=UTC) if request.HasField("expires_at") else None
        ),
        document_reference=optional(request.document_reference),
    )


def revoke_consent(request: intake_pb2.RevokeConsentRequest) -> RevokeConsent:
    return RevokeConsent(
        case_id=request.case_id, consent_id=request.consent_id, reason=optional(request.reason)
    )


def open_emergency_access(request: intake_pb2.OpenEmergencyAccessRequest) -> OpenEmergencyAccess:
    return OpenEmergencyAccess(
        case_id=request.case_id,
        reason=optional(request.reason),
        duration=request.duration.ToTimedelta() if request.HasField("duration") else None,
    )


def review_emergency_access(
    request: intake_pb2.ReviewEmergencyAccessRequest,
) -> ReviewEmergencyAccess:
    return ReviewEmergencyAccess(
        case_id=request.case_id,
        emergency_access_id=request.emergency_access_id,
        outcome=optional(request.outcome),
        note=optional(request.note),
    )


def close_emergency_access(
    request: intake_pb2.CloseEmergencyAccessRequest,
) -> CloseEmergencyAccess:
    return CloseEmergencyAccess(
        case_id=request.case_id, emergency_access_id=request.emergency_access_id
    )


def list_emergency_accesses(
    request: intake_pb2.ListEmergencyAccessesRequest,
) -> ListEmergencyAccesses:
    return ListEmergencyAccesses(
        include_reviewed=request.include_reviewed, case_id=optional(request.case_id)
    )


def erase_client(request: intake_pb2.EraseClientRequest) -> EraseClient:
    return EraseClient(
        client_id=request.client_id, request_reference=optional(request.request_reference)
    )


def place_retention_hold(request: intake_pb2.PlaceRetentionHoldRequest) -> PlaceRetentionHold:
    return PlaceRetentionHold(
        client_id=request.client_id,
        legal_basis=optional(request.legal_basis),
        until=optional(request.until),
    )


def release_retention_hold(
    request: intake_pb2.ReleaseRetentionHoldRequest,
) -> ReleaseRetentionHold:
    return ReleaseRetentionHold(
        client_id=request.client_id, hold_id=request.hold_id, reason=optional(request.reason)
    )


def correct_client_date_of_birth(
    request: intake_pb2.CorrectClientDateOfBirthRequest,
) -> CorrectClientDateOfBirth:
    return CorrectClientDateOfBirth(
        client_id=request.client_id,
        date_of_birth=optional(request.date_of_birth),
        reason=optional(request.reason),
    )
