"""Each service's copy of the policy facts, fed from the bus (every service's events)."""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Sequence
from datetime import datetime

from casetrail_platform.policy.facts import (
    FACT_EVENT_TYPES,
    CaseFacts,
    Entry,
    entry_of,
    fold,
    stored_order,
)
from casetrail_platform.policy.facts_cache import CachedFacts, CaseFactsCache
from casetrail_platform.projections.erasure import CaseErasure, erased_marks
from casetrail_platform.projections.port import (
    Document,
    DocumentTransaction,
    Projection,
    ReadModelStore,
    RetiredLayout,
)
from events.catalog.erasure import ClientErased
from events.envelope import RecordedEvent

FACTS = "policy_case_facts_v2"

RETIRED = "policy.case-facts"
RETIRED_COLLECTIONS = ("policy_case_facts", erased_marks("policy_case_facts"))
"""The projection before ``v2`` and its collections: a consent's entry there did not keep its
recipient's kind, so a consent to an agency could not be told from one to a person of the same
id and covered no one. ``retire_old_facts_layout`` deletes them at the service's start, and
the projection again later (``Projection.retired``)."""


class CaseFactsProjection(Projection):
    """One document per case: the entries of its fact-bearing events (``facts.entry_of``)."""

    name = "policy.case-facts-v2"
    """v2: a new name and new collections, so a deployment builds it again from the bus
    (``RETIRED``)."""
    collections = (FACTS, erased_marks(FACTS))
    retired = (RetiredLayout(RETIRED, RETIRED_COLLECTIONS),)
    event_types = FACT_EVENT_TYPES

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        entry = entry_of(recorded)
        if entry is None:
            return
        case_id = recorded.event.subject
        document = await transaction.get(FACTS, case_id) or {"case_id": case_id, "entries": []}
        if any(old["event_id"] == entry["event_id"] for old in document["entries"]):
            return
        insort(document["entries"], entry, key=stored_order)
        if "client_id" in entry:
            document["client_id"] = entry["client_id"]
        await ERASURE.settle(transaction, case_id, document)
        await transaction.put(FACTS, case_id, document)

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        await ERASURE.erase(transaction, erased)


def _forget_categories(document: Document) -> None:
    # The categories of need the case held are the client's health data, and so are the
    # categories a consent names (sealed in the event since consent.granted v3): both are
    # forgotten. The consents themselves stay, bounding disclosures by recipient, purpose
    # and sections; with no category left a consent covers none (it fails closed, as the
    # event's sealed categories read once the key is destroyed: empty).
    for entry in document["entries"]:
        if "categories" in entry:
            entry["categories"] = []


ERASURE = CaseErasure(FACTS, _forget_categories)
"""Also when the erasure arrives before the case's events (``CaseErasure``)."""


async def retire_old_facts_layout(read_models: ReadModelStore) -> None:
    """Delete what the projection before ``v2`` left (nothing once done: a no-op after)."""
    # Its entries held the categories of need and of consents, health data: no copy stays.
    await read_models.retire(CaseFactsProjection.retired)


class CaseFactsReader:
    """The policy facts this service has learnt.

    ``own_entries`` lets a service add what its own store already holds (intake's consents):
    those take effect on the very next read, before the bus brings them back.

    The current facts of recently read cases come from memory (``facts_cache``) when the read
    model store tells about every change to them; otherwise every read folds them afresh.
    """

    def __init__(self, read_models: ReadModelStore, cache: CaseFactsCache | None = None) -> None:
        self._read_models = read_models
        cache = cache or CaseFactsCache()
        self._cache = cache if read_models.watch(FACTS, cache.forget) else None

    async def facts(
        self,
        case_id: str,
        *,
        as_of: datetime | None = None,
        own_entries: Iterable[Entry] = (),
        fresh: bool = False,
    ) -> CaseFacts:
        """``fresh``: read from the read models even if the case is kept in memory (its copy
        is forgotten when the store tells of a change: on PostgreSQL a moment after the
        commit)."""
        own = {entry["event_id"]: entry for entry in own_entries}
        if as_of is None and self._cache is not None and not fresh:
            cached = self._cache.get(case_id)
            if cached is None:
                changes = self._cache.changes
                entries = await self._entries(case_id)
                cached = CachedFacts(fold(case_id, entries.values()), entries)
                if self._read_models.watching():
                    self._cache.keep(case_id, cached, changes)
            if own.keys() <= cached.entries.keys():
                return cached.facts
            return fold(case_id, {**cached.entries, **own}.values())
        entries = await self._entries(case_id)
        entries.update(own)
        return fold(case_id, entries.values(), as_of=as_of)

    async def facts_of(
        self, case_ids: Sequence[str], *, fresh: bool = False
    ) -> dict[str, CaseFacts]:
        """The current ``facts`` of each case, by case id: those not kept in memory (every one,
        ``fresh``: as ``facts``') in one read of the read models (a list answer's cases, up to
        a thousand)."""
        wanted = list(dict.fromkeys(case_ids))
        found: dict[str, CaseFacts] = {}
        missing: list[str] = []
        for case_id in wanted:
            cached = None if self._cache is None or fresh else self._cache.get(case_id)
            if cached is None:
                missing.append(case_id)
            else:
                found[case_id] = cached.facts
        changes = None if self._cache is None else self._cache.changes
        documents = await self._read_models.get_many(FACTS, missing) if missing else {}
        for case_id in missing:
            entries = _entries_of(documents.get(case_id))
            found[case_id] = facts = fold(case_id, entries.values())
            if self._cache is not None and changes is not None and self._read_models.watching():
                self._cache.keep(case_id, CachedFacts(facts, entries), changes)
        return {case_id: found[case_id] for case_id in wanted}

    async def _entries(self, case_id: str) -> dict[str, Entry]:
        return _entries_of(await self._read_models.get(FACTS, case_id))

    async def cases_of_client(self, client_id: str) -> list[str]:
        documents = await self._read_models.find(FACTS, equals={"client_id": client_id})
        return sorted(str(document["case_id"]) for document in documents)


def _entries_of(document: Document | None) -> dict[str, Entry]:
    return {} if document is None else {e["event_id"]: e for e in document["entries"]}
