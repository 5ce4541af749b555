"""What coordination can be asked to do. Built with ``validated`` from the request, so a command
that exists has well-formed values; the decisions only check business rules."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from events.catalog.access import DisclosureBasis
from events.catalog.base import Identifier, NonEmptyStr
from events.catalog.eligibility import EligibilityFacts
from events.catalog.funding import ClaimDecision
from events.catalog.scheduling import (
    CancelledBy,
    ServiceKind,
    ServiceLocation,
    ends_after_start,
)
from events.catalog.values import (
    Money,
    NeedCategory,
    Note,
    Provider,
    SensitiveNote,
    Urgency,
    require_unique,
)
from services.coordination.domain.agency import residence_code


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    case_id: Identifier


def _positive(money: Money) -> Money:
    if money.amount_minor_units <= 0:
        raise ValueError("amount_minor_units must be above zero")
    return money


class AssignCase(Command):
    worker_id: Identifier
    reason: NonEmptyStr | None = None


class TransferCase(Command):
    worker_id: Identifier
    reason: NonEmptyStr


class MakeReferral(Command):
    provider: Provider
    need_category: NeedCategory
    service: NonEmptyStr
    urgency: Urgency
    reason: SensitiveNote
    disclosure_basis: DisclosureBasis = DisclosureBasis.CONSENT
    """``consent`` unless a documented exception applies (``legal_obligation``, or
    ``emergency`` under the caller's open break-the-glass access)."""


class AcceptReferral(Command):
    referral_id: Identifier
    provider_id: Identifier
    expected_start_date: date | None = None
    contact_person: NonEmptyStr | None = None


class DeclineReferral(Command):
    referral_id: Identifier
    provider_id: Identifier
    reason: Note


class CompleteReferral(Command):
    referral_id: Identifier
    provider_id: Identifier
    outcome: SensitiveNote


class WithdrawReferral(Command):
    referral_id: Identifier
    reason: SensitiveNote


class ScheduleService(Command):
    kind: ServiceKind
    provider: Provider
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    location: ServiceLocation
    referral_id: Identifier | None = None
    goal_id: Identifier | None = None

    _ends_after_start = field_validator("ends_at")(ends_after_start)


class RescheduleService(Command):
    service_id: Identifier
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    location: ServiceLocation | None = None
    reason: Note

    _ends_after_start = field_validator("ends_at")(ends_after_start)


class CancelService(Command):
    service_id: Identifier
    cancelled_by: CancelledBy
    reason: Note


class RecordServiceDelivered(Command):
    service_id: Identifier
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    note: SensitiveNote | None = None

    _ends_after_start = field_validator("ends_at")(ends_after_start)


class DetermineEligibility(Command):
    program_id: Identifier
    facts: EligibilityFacts = EligibilityFacts()

    @model_validator(mode="before")
    @classmethod
    def _residence_code(cls, data: Any) -> Any:
        # Recorded as compared: the decision's facts show the code the rule was checked on.
        # Made before the facts are checked, so their bounds hold for the code recorded: lower
        # case may be longer ("İ" is two characters), and a copy of checked facts would put
        # an event no reader accepts into the store.
        if not isinstance(data, dict):
            return data
        facts = data.get("facts")
        if isinstance(facts, EligibilityFacts):
            facts = facts.model_dump()
        if not isinstance(facts, dict) or not isinstance(facts.get("residence"), str):
            return data
        return {**data, "facts": {**facts, "residence": residence_code(facts["residence"])}}


class ReserveBudget(Command):
    budget_line: Identifier
    amount: Money
    service_id: Identifier | None = None

    _amount_positive = field_validator("amount")(_positive)


class ReleaseBudget(Command):
    budget_line: Identifier
    reservation_id: Identifier
    amount: Money | None = None
    reason: NonEmptyStr

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, amount: Money | None) -> Money | None:
        return None if amount is None else _positive(amount)


class FileInsuranceClaim(Command):
    insurer: Provider
    policy_number: NonEmptyStr | None = None
    amount_claimed: Money
    service_ids: Annotated[tuple[Identifier, ...], Field(min_length=1)]

    _amount_positive = field_validator("amount_claimed")(_positive)

    @field_validator("service_ids")
    @classmethod
    def _unique(cls, service_ids: tuple[str, ...]) -> tuple[str, ...]:
        require_unique(service_ids, "service_ids")
        return service_ids


class RecordClaimDecision(Command):
    claim_id: Identifier
    insurer_id: Identifier
    decision: ClaimDecision
    amount_approved: Money
    reason: Note | None = None
