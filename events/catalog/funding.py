"""Paying for services: agency budget reservations and insurance claims."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Personal
from events.catalog.values import Money, Provider, SensitiveNote


class BudgetReserved(CaseEvent):
    """Money was reserved on an agency budget line for a service of the case."""

    event_type: ClassVar[str] = "casetrail.budget.reserved"

    case_id: Identifier
    reservation_id: Identifier
    budget_line: Identifier
    amount: Money
    service_id: Identifier | None = None


class BudgetReleased(CaseEvent):
    """A budget reservation was given back, in full or in part."""

    event_type: ClassVar[str] = "casetrail.budget.released"

    case_id: Identifier
    reservation_id: Identifier
    budget_line: Identifier
    amount: Money
    service_id: Identifier | None = None
    reason: NonEmptyStr


class InsuranceClaimFiled(CaseEvent):
    """A claim was filed with the client's insurer for services of the case."""

    event_type: ClassVar[str] = "casetrail.insurance_claim.filed"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    claim_id: Identifier
    insurer: Provider
    policy_number: Annotated[NonEmptyStr | None, Personal] = None
    amount_claimed: Money
    service_ids: Annotated[tuple[Identifier, ...], Field(min_length=1)]


class ClaimDecision(StrEnum):
    """What the insurer decided about a claim."""

    APPROVED = "approved"
    DENIED = "denied"
    PARTIAL = "partial"


class InsuranceClaimDecided(CaseEvent):
    """The insurer decided a claim: approved, denied or partly approved."""

    event_type: ClassVar[str] = "casetrail.insurance_claim.decided"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    claim_id: Identifier
    insurer_id: Identifier
    decision: ClaimDecision
    amount_approved: Money
    reason: SensitiveNote | None = Field(default=None, validate_default=True)

    @field_validator("amount_approved")
    @classmethod
    def _amount_fits_decision(cls, amount: Money, info: ValidationInfo) -> Money:
        decision = info.data.get("decision")
        if decision is ClaimDecision.DENIED and amount.amount_minor_units != 0:
            raise ValueError("amount_approved must be zero when the decision is denied")
        if decision in (ClaimDecision.APPROVED, ClaimDecision.PARTIAL) and (
            amount.amount_minor_units == 0
        ):
            raise ValueError(f"amount_approved must be above zero when the decision is {decision}")
        return amount

    @field_validator("reason")
    @classmethod
    def _reason_unless_approved(cls, reason: str | None, info: ValidationInfo) -> str | None:
        decision = info.data.get("decision")
        if reason is None and decision in (ClaimDecision.DENIED, ClaimDecision.PARTIAL):
            raise ValueError(f"reason is required when the decision is {decision}")
        return reason
