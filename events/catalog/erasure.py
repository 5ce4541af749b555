"""Erasure of a client's special-category data (GDPR Art. 17) and the legal holds that forbid it.

Erasure is crypto-shredding: the client's data keys are destroyed, so every sensitive value
sealed with them (``casetrail_platform.keys.fields``) reads as the erasure marker for good, in the
stores, on Kafka, in dead-letter topics and in exports alike, while the events themselves, their
non-sensitive fields and the ledger over them stay as they were. These events carry nothing
sensitive themselves; a hold's legal basis and release reason are personal (since v2): they
tell of the client's circumstances (a lawsuit, an inquiry), and an erasure must reach them.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Personal
from events.catalog.values import Day, Note, require_unique


class ClientErased(CaseEvent):
    """The client's sensitive data was erased: their data keys are destroyed.

    Every service consumes it: keys cached in memory are dropped and read models that held
    sensitive values in the clear replace them with the erasure marker for ``case_ids``.
    """

    event_type: ClassVar[str] = "casetrail.client.erased"
    subject_field: ClassVar[str] = "client_id"

    client_id: Identifier
    case_ids: tuple[Identifier, ...] = Field(
        default=(), description="The client's cases known when it was erased."
    )
    request_reference: NonEmptyStr = Field(
        description="Where the data subject's request and its assessment are kept."
    )

    @field_validator("case_ids")
    @classmethod
    def _cases_are_unique(cls, case_ids: tuple[str, ...]) -> tuple[str, ...]:
        require_unique(case_ids, "case_ids")
        return case_ids


class RetentionHoldPlaced(CaseEvent):
    """A legal obligation to keep the client's records (litigation, a statutory retention
    period, an inquiry): while it holds, ``EraseClient`` is refused naming it."""

    event_type: ClassVar[str] = "casetrail.client.retention_hold_placed"
    schema_version: ClassVar[int] = 2
    subject_field: ClassVar[str] = "client_id"

    client_id: Identifier
    hold_id: Identifier
    legal_basis: Annotated[NonEmptyStr, Personal] = Field(
        description="Why the records must be kept, e.g. 'litigation 2026-CV-113': personal since"
        " v2 (it tells of the client's circumstances), sealed under the client's key."
    )
    until: Day | None = Field(
        default=None, description="When the obligation ends, when known (it is released then)."
    )


class RetentionHoldReleased(CaseEvent):
    """A retention hold no longer applies."""

    event_type: ClassVar[str] = "casetrail.client.retention_hold_released"
    schema_version: ClassVar[int] = 2
    subject_field: ClassVar[str] = "client_id"

    client_id: Identifier
    hold_id: Identifier
    reason: Annotated[Note | None, Personal] = Field(
        default=None,
        description="Why it no longer applies, e.g. 'proceedings closed': personal since v2, as"
        " the legal basis is.",
    )
