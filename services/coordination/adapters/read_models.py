"""Reading coordination's read models, as the domain's values."""

from __future__ import annotations

from datetime import date, datetime

from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.store.port import EventStore
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.values import NeedCategory
from services.coordination.adapters.projections import (
    ASSIGNMENTS,
    CASE_FACTS,
    CLIENTS,
    AssignmentsProjection,
)
from services.coordination.domain.facts import CaseFacts, ClosedPeriod

_TAIL_BATCH = 500


async def case_facts(read_models: ReadModelStore, case_id: str) -> CaseFacts | None:
    """What intake told us of the case; ``None`` until its opening has come over the bus."""
    document = await read_models.get(CASE_FACTS, case_id)
    if document is None or document.get("client_id") is None:
        return None
    closures = [datetime.fromisoformat(moment) for moment in document["closures"]]
    reopenings = [datetime.fromisoformat(moment) for moment in document["reopenings"]]
    # Every reopening follows a closure, so the counts tell which came last (as planning's
    # case view and the policy facts tell it), and the n-th reopening ended the n-th closure.
    closed = len(closures) > len(reopenings)
    last_closed_at = closures[-1] if closures else None
    return CaseFacts(
        case_id=case_id,
        client_id=document["client_id"],
        needs=tuple(NeedCategory(need) for need in document["needs"]),
        closed=closed,
        opened_at=_moment(document.get("opened_at")),
        closed_at=last_closed_at if closed else None,
        last_closed_at=last_closed_at,
        closed_periods=tuple(
            ClosedPeriod(closure, reopening)
            for closure, reopening in zip(closures, reopenings, strict=False)
        ),
    )


async def cases_of_client(read_models: ReadModelStore, client_id: str) -> list[str]:
    """The client's cases whose openings intake told us of."""
    return sorted(
        document["case_id"]
        for document in await read_models.find(CASE_FACTS, equals={"client_id": client_id})
    )


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


async def date_of_birth(read_models: ReadModelStore, client_id: str) -> date | None:
    document = await read_models.get(CLIENTS, client_id)
    return None if document is None else date.fromisoformat(document["date_of_birth"])


async def assignments(
    store: EventStore, read_models: ReadModelStore, worker_id: str | None = None
) -> dict[str, str]:
    """Case id -> worker id for every assigned case (or the cases of one worker), exact up to
    the newest event of the store.

    The projection may lag the store by a few events; those are folded in from the store, so
    an assignment decided right after another one counts it.
    """
    async with read_models.transaction() as transaction:
        position = await transaction.position(AssignmentsProjection.name)
        documents = await transaction.find(
            ASSIGNMENTS, None if worker_id is None else {"worker_id": worker_id}
        )
    carried = {document["case_id"]: document["worker_id"] for document in documents}
    while batch := await store.read_all(position, _TAIL_BATCH):
        for recorded in batch:
            event = recorded.event
            if isinstance(event, CaseAssigned | CaseReassigned):
                carried[event.case_id] = event.worker_id
        position = batch[-1].position
    if worker_id is None:
        return carried
    return {case: worker for case, worker in carried.items() if worker == worker_id}


async def open_cases(read_models: ReadModelStore, case_ids: list[str]) -> list[str]:
    """Those of ``case_ids`` intake has not closed."""
    still_open = []
    for case_id in case_ids:
        facts = await case_facts(read_models, case_id)
        if facts is None or not facts.closed:
            still_open.append(case_id)
    return still_open


async def caseloads(store: EventStore, read_models: ReadModelStore) -> dict[str, int]:
    """Worker id -> number of open cases they carry."""
    carried = await assignments(store, read_models)
    counts: dict[str, int] = {}
    for case_id in await open_cases(read_models, list(carried)):
        counts[carried[case_id]] = counts.get(carried[case_id], 0) + 1
    return counts


async def caseload(store: EventStore, read_models: ReadModelStore, worker_id: str) -> int:
    carried = await assignments(store, read_models, worker_id)
    return len(await open_cases(read_models, list(carried)))
