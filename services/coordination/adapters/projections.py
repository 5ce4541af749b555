"""Coordination's read models.

``CaseFactsProjection`` is fed from the bus with intake's facts (the case's client and needs,
closure, clients' dates of birth). ``AssignmentsProjection`` is fed from coordination's own
store: who carries each case, the basis of caseloads.
"""

from __future__ import annotations

from collections.abc import Iterable

from casetrail_platform.projections.erasure import scrub_cases
from casetrail_platform.projections.port import Document, DocumentTransaction, Projection
from events.catalog.assessment import InitialAssessmentRecorded
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.cases import CaseClosed, CaseOpened, CaseReopened
from events.catalog.clients import ClientRegistered
from events.catalog.erasure import ClientErased
from events.catalog.values import NeedCategory
from events.envelope import RecordedEvent

CASE_FACTS = "case_facts"
CLIENTS = "clients"
ASSIGNMENTS = "assignments"


class CaseFactsProjection(Projection):
    name = "case-facts"
    collections = (CASE_FACTS, CLIENTS)
    event_types = frozenset(
        kind.event_type
        for kind in (
            ClientRegistered,
            CaseOpened,
            InitialAssessmentRecorded,
            CaseClosed,
            CaseReopened,
        )
    )

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        event = recorded.event
        match event:
            case ClientRegistered():
                if event.date_of_birth is not None:
                    await transaction.put(
                        CLIENTS,
                        event.client_id,
                        {
                            "client_id": event.client_id,
                            "date_of_birth": event.date_of_birth.isoformat(),
                        },
                    )
            case CaseOpened():
                document = await _case(transaction, event.case_id)
                document["client_id"] = event.client_id
                document["opened_at"] = recorded.metadata.occurred_at.isoformat()
                _add_needs(document, (need.category for need in event.presenting_needs))
                await transaction.put(CASE_FACTS, event.case_id, document)
            case InitialAssessmentRecorded():
                document = await _case(transaction, event.case_id)
                _add_needs(document, (need.category for need in event.needs))
                await transaction.put(CASE_FACTS, event.case_id, document)
            case CaseClosed() | CaseReopened():
                document = await _case(transaction, event.case_id)
                closed = isinstance(event, CaseClosed)
                document["closed"] = closed
                document["closed_at"] = (
                    recorded.metadata.occurred_at.isoformat() if closed else None
                )
                await transaction.put(CASE_FACTS, event.case_id, document)

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        await scrub_cases(transaction, CASE_FACTS, erased, codes={"needs"})
        # The birth date (personal data, for age rules) goes with the client's key.
        await transaction.delete(CLIENTS, erased.client_id)


class AssignmentsProjection(Projection):
    name = "assignments"
    collections = (ASSIGNMENTS,)

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, CaseAssigned | CaseReassigned):
            await transaction.put(
                ASSIGNMENTS,
                event.case_id,
                {
                    "case_id": event.case_id,
                    "worker_id": event.worker_id,
                    "worker_role": event.worker_role.value,
                },
            )


async def _case(transaction: DocumentTransaction, case_id: str) -> Document:
    # Created by whichever of intake's events arrives first, so no fact depends on order.
    document = await transaction.get(CASE_FACTS, case_id)
    return document or {"case_id": case_id, "client_id": None, "needs": [], "closed": False}


def _add_needs(document: Document, needs: Iterable[NeedCategory]) -> None:
    known: list[str] = document["needs"]
    for need in needs:
        if need.value not in known:
            known.append(need.value)
