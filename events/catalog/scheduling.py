"""Services scheduled and delivered for the client (home care, counseling, transport, ...).

Every slot is a pair of timezone-aware instants with ``ends_at`` after ``starts_at``, so that
coordinators can see overlaps (counseling must not be at the same time as physical therapy).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field, ValidationInfo, field_validator

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Personal, Sensitive
from events.catalog.values import CatalogValue, Provider, SensitiveNote


class ServiceKind(StrEnum):
    """What sort of service is delivered."""

    HOME_CARE = "home_care"
    COUNSELING = "counseling"
    ADDICTION_COUNSELING = "addiction_counseling"
    PHYSICAL_THERAPY = "physical_therapy"
    TRANSPORTATION = "transportation"
    SOCIALISATION = "socialisation"
    MEAL_DELIVERY = "meal_delivery"
    MEDICAL_APPOINTMENT = "medical_appointment"
    LEGAL_ADVICE = "legal_advice"
    EMPLOYMENT_SUPPORT = "employment_support"
    HOME_VISIT = "home_visit"
    OTHER = "other"
    ERASED = "erased"
    """Only read back, never recorded: the kind of a service to a client whose data was
    erased (``EraseClient``; ``casetrail_platform.keys.fields``)."""


class LocationKind(StrEnum):
    """Where a service takes place."""

    CLIENT_HOME = "client_home"
    PROVIDER_SITE = "provider_site"
    AGENCY_OFFICE = "agency_office"
    REMOTE = "remote"
    OTHER = "other"


class ServiceLocation(CatalogValue):
    """Where the service takes place; with an address when the kind does not make it obvious."""

    kind: LocationKind
    address: Annotated[NonEmptyStr | None, Personal] = Field(
        default=None,
        description="Personal: often the client's own or a relative's address.",
    )


class CancelledBy(StrEnum):
    """Which party called a service off."""

    CLIENT = "client"
    PROVIDER = "provider"
    AGENCY = "agency"


def ends_after_start(ends_at: datetime, info: ValidationInfo) -> datetime:
    starts_at = info.data.get("starts_at")
    # Absent when starts_at itself failed validation; that error is already reported.
    if starts_at is not None and ends_at <= starts_at:
        raise ValueError("ends_at must be after starts_at")
    return ends_at


class ServiceScheduled(CaseEvent):
    """A service for the client was scheduled with a provider."""

    event_type: ClassVar[str] = "casetrail.service.scheduled"
    schema_version: ClassVar[int] = 2

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


class ServiceRescheduled(CaseEvent):
    """A scheduled service was moved to another slot (and possibly another place)."""

    event_type: ClassVar[str] = "casetrail.service.rescheduled"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    service_id: Identifier
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    location: ServiceLocation
    reason: SensitiveNote

    _ends_after_start = field_validator("ends_at")(ends_after_start)


class ServiceCancelled(CaseEvent):
    """A scheduled service was called off."""

    event_type: ClassVar[str] = "casetrail.service.cancelled"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    service_id: Identifier
    cancelled_by: CancelledBy
    reason: SensitiveNote


class ServiceDelivered(CaseEvent):
    """A scheduled service took place; the times are when it actually did."""

    event_type: ClassVar[str] = "casetrail.service.delivered"

    case_id: Identifier
    service_id: Identifier
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    note: SensitiveNote | None = None

    _ends_after_start = field_validator("ends_at")(ends_after_start)
