"""The initial assessment: the whole situation of the client, the foundation of the case."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr
from events.catalog.values import (
    CatalogValue,
    Note,
    SensitiveNeedCategory,
    SensitiveNote,
    Urgency,
)


class AssessmentFactors(CatalogValue):
    """The client's situation seen from each angle the assessment must cover.

    Psychosocial, biological, psychological and cultural findings are sensitive (health,
    mental health, beliefs); social and economic findings are not.
    """

    psychosocial: SensitiveNote | None = None
    biological: SensitiveNote | None = None
    psychological: SensitiveNote | None = None
    cultural: SensitiveNote | None = None
    social: Note | None = None
    economic: Note | None = None


class RiskSeverity(StrEnum):
    """How serious a risk to the client or others is."""

    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    CRITICAL = "critical"


class Risk(CatalogValue):
    """A risk found at assessment (e.g. eviction, self-neglect, relapse)."""

    description: SensitiveNote
    severity: RiskSeverity


class AssessedNeed(CatalogValue):
    """A need confirmed by the assessment, with how soon it must be met."""

    category: SensitiveNeedCategory
    urgency: Urgency
    description: SensitiveNote | None = None


class InitialAssessmentRecorded(CaseEvent):
    """The initial assessment of the client's situation, strengths, resources, risks and needs
    was recorded."""

    event_type: ClassVar[str] = "casetrail.initial_assessment.recorded"

    case_id: Identifier
    assessment_id: Identifier
    factors: AssessmentFactors
    strengths: tuple[NonEmptyStr, ...] = Field(
        default=(), description="What the client can build on, e.g. a supportive sister."
    )
    resources: tuple[NonEmptyStr, ...] = Field(
        default=(), description="What the client already has, e.g. a pension, a car."
    )
    risks: tuple[Risk, ...] = ()
    needs: Annotated[tuple[AssessedNeed, ...], Field(min_length=1)]
