"""Each service's copy of the policy facts, fed from the bus (every service's events)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from events.envelope import RecordedEvent
from events.policy.facts import FACT_EVENT_TYPES, CaseFacts, Entry, entry_of, fold
from events.projections.port import DocumentTransaction, Projection, ReadModelStore

FACTS = "policy_case_facts"


class CaseFactsProjection(Projection):
    """One document per case: the entries of its fact-bearing events (``facts.entry_of``)."""

    name = "policy.case-facts"
    collections = (FACTS,)
    event_types = FACT_EVENT_TYPES

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        entry = entry_of(recorded)
        if entry is None:
            return
        case_id = recorded.event.subject
        document = await transaction.get(FACTS, case_id) or {"case_id": case_id, "entries": []}
        if any(old["event_id"] == entry["event_id"] for old in document["entries"]):
            return
        document["entries"].append(entry)
        if "client_id" in entry:
            document["client_id"] = entry["client_id"]
        await transaction.put(FACTS, case_id, document)


class CaseFactsReader:
    """The policy facts this service has learnt.

    ``own_entries`` lets a service add what its own store already holds (intake's consents):
    those take effect on the very next read, before the bus brings them back.
    """

    def __init__(self, read_models: ReadModelStore) -> None:
        self._read_models = read_models

    async def facts(
        self,
        case_id: str,
        *,
        as_of: datetime | None = None,
        own_entries: Iterable[Entry] = (),
    ) -> CaseFacts:
        document = await self._read_models.get(FACTS, case_id)
        entries = {} if document is None else {e["event_id"]: e for e in document["entries"]}
        entries.update((entry["event_id"], entry) for entry in own_entries)
        return fold(case_id, entries.values(), as_of=as_of)

    async def cases_of_client(self, client_id: str) -> list[str]:
        documents = await self._read_models.find(FACTS, equals={"client_id": client_id})
        return sorted(str(document["case_id"]) for document in documents)
