"""The initial assessment: the whole situation of the client, the foundation of the case."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Personal
from events.catalog.values import (
    CatalogValue,
    Note,
    SensitiveNeedCategory,
    SensitiveNote,
    Urgency,
)

PersonalNote = Annotated[Note, Personal]
"""Free text about the client's private life that is not special-category data (who they live
with, what they live on): personal, sealed under the client's key so that erasure reaches it."""

PersonalLine = Annotated[NonEmptyStr, Personal]
"""A short line about the client's private life (a strength, a resource): personal, sealed each
on its own, so a list keeps its length once erased."""


class AssessmentFactors(CatalogValue):
    """The client's situation seen from each angle the assessment must cover.

    Psychosocial, biological, psychological and cultural findings are sensitive (health,
    mental health, beliefs). Social and economic findings are personal (since
    initial_assessment.recorded v2; before, they were left unmarked as not special-category):
    they tell of the client's private life ("Widowed, lives alone", "State pension of 1,850
    USD a month") and identify them, and an erasure must reach them.
    """

    psychosocial: SensitiveNote | None = None
    biological: SensitiveNote | None = None
    psychological: SensitiveNote | None = None
    cultural: SensitiveNote | None = None
    social: PersonalNote | None = None
    economic: PersonalNote | None = None


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
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    assessment_id: Identifier
    factors: AssessmentFactors
    strengths: tuple[PersonalLine, ...] = Field(
        default=(),
        description="What the client can build on, e.g. a supportive sister (each personal"
        " since v2).",
    )
    resources: tuple[PersonalLine, ...] = Field(
        default=(),
        description="What the client already has, e.g. a pension, a car (each personal since v2).",
    )
    risks: tuple[Risk, ...] = ()
    needs: Annotated[tuple[AssessedNeed, ...], Field(min_length=1)]
