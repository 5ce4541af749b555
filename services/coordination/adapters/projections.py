"""Coordination's read models.

``CaseFactsProjection`` is fed from the bus with intake's facts (the case's client and needs,
closures and reopenings, clients' dates of birth). ``AssignmentsProjection`` is fed from
coordination's own store: who carries each case, the basis of caseloads.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable
from datetime import datetime

from casetrail_platform.projections.erasure import CaseErasure, erased_marks, scrubbing
from casetrail_platform.projections.port import (
    Document,
    DocumentTransaction,
    Projection,
    ReadModelStore,
    RetiredLayout,
)
from events.catalog.assessment import InitialAssessmentRecorded
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.cases import CaseClosed, CaseOpened, CaseReopened
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered
from events.catalog.erasure import ClientErased
from events.catalog.values import NeedCategory
from events.envelope import RecordedEvent

CASE_FACTS = "case_facts_v3"
CLIENTS = "clients_v3"
ASSIGNMENTS = "assignments"

RETIRED = "case-facts"
RETIRED_COLLECTIONS = ("case_facts", "clients", erased_marks("case_facts"))
"""The projection before ``v3`` and its collections: a case's document counted its closures
and reopenings but kept only the last closure's moment, so once the case was reopened nothing
told when it had been closed, and care was booked, delivered and claimed inside that time.
``retire_old_layout`` deletes them at coordination's start, and the projection again later
(``Projection.retired``)."""


class CaseFactsProjection(Projection):
    name = "case-facts-v3"
    """v3: a new name and new collections, so a deployment builds it again from the bus
    (``RETIRED``). Not v2: ``casetrail rebuild`` and the chart's topology name a projection
    without its prefix, and ``case-facts-v2`` is the policy's (``policy.case-facts-v2``)."""
    collections = (CASE_FACTS, CLIENTS, erased_marks(CASE_FACTS))
    retired = (RetiredLayout(RETIRED, RETIRED_COLLECTIONS),)
    event_types = frozenset(
        kind.event_type
        for kind in (
            ClientRegistered,
            ClientDateOfBirthCorrected,
            CaseOpened,
            InitialAssessmentRecorded,
            CaseClosed,
            CaseReopened,
        )
    )

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        event = recorded.event
        match event:
            # The date of birth the client's record says now: the registration's, then each
            # correction's, in the order of their stream (one arriving late, dead-lettered and
            # replayed, is older than the one kept). Read after an erasure, they hold none, and
            # the erasure deleted the document.
            case ClientRegistered() | ClientDateOfBirthCorrected():
                known = await transaction.get(CLIENTS, event.client_id)
                if known is not None and known.get("sequence", 0) > recorded.sequence:
                    return
                if event.date_of_birth is not None:
                    await transaction.put(
                        CLIENTS,
                        event.client_id,
                        {
                            "client_id": event.client_id,
                            "date_of_birth": event.date_of_birth.isoformat(),
                            "sequence": recorded.sequence,
                        },
                    )
            case CaseOpened():
                document = await _case(transaction, event.case_id)
                document["client_id"] = event.client_id
                document["opened_at"] = recorded.metadata.occurred_at.isoformat()
                document["presented_needs"] = _codes(n.category for n in event.presenting_needs)
                _settle_needs(document)
                await _put_case(transaction, document)
            case InitialAssessmentRecorded():
                document = await _case(transaction, event.case_id)
                assessments = document.setdefault("assessments", [])
                if all(a["sequence"] != recorded.sequence for a in assessments):
                    needs = _codes(need.category for need in event.needs)
                    assessments.append({"sequence": recorded.sequence, "needs": needs})
                    assessments.sort(key=lambda assessment: assessment["sequence"])
                _settle_needs(document)
                await _put_case(transaction, document)
            case CaseClosed() | CaseReopened():
                document = await _case(transaction, event.case_id)
                moments = document["closures" if isinstance(event, CaseClosed) else "reopenings"]
                # Planning records closures and intake reopenings: on two topics they arrive
                # in either order, so each list is kept in time order, and a replay in another
                # order ends in the same document.
                insort(
                    moments,
                    recorded.metadata.occurred_at.isoformat(),
                    key=datetime.fromisoformat,
                )
                await _put_case(transaction, document)

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        await ERASURE.erase(transaction, erased)
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


async def _put_case(transaction: DocumentTransaction, document: Document) -> None:
    case_id = document["case_id"]
    await ERASURE.settle(transaction, case_id, document)
    await transaction.put(CASE_FACTS, case_id, document)


async def _case(transaction: DocumentTransaction, case_id: str) -> Document:
    # Created by whichever of intake's events arrives first, so no fact depends on order.
    return await transaction.get(CASE_FACTS, case_id) or {
        "case_id": case_id,
        "client_id": None,
        "needs": [],
        "presented_needs": [],
        "assessments": [],
        "closures": [],
        "reopenings": [],
    }


async def retire_old_layout(read_models: ReadModelStore) -> None:
    """Delete what the projection before ``v3`` left (nothing once done: a no-op after)."""
    # Its documents held the case's needs, and its clients their dates of birth: no copy stays.
    await read_models.retire(CaseFactsProjection.retired)


def _settle_erased(document: Document) -> None:
    # Each need once, as ``_codes`` keeps them: the marker once, as a rebuild would.
    document["presented_needs"] = _codes(document["presented_needs"])
    for assessment in document["assessments"]:
        assessment["needs"] = _codes(assessment["needs"])
    _settle_needs(document)


def _settle_needs(document: Document) -> None:
    """The case's needs: those it presented with, then those each assessment found, in the
    order of intake's stream whatever order they arrived in."""
    presented = document["presented_needs"]
    assessed = (need for a in document["assessments"] for need in a["needs"])
    document["needs"] = _codes([*presented, *assessed])


def _codes(needs: Iterable[NeedCategory | str]) -> list[str]:
    return list(dict.fromkeys(str(need) for need in needs))  # a StrEnum's str is its value


ERASURE = CaseErasure(
    CASE_FACTS, scrubbing(codes={"needs", "presented_needs"}, settle=_settle_erased)
)
