"""Coordination's read models.

``CaseFactsProjection`` is fed from the bus with intake's facts (the case's client and needs,
closure, clients' dates of birth). ``AssignmentsProjection`` is fed from coordination's own
store: who carries each case, the basis of caseloads.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from casetrail_platform.projections.erasure import CaseErasure, erased_marks, scrubbing
from casetrail_platform.projections.port import Document, DocumentTransaction, Projection
from events.catalog.assessment import InitialAssessmentRecorded
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.cases import CaseClosed, CaseOpened, CaseReopened
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered
from events.catalog.erasure import ClientErased
from events.catalog.values import NeedCategory
from events.envelope import RecordedEvent

CASE_FACTS = "case_facts"
CLIENTS = "clients"
ASSIGNMENTS = "assignments"


class CaseFactsProjection(Projection):
    name = "case-facts"
    collections = (CASE_FACTS, CLIENTS, erased_marks(CASE_FACTS))
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
                _count_closure(document, event, recorded)
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
    document = await transaction.get(CASE_FACTS, case_id)
    if document is not None and "presented_needs" not in document:
        # Kept before the opening's and assessments' needs were: those it holds stay, as
        # if assessed before anything still to come.
        kept = document["needs"]
        document["presented_needs"] = []
        document["assessments"] = [{"sequence": 0, "needs": kept}] if kept else []
    return document or {
        "case_id": case_id,
        "client_id": None,
        "needs": [],
        "presented_needs": [],
        "assessments": [],
        "closed": False,
        "closures": 0,
        "reopens": 0,
        "last_closed_at": None,
    }


def _count_closure(
    document: Document, event: CaseClosed | CaseReopened, recorded: RecordedEvent
) -> None:
    # Planning records closures and intake reopenings: on two topics they may arrive in either
    # order, so the counts decide (every reopening follows a closure), as planning's case view
    # and the policy facts do, and a replay in another order ends in the same document.
    if "closures" not in document:  # kept before the counts: as good a start as any
        document["closures"], document["reopens"] = int(document["closed"]), 0
        document["last_closed_at"] = document.get("closed_at")
    if isinstance(event, CaseClosed):
        document["closures"] += 1
        moment = recorded.metadata.occurred_at.isoformat()
        last = document["last_closed_at"]
        if last is None or datetime.fromisoformat(last) < recorded.metadata.occurred_at:
            document["last_closed_at"] = moment
    else:
        document["reopens"] += 1
    document["closed"] = document["closures"] > document["reopens"]
    document["closed_at"] = document["last_closed_at"] if document["closed"] else None


def _settle_erased(document: Document) -> None:
    # Each need once, as ``_codes`` keeps them: the marker once, as a rebuild would.
    if "presented_needs" not in document:  # kept before they were: its needs alone
        document["needs"] = _codes(document["needs"])
        return
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
