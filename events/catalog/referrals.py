"""Referrals (orientation) of the client to outside agencies and professionals."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from events.catalog.access import DisclosureBasis
from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Personal, Sensitive
from events.catalog.values import Day, Provider, SensitiveNeedCategory, SensitiveNote, Urgency


class ReferralMade(CaseEvent):
    """The client was referred to an agency or professional for a service."""

    event_type: ClassVar[str] = "casetrail.referral.made"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    referral_id: Identifier
    provider: Provider
    need_category: SensitiveNeedCategory
    service: Annotated[NonEmptyStr, Sensitive] = Field(
        description="The service asked for, e.g. addiction counseling."
    )
    urgency: Urgency
    reason: SensitiveNote
    disclosure_basis: DisclosureBasis | None = Field(
        default=None,
        description="Why the referral could disclose the case to the provider; absent in v1.",
    )
    consent_id: Identifier | None = Field(
        default=None, description="The client's consent that covered the disclosure."
    )


class ReferralAccepted(CaseEvent):
    """The agency or professional accepted the referral."""

    event_type: ClassVar[str] = "casetrail.referral.accepted"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    referral_id: Identifier
    provider_id: Identifier
    expected_start_date: Day | None = None
    contact_person: Annotated[NonEmptyStr | None, Personal] = None


class ReferralDeclined(CaseEvent):
    """The agency or professional declined the referral."""

    event_type: ClassVar[str] = "casetrail.referral.declined"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    referral_id: Identifier
    provider_id: Identifier
    reason: SensitiveNote


class ReferralCompleted(CaseEvent):
    """The service the client was referred for has ended, with its outcome."""

    event_type: ClassVar[str] = "casetrail.referral.completed"

    case_id: Identifier
    referral_id: Identifier
    provider_id: Identifier
    outcome: SensitiveNote


class ReferralWithdrawn(CaseEvent):
    """The referring agency called the referral off before it ended: the client changed their
    mind, the need went away, the provider was the wrong one, or the case was closed. The
    provider's part in the case ends with it, as with a completion."""

    event_type: ClassVar[str] = "casetrail.referral.withdrawn"

    case_id: Identifier
    referral_id: Identifier
    provider_id: Identifier
    reason: SensitiveNote = Field(
        description="Why it was withdrawn; it often speaks of the client (sealed)."
    )
