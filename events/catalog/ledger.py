"""Integrity of the case history: what audit records when a log's checkpoints do not add up."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from events.catalog.base import CaseEvent, NonEmptyStr

LogOrigin = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^casetrail/[a-z0-9][a-z0-9._-]*/[a-z][a-z0-9_-]*$",
        description="The log's origin, casetrail/<agency>/<service>.",
    ),
]


class LedgerInconsistencyDetected(CaseEvent):
    """Audit found a service's log inconsistent with a checkpoint it held: the service's
    history was changed, lost or forked after it was signed (an alarm to investigate)."""

    event_type: ClassVar[str] = "casetrail.ledger.inconsistency_detected"
    subject_field: ClassVar[str] = "origin"

    origin: LogOrigin
    held_size: int = Field(ge=0, description="Tree size of the last checkpoint audit held.")
    checkpoint_size: int = Field(ge=0, description="Tree size of the checkpoint that failed.")
    first_bad_position: int | None = Field(
        default=None, ge=1, description="First position found wrong, when it could be named."
    )
    problem: NonEmptyStr
