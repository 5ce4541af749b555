"""Events that open, close and reopen a case, and plan its discharge."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Personal, Sensitive
from events.catalog.values import (
    CatalogValue,
    Day,
    SensitiveNeedCategory,
    SensitiveNote,
    require_unique,
)


class ReferralSourceKind(StrEnum):
    """Who sent the client to the agency."""

    SELF = "self"
    FAMILY = "family"
    HOSPITAL = "hospital"
    PHYSICIAN = "physician"
    SCHOOL = "school"
    POLICE = "police"
    COURT = "court"
    SOCIAL_SERVICE_AGENCY = "social_service_agency"
    COMMUNITY_ORGANISATION = "community_organisation"
    OTHER = "other"


class ReferralSource(CatalogValue):
    """Where the client came from, and the name of the referring person or body when known."""

    kind: ReferralSourceKind
    name: Annotated[NonEmptyStr | None, Personal] = Field(
        default=None,
        description="Who referred the client, e.g. their daughter or a named physician: personal"
        " since case.opened v3 (it names a person close to the client, or tells where they were"
        " treated), sealed under the client's key.",
    )


class PresentingNeed(CatalogValue):
    """A need the client brings to the agency, in the client's or the referrer's words."""

    category: SensitiveNeedCategory
    description: SensitiveNote | None = None


class CaseOpened(CaseEvent):
    """A case was opened for a client, with the needs that brought them to the agency."""

    event_type: ClassVar[str] = "casetrail.case.opened"
    schema_version: ClassVar[int] = 3

    case_id: Identifier
    client_id: Identifier
    referral_source: ReferralSource
    presenting_needs: Annotated[tuple[PresentingNeed, ...], Field(min_length=1)]


SensitiveLine = Annotated[NonEmptyStr, Sensitive]
"""A short line about the client's health or functioning (a discharge criterion, an aftercare
support): sealed each on its own, so a list keeps its length once erased."""


class DischargePlanned(CaseEvent):
    """The discharge of the client was planned: target date, criteria and aftercare."""

    event_type: ClassVar[str] = "casetrail.discharge.planned"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    target_date: Day
    criteria: Annotated[tuple[SensitiveLine, ...], Field(min_length=1)] = Field(
        description="What must be true for the client to be discharged, e.g. stable housing"
        " (each sensitive since v2: it tells of the client's functioning)."
    )
    aftercare: tuple[SensitiveLine, ...] = Field(
        default=(),
        description="Supports that continue after discharge, e.g. a peer group (each sensitive"
        " since v2).",
    )
    long_term_maintenance: bool = Field(
        default=False,
        description="The client will be maintained long term at low cost rather than closed.",
    )
    note: SensitiveNote | None = None

    @field_validator("criteria")
    @classmethod
    def _criteria_are_unique(cls, criteria: tuple[str, ...]) -> tuple[str, ...]:
        require_unique(criteria, "criteria")
        return criteria


class DischargeReason(StrEnum):
    """Why a case was closed."""

    GOALS_ACHIEVED = "goals_achieved"
    CLIENT_INDEPENDENT = "client_independent"
    TRANSFERRED = "transferred"
    CLIENT_WITHDREW = "client_withdrew"
    CLIENT_MOVED = "client_moved"
    LOST_CONTACT = "lost_contact"
    NOT_ELIGIBLE = "not_eligible"
    CLIENT_DECEASED = "client_deceased"
    OTHER = "other"


class CaseClosed(CaseEvent):
    """The case was closed and the client discharged."""

    event_type: ClassVar[str] = "casetrail.case.closed"

    case_id: Identifier
    reason: DischargeReason
    note: SensitiveNote | None = None


class CaseReopened(CaseEvent):
    """A closed case was reopened because the client needs help again."""

    event_type: ClassVar[str] = "casetrail.case.reopened"

    case_id: Identifier
    reason: SensitiveNote
