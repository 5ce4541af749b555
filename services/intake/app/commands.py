"""What callers ask intake to do, in plain data shaped like the catalog events.

Field names are those of the catalog (and of the proto), so a validation problem found while
building the event names the request field the caller has to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class NameInput:
    given_names: str
    family_name: str | None = None
    preferred_name: str | None = None


@dataclass(frozen=True, slots=True)
class IdentifierInput:
    scheme: str
    value: str


@dataclass(frozen=True, slots=True)
class ContactInput:
    phone: str | None = None
    email: str | None = None
    postal_address: str | None = None


@dataclass(frozen=True, slots=True)
class RegisterClient:
    name: NameInput
    date_of_birth: str | None = None
    identifiers: tuple[IdentifierInput, ...] = ()
    contact: ContactInput | None = None
    preferred_language: str | None = None
    confirmed_not_duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ReferralSourceInput:
    kind: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class PresentingNeedInput:
    category: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class OpenCase:
    client_id: str
    referral_source: ReferralSourceInput
    presenting_needs: tuple[PresentingNeedInput, ...]


@dataclass(frozen=True, slots=True)
class FactorsInput:
    psychosocial: str | None = None
    biological: str | None = None
    psychological: str | None = None
    cultural: str | None = None
    social: str | None = None
    economic: str | None = None


@dataclass(frozen=True, slots=True)
class RiskInput:
    description: str
    severity: str


@dataclass(frozen=True, slots=True)
class AssessedNeedInput:
    category: str
    urgency: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class RecordInitialAssessment:
    case_id: str
    factors: FactorsInput
    needs: tuple[AssessedNeedInput, ...]
    strengths: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    risks: tuple[RiskInput, ...] = ()


@dataclass(frozen=True, slots=True)
class ReopenCase:
    case_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class FindDuplicates:
    """Identity details to check before registering; a name counts only with a birth date."""

    name: NameInput | None = None
    date_of_birth: str | None = None
    identifiers: tuple[IdentifierInput, ...] = ()


@dataclass(frozen=True, slots=True)
class RecipientInput:
    kind: str | None
    recipient_id: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class GrantConsent:
    case_id: str
    recipient: RecipientInput | None
    purpose: str | None
    scope: tuple[str, ...]
    categories: tuple[str, ...]
    expires_at: datetime | None
    document_reference: str | None


@dataclass(frozen=True, slots=True)
class RevokeConsent:
    case_id: str
    consent_id: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class OpenEmergencyAccess:
    case_id: str
    reason: str | None
    duration: timedelta | None
    """``None``: the default time box."""


@dataclass(frozen=True, slots=True)
class ReviewEmergencyAccess:
    case_id: str
    emergency_access_id: str
    outcome: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class CloseEmergencyAccess:
    case_id: str
    emergency_access_id: str


@dataclass(frozen=True, slots=True)
class ListEmergencyAccesses:
    include_reviewed: bool = False
    case_id: str | None = None


@dataclass(frozen=True, slots=True)
class EraseClient:
    client_id: str
    request_reference: str | None


@dataclass(frozen=True, slots=True)
class PlaceRetentionHold:
    client_id: str
    legal_basis: str | None
    until: str | None


@dataclass(frozen=True, slots=True)
class ReleaseRetentionHold:
    client_id: str
    hold_id: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class CorrectClientDateOfBirth:
    client_id: str
    date_of_birth: str | None
    reason: str | None
