"""Decisions on which state-provided resources and programmes the client qualifies for."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Personal
from events.catalog.clients import PersonalText
from events.catalog.values import CatalogValue, Day, Money


class EligibilityFacts(CatalogValue):
    """The facts the decision was based on, as known when it was made. Each is personal since
    ``eligibility.determined`` v2 (the client's age, income, household and residence), sealed
    on its own: after the client's erasure each reads absent."""

    age: Annotated[Annotated[int, Field(ge=0, le=150)] | None, Personal] = None
    monthly_income: Annotated[Money | None, Personal] = None
    household_size: Annotated[Annotated[int, Field(ge=1, le=100)] | None, Personal] = None
    residence: Annotated[NonEmptyStr | None, Personal] = Field(
        default=None, description="Jurisdiction of residence, e.g. a municipality code."
    )


class EligibilityDetermined(CaseEvent):
    """It was determined whether the client qualifies for a programme, and why."""

    event_type: ClassVar[str] = "casetrail.eligibility.determined"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    program_id: Identifier
    program_name: NonEmptyStr
    eligible: bool
    reasons: Annotated[tuple[PersonalText, ...], Field(min_length=1)] = Field(
        description="Why, e.g. 'age 82 is at least the minimum of 65': each personal since v2"
        " (they state the client's age and income), sealed on its own."
    )
    facts: EligibilityFacts
    valid_until: Day | None = None
