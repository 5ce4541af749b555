"""Confidentiality: who saw what in a case record, and the client's consent to disclosure."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field, field_validator

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Personal, Role, Sensitive
from events.catalog.values import CatalogValue, require_unique


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


class DisclosureBasis(StrEnum):
    """Why something was disclosed outside the agency: the client's consent, or a documented
    exception to it."""

    CONSENT = "consent"
    LEGAL_OBLIGATION = "legal_obligation"
    EMERGENCY = "emergency"


class SensitiveCategory(StrEnum):
    """The narrowest categories of special data: consent to disclose them is given by name
    (42 CFR Part 2 for substance use), never implied by consent to a section."""

    SUBSTANCE_USE = "substance_use"
    MENTAL_HEALTH = "mental_health"
    HEALTH = "health"
    DOMESTIC_VIOLENCE = "domestic_violence"


SensitiveCategories = Annotated[tuple[SensitiveCategory, ...], Sensitive]
"""Categories a consent names: they tell which special data the client has, so the list is
sensitive and sealed whole (its erased form is empty: a consent that names no category)."""


RuleName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[a-z][a-z0-9_.:-]*$",
        description="The access-policy rule that decided (casetrail_platform/policy/matrix.py).",
    ),
]
PolicyVersion = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[0-9A-Za-z.:-]+$")]
ClientApplication = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
]
"""A client application's name, e.g. casetrail-console."""


class RecordAccessed(CaseEvent):
    """Someone viewed parts of a case record: who, why, and exactly what they saw."""

    event_type: ClassVar[str] = "casetrail.record.accessed"
    schema_version: ClassVar[int] = 4

    case_id: Identifier
    accessor_id: Identifier
    accessor_role: Role
    accessor_agency_id: Identifier | None = None
    purpose: AccessPurpose
    sections: Annotated[tuple[RecordSection, ...], Field(min_length=1)]
    fields: tuple[FieldPath, ...] = Field(
        default=(), description="Individual fields viewed, when narrower than whole sections."
    )
    consent_ids: tuple[Identifier, ...] = Field(
        default=(),
        description="Every consent that allowed a disclosure to another agency (since v4; v3"
        " named one consent only, the first of a partner's referrals' own).",
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

    @field_validator("sections")
    @classmethod
    def _sections_are_unique(cls, sections: tuple[RecordSection, ...]) -> tuple[RecordSection, ...]:
        require_unique(sections, "sections")
        return sections

    @field_validator("consent_ids")
    @classmethod
    def _consents_are_unique(cls, consent_ids: tuple[str, ...]) -> tuple[str, ...]:
        require_unique(consent_ids, "consent_ids")
        return consent_ids


class RecordAccessDenied(CaseEvent):
    """Someone asked to read a case record and was refused. Carries no case content."""

    event_type: ClassVar[str] = "casetrail.record.access_denied"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    accessor_id: Identifier
    accessor_role: Role
    accessor_agency_id: Identifier | None = None
    purpose: AccessPurpose
    action: NonEmptyStr = Field(description="What was asked, e.g. read a case view.")
    rule: RuleName = Field(description="The access-policy rule that refused it.")
    policy_version: PolicyVersion
    client_application: ClientApplication | None = Field(
        default=None,
        description="The client application the request came through (e.g. casetrail-console),"
        " as the caller named it (x-casetrail-client); declared, not verified.",
    )


class RecipientKind(StrEnum):
    AGENCY = "agency"
    PERSON = "person"


class ConsentRecipient(CatalogValue):
    """Who may receive the disclosure: an agency (its provider id) or a named person."""

    kind: RecipientKind
    recipient_id: Identifier
    # A mark cannot depend on ``kind``: an agency's name is sealed too, and the consent still
    # binds its recipient by id once the client is erased.
    name: Annotated[NonEmptyStr, Personal] = Field(
        description="The recipient's name: personal since consent.granted v4 (a person the"
        " client chose, often a relative), sealed under the client's key; reads '[erased]'"
        " once the client is erased."
    )


class ConsentGranted(CaseEvent):
    """The client consented to parts of their record being disclosed to a recipient."""

    event_type: ClassVar[str] = "casetrail.consent.granted"
    schema_version: ClassVar[int] = 4

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
        default=None,
        description="Where the signed consent document is kept: personal since v4 (a path that"
        " often names the client), sealed under the client's key.",
    )

    @field_validator("scope")
    @classmethod
    def _scope_is_unique(cls, scope: tuple[RecordSection, ...]) -> tuple[RecordSection, ...]:
        require_unique(scope, "scope")
        return scope

    @field_validator("categories")
    @classmethod
    def _categories_are_unique(
        cls, categories: tuple[SensitiveCategory, ...]
    ) -> tuple[SensitiveCategory, ...]:
        require_unique(categories, "categories")
        return categories


class ConsentRevoked(CaseEvent):
    """The client withdrew a consent to disclosure."""

    event_type: ClassVar[str] = "casetrail.consent.revoked"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    client_id: Identifier
    consent_id: Identifier
    reason: Annotated[NonEmptyStr | None, Sensitive] = Field(
        default=None,
        description="Why the client withdrew it, often in their own words (sensitive since v2:"
        " it tells of their private life).",
    )
