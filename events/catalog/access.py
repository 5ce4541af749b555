"""Confidentiality: who saw what in a case record, and the client's consent to disclosure."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field, field_validator

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Role
from events.catalog.values import Provider, require_unique


class RecordSection(StrEnum):
    """A part of the case record that can be viewed or disclosed on its own."""

    IDENTITY = "identity"
    ASSESSMENT = "assessment"
    ASSIGNMENT = "assignment"
    PLAN = "plan"
    REFERRALS = "referrals"
    SERVICES = "services"
    ELIGIBILITY = "eligibility"
    FUNDING = "funding"
    CONTACTS = "contacts"
    PROGRESS = "progress"
    DISCHARGE = "discharge"
    CONSENTS = "consents"
    ACCESS_LOG = "access_log"


class AccessPurpose(StrEnum):
    """Why someone looked at a case record (need-to-know)."""

    DIRECT_CARE = "direct_care"
    COORDINATION = "coordination"
    SUPERVISION = "supervision"
    CONFIDENTIALITY_REVIEW = "confidentiality_review"
    CLIENT_REQUEST = "client_request"
    LEGAL_OBLIGATION = "legal_obligation"
    EMERGENCY = "emergency"


FieldPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$",
        description="Dotted path of a field in the record, e.g. assessment.factors.psychological.",
    ),
]


class RecordAccessed(CaseEvent):
    """Someone viewed parts of a case record: who, why, and exactly what they saw."""

    event_type: ClassVar[str] = "casetrail.record.accessed"

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

    @field_validator("sections")
    @classmethod
    def _sections_are_unique(cls, sections: tuple[RecordSection, ...]) -> tuple[RecordSection, ...]:
        require_unique(sections, "sections")
        return sections


class ConsentGranted(CaseEvent):
    """The client consented to parts of their record being disclosed to an agency."""

    event_type: ClassVar[str] = "casetrail.consent.granted"

    case_id: Identifier
    client_id: Identifier
    consent_id: Identifier
    scope: Annotated[tuple[RecordSection, ...], Field(min_length=1)]
    recipient_agency: Provider
    purpose: NonEmptyStr
    expires_at: AwareDatetime | None = None

    @field_validator("scope")
    @classmethod
    def _scope_is_unique(cls, scope: tuple[RecordSection, ...]) -> tuple[RecordSection, ...]:
        require_unique(scope, "scope")
        return scope


class ConsentRevoked(CaseEvent):
    """The client withdrew a consent to disclosure."""

    event_type: ClassVar[str] = "casetrail.consent.revoked"

    case_id: Identifier
    client_id: Identifier
    consent_id: Identifier
    reason: NonEmptyStr | None = None
