"""The review queue: every emergency access intake recorded, when it was closed early if it was,
and its review once there is one.

A projection of intake's own store (the host's follower keeps it fresh), one document per
access, keyed by its id. It copies the reason and the review's note (both sensitive) in the
clear, so it forgets them when the client is erased; the access itself stays, and so does the
duty to review it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from casetrail_platform.projections.erasure import CaseErasure, erased_marks, scrub
from casetrail_platform.projections.port import (
    Document,
    DocumentTransaction,
    Projection,
    ReadModelStore,
)
from events.catalog.emergency import (
    EmergencyAccessClosed,
    EmergencyAccessOpened,
    EmergencyAccessReviewed,
)
from events.catalog.erasure import ClientErased
from events.envelope import RecordedEvent

EMERGENCY_ACCESSES = "intake_emergency_accesses"
SENSITIVE_TEXTS = ("reason", "note")
"""The free text of an access document that the catalog marks sensitive: the access's reason
and its review's note."""
QUEUE_SCAN_LIMIT = 10_000
"""Documents read to build one queue, those awaiting review first; past it the queue is answered
truncated. An agency with more unreviewed accesses than this has a bigger problem than its
queue's order."""


@dataclass(frozen=True, slots=True)
class Review:
    reviewer_id: str
    reviewer_role: str
    outcome: str
    note: str | None
    reviewed_at: datetime


@dataclass(frozen=True, slots=True)
class EmergencyAccessEntry:
    emergency_access_id: str
    case_id: str
    grantee_id: str
    grantee_role: str
    grantee_agency_id: str
    grantee_team: str | None
    reason: str
    opened_at: datetime
    expires_at: datetime
    review: Review | None
    closed_at: datetime | None = None


class EmergencyAccessesProjection(Projection):
    name = "intake.emergency-accesses"
    collections = (EMERGENCY_ACCESSES, erased_marks(EMERGENCY_ACCESSES))
    event_types = frozenset(
        {
            EmergencyAccessOpened.event_type,
            EmergencyAccessReviewed.event_type,
            EmergencyAccessClosed.event_type,
        }
    )

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, EmergencyAccessOpened):
            document = {**event.model_dump(mode="json"), "reviewed": False, "review": None}
            await ERASURE.settle(transaction, event.case_id, document)
            await transaction.put(EMERGENCY_ACCESSES, event.emergency_access_id, document)
        elif isinstance(event, EmergencyAccessReviewed):
            found = await transaction.get(EMERGENCY_ACCESSES, event.emergency_access_id)
            if found is None:
                return
            found["reviewed"] = True
            found["review"] = {
                "reviewer_id": event.reviewer_id,
                "reviewer_role": event.reviewer_role.value,
                "outcome": event.outcome.value,
                "note": event.note,
                "reviewed_at": recorded.recorded_at.isoformat(),
            }
            if found.get("erased"):
                # Reviewed after the client's erasure (the duty to review stays): the note is
                # about the erased client too, and is not kept either.
                scrub(found, texts=SENSITIVE_TEXTS)
            await transaction.put(EMERGENCY_ACCESSES, event.emergency_access_id, found)
        elif isinstance(event, EmergencyAccessClosed):
            found = await transaction.get(EMERGENCY_ACCESSES, event.emergency_access_id)
            if found is None:
                return
            found["closed_at"] = event.closed_at.isoformat()
            await transaction.put(EMERGENCY_ACCESSES, event.emergency_access_id, found)

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        await ERASURE.erase(transaction, erased)


def _forget(document: Document) -> None:
    scrub(document, texts=SENSITIVE_TEXTS)
    document["erased"] = True


ERASURE = CaseErasure(EMERGENCY_ACCESSES, _forget, key_field="emergency_access_id")
"""Also for an access opened after the erasure in the store's order: decided before it was
recorded, its reason sealed before the key was destroyed."""


class EmergencyAccessQueue:
    """What the review queue reads."""

    def __init__(self, read_models: ReadModelStore) -> None:
        self._read_models = read_models

    async def entries(
        self, *, include_reviewed: bool, case_id: str | None
    ) -> tuple[list[EmergencyAccessEntry], bool]:
        """The entries, at most ``QUEUE_SCAN_LIMIT``, and whether more matched. Those awaiting
        review are read first: the store returns documents in key order, so a scan of both
        kinds at once could be filled by years of reviewed accesses and leave out one whose
        review is overdue."""
        documents: list[Document] = []
        for reviewed in (False, True) if include_reviewed else (False,):
            equals: dict[str, str | int | bool] = {"reviewed": reviewed}
            if case_id is not None:
                equals["case_id"] = case_id
            room = QUEUE_SCAN_LIMIT - len(documents)
            # One more than there is room for tells whether the scan was cut short.
            documents += await self._read_models.find(
                EMERGENCY_ACCESSES, equals=equals, limit=room + 1
            )
            if len(documents) > QUEUE_SCAN_LIMIT:
                return [_entry(document) for document in documents[:QUEUE_SCAN_LIMIT]], True
        return [_entry(document) for document in documents], False


def _entry(document: dict[str, Any]) -> EmergencyAccessEntry:
    review = document.get("review")
    closed = document.get("closed_at")
    return EmergencyAccessEntry(
        emergency_access_id=document["emergency_access_id"],
        case_id=document["case_id"],
        grantee_id=document["grantee_id"],
        grantee_role=document["grantee_role"],
        grantee_agency_id=document["grantee_agency_id"],
        grantee_team=document.get("grantee_team"),
        reason=document["reason"],
        opened_at=datetime.fromisoformat(document["opened_at"]),
        expires_at=datetime.fromisoformat(document["expires_at"]),
        review=None
        if review is None
        else Review(
            reviewer_id=review["reviewer_id"],
            reviewer_role=review["reviewer_role"],
            outcome=review["outcome"],
            note=review.get("note"),
            reviewed_at=datetime.fromisoformat(review["reviewed_at"]),
        ),
        closed_at=None if closed is None else datetime.fromisoformat(closed),
    )
