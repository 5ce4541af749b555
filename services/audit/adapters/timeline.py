"""The per-case timeline read model: every case event audit received, as CloudEvents, indexed
on both clocks so that a page is one index read whatever the length of the case.

Layout (``casetrail_platform.projections.port.KeyRange`` reads the index in key order):

* ``audit_timeline_v2_index/<case>|<clock>|<lane>|<sort key>``: one small document per event and
  clock (``o`` occurred, ``r`` recorded), ``{"type", "actor", "event"}`` where ``event`` is the
  key of the event's document. The sort key (``sort_suffix``, zero-padded) makes the key order
  the clock's order, so a period, an as-of moment and a page cursor are key bounds, and type and
  actor filters are conditions on these small documents. The lane keeps access events (``a``:
  accessed, denied) apart from the case's own history (``h``): every read appends one, and a
  timeline without them never reads them.
* ``audit_timeline_v2_events/<case>|<lane>|<event id>``: the event, a CloudEvents structured
  document, once (a page fetches its entries' documents by key; a whole-case read takes the
  case's range);
* ``audit_timeline_v2_facts/<case>``: the policy's fact entries (``entry_of``) of the case's
  fact-bearing events, so a query decides on the case without reading its history, stored in
  ``stored_order`` (the order the answers fold them in, the event id settling ties) whatever
  order they arrived in, so a rebuild stores the same bytes;
* ``audit_timeline_v2_cases/<case>``: the case is known to audit, how many of its own events
  (not access records) audit has, and where the last of its fact entries falls
  (``last_fact``, its ``stored_order``);
* ``audit_timeline_v2_seen/<event_id>``: marks an event as applied and points at its entry;
* ``audit_client_trail_{index,events,seen}``: the same for each client's own events (their
  registration, date of birth corrected, retention holds, erasure) under ``<client id>``, kept
  by ``ClientTrailProjection``: each of the client's cases (its client from the facts of its
  opening) reads them in its history lane's place, from before the case's opening too.

The seen-marker makes ``apply`` idempotent whatever feeds it: the bus (where a redelivery is
normal) and audit's own store both carry audit's own access events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

from casetrail_platform.keys.off_loop import decoding
from casetrail_platform.policy.facts import Entry, entry_of, stored_order
from casetrail_platform.projections.port import (
    Document,
    DocumentReader,
    DocumentTransaction,
    KeyRange,
    Projection,
    ReadModelStore,
    RetiredLayout,
)
from events.catalog.cases import CaseOpened
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered
from events.catalog.erasure import ClientErased, RetentionHoldPlaced, RetentionHoldReleased
from events.cloudevents import from_structured, to_structured
from events.envelope import RecordedEvent, to_micros
from events.errors import InvalidEventError
from events.registry import EventRegistry
from services.audit.domain.history import (
    ACCESS_TYPES,
    IndexPage,
    PageCursor,
    TimeBasis,
    TimelineQuery,
)

CASES = "audit_timeline_v2_cases"
INDEX = "audit_timeline_v2_index"
EVENTS = "audit_timeline_v2_events"
SEEN = "audit_timeline_v2_seen"
FACTS = "audit_timeline_v2_facts"

RETIRED = "timeline-index"
RETIRED_COLLECTIONS = (
    "audit_case_timelines",
    "audit_timeline_index",
    "audit_timeline_events",
    "audit_timeline_seen",
    "audit_case_facts",
)
"""The projection before ``v2`` and its collections. Its layout changed twice under the same
name (the facts moved to their own collection, each event stored once apart from the index),
so a timeline built before went on under the new code with its seen-markers skipping every
old event: no facts for the old cases (their access decisions), pages that failed on index
entries holding whole events, and the old facts entries, categories of need in the clear, out
of the erasure's reach. ``retire_old_layout`` deletes it all at audit's start, and the
projection again later (``Projection.retired``)."""

HISTORY, ACCESSES = "h", "a"
_CLOCKS = {TimeBasis.OCCURRED: "o", TimeBasis.RECORDED: "r"}
_EPOCH_SHIFT = 62_135_596_800_000_000
"""Microseconds from 0001-01-01 to the Unix epoch: shifted times are never negative, so their
zero-padded digits sort as the times do."""
KEY_END = "~"
"""Above every character of a key (identifiers, digits, '|', '/')."""
_READ_ALL = 1000


def sortable_micros(value: int) -> str:
    """Microseconds since the Unix epoch as digits whose order is the times' order."""
    return f"{value + _EPOCH_SHIFT:020d}"


def sort_suffix(recorded: RecordedEvent, basis: TimeBasis) -> str:
    """The event's place on ``basis``'s clock, as the ordered tail of its index key."""
    occurred = to_micros(recorded.metadata.occurred_at)
    stored = to_micros(recorded.recorded_at)
    first, second = (occurred, stored) if basis is TimeBasis.OCCURRED else (stored, occurred)
    source, stream = recorded.metadata.source, recorded.stream
    return (
        f"{sortable_micros(first)}|{sortable_micros(second)}|{source}|{stream}"
        f"|{recorded.sequence:020d}"
    )


def lane_of(event_type: str) -> str:
    return ACCESSES if event_type in ACCESS_TYPES else HISTORY


def _prefix(subject: str, basis: TimeBasis, lane: str) -> str:
    """``subject``: a case id, or a client's (``ClientTrailProjection``)."""
    return f"{subject}|{_CLOCKS[basis]}|{lane}|"


class TimelineProjection(Projection):
    name = "timeline-index-v2"
    """v2: a new name and new collections, so a deployment builds it again from the bus
    (``RETIRED``)."""
    collections = (CASES, INDEX, EVENTS, SEEN, FACTS)
    retired = (RetiredLayout(RETIRED, RETIRED_COLLECTIONS),)
    idempotent = True  # the seen-marker, written first with each event

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        lane = lane_of(recorded.event_type)
        # Client-level events belong to no case (``ClientTrailProjection`` keeps them); access
        # records always do (their type says so: their data is not decoded here).
        if lane == HISTORY and recorded.event.subject_field != "case_id":
            return
        case_id = recorded.subject
        # An access record only needs the case known, made with the record where it is not:
        # every answered read appends one, so it reads nothing back here.
        header = () if lane == HISTORY else [(CASES, case_id, _new_header(case_id))]
        if not await _keep(transaction, _CASE_TRAIL, case_id, lane, recorded, header):
            return
        if lane == HISTORY:
            entry = entry_of(recorded)
            place = None if entry is None else stored_order(entry)
            last, erased = await _count(transaction, case_id, place)
            if entry is not None:
                await _keep_fact(transaction, case_id, last, _scrubbed(entry) if erased else entry)

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        # The events keep their sealed values; the fact entries hold the categories of need
        # and those a consent names in the clear (the client's health data): forgotten, as the
        # policy's own facts do (casetrail_platform.policy.projection). The client's consents
        # stay, naming no category: they still bind, and cover no sensitive category.
        # The erasure may arrive before the case's events (another partition, another
        # service's topic): the case's header is marked erased, created if need be, and each
        # fact entry stored after it is scrubbed as it is kept (``apply``).
        for case_id in erased.case_ids:
            if not await _mark_erased(transaction, case_id):
                continue  # audit had no event of the case, so no facts yet
            document = await transaction.get(FACTS, case_id)
            if document is None:
                continue
            document["entries"] = [_scrubbed(entry) for entry in document["entries"]]
            await transaction.put(FACTS, case_id, document)


def _scrubbed(entry: Entry) -> Entry:
    """``entry`` without what the erasure forgets: its categories of need."""
    return {**entry, "categories": []} if "categories" in entry else entry


async def _count(
    transaction: DocumentTransaction, case_id: str, place: tuple[str, int, str] | None
) -> tuple[tuple[str, int, str] | None, bool]:
    """Count one more of the case's own events in its header, and where its last fact entry
    falls (``place``: the event's, if it has one); the last entry's place before, and whether
    the case's client was erased. Compared and set, retried on what another replica
    committed: the header's row lock, then held to the commit, orders the case's facts writes
    and its erasure across replicas (a read-then-write lost a count, and would lose an entry
    sorted in or the erasure of one)."""
    while True:
        known = await transaction.get(CASES, case_id)
        header = dict(known or _new_header(case_id))
        header["events"] += 1
        before = header.get("last_fact")
        last = None if before is None else _place(before)
        if place is not None:
            header["last_fact"] = list(place if last is None else max(place, last))
        if await transaction.put_if_unchanged(CASES, case_id, known, header):
            return last, bool(header.get("erased"))


async def _mark_erased(transaction: DocumentTransaction, case_id: str) -> bool:
    """Mark the case's header erased (creating it when audit has no event of the case yet),
    taking its row as ``_count`` does, so an event of the case applied at once by another
    replica either comes first (its entry is then scrubbed here) or sees the mark; whether
    audit had an event of the case before."""
    while True:
        known = await transaction.get(CASES, case_id)
        header = {**(known or _new_header(case_id)), "erased": True}
        if await transaction.put_if_unchanged(CASES, case_id, known, header):
            return known is not None


def _place(stored: list[Any]) -> tuple[str, int, str]:
    return str(stored[0]), int(stored[1]), str(stored[2])


async def _keep_fact(
    transaction: DocumentTransaction,
    case_id: str,
    last: tuple[str, int, str] | None,
    entry: Entry,
) -> None:
    """Store ``entry`` among the case's facts in ``stored_order``, as a rebuild stores them
    whatever order the events arrived in (``last``: where the last entry stored falls). An
    entry after it, as nearly every one is, is spliced onto the end in the database: a long
    case's facts are not decoded and encoded again per event. One that arrived late (another
    service's event, a replayed dead letter) is sorted in with the document read back, which
    the header's row lock (``_count``) keeps from racing another replica's write."""
    after_last = last is not None and stored_order(entry) > last
    if after_last and await transaction.append_to_list(FACTS, case_id, "entries", entry):
        return
    document = await transaction.get(FACTS, case_id) or {"case_id": case_id, "entries": []}
    # Sorted whole: a document kept in arrival order before is put in order too.
    document["entries"] = sorted([*document["entries"], entry], key=stored_order)
    await transaction.put(FACTS, case_id, document)


CLIENT_INDEX = "audit_client_trail_index"
CLIENT_EVENTS = "audit_client_trail_events"
CLIENT_SEEN = "audit_client_trail_seen"
CLIENT_EVENT_TYPES = frozenset(
    {
        ClientRegistered.event_type,
        ClientDateOfBirthCorrected.event_type,
        RetentionHoldPlaced.event_type,
        RetentionHoldReleased.event_type,
        ClientErased.event_type,
    }
)
"""The events of a client as a person, on the client's stream (``subject_field`` client_id),
which each of the client's cases shows (``tests/unit/audit/test_timeline.py`` holds that the
catalog has no other)."""


class ClientTrailProjection(Projection):
    """The client's own events, kept once per client in the timeline's layout (collections of
    their own, keys ``<client id>|…``), for each of the client's cases to show beside its
    history (``ReadModelTimelines.page``). A projection of its own, with its own consumer
    group: a deployment whose timeline was built before audit kept them learns those from the
    beginning of the topic, and reading the topic again costs it the client events only (the
    others are skipped before decoding)."""

    name = "client-trail"
    collections = (CLIENT_INDEX, CLIENT_EVENTS, CLIENT_SEEN)
    event_types = CLIENT_EVENT_TYPES
    idempotent = True  # the seen-marker, as the timeline's

    async def handle(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        # The erasure is part of the client's history: kept as the others are (the timeline
        # scrubs the cases' facts; this projection holds nothing in the clear).
        await self.apply(transaction, recorded)

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        if recorded.event_type in CLIENT_EVENT_TYPES:
            await _keep(transaction, _CLIENT_TRAIL, recorded.subject, HISTORY, recorded)


@dataclass(frozen=True)
class _Trail:
    """Where a trail's events, index entries and seen-markers are kept."""

    index: str
    events: str
    seen: str


_CASE_TRAIL = _Trail(INDEX, EVENTS, SEEN)
_CLIENT_TRAIL = _Trail(CLIENT_INDEX, CLIENT_EVENTS, CLIENT_SEEN)


async def _keep(
    transaction: DocumentTransaction,
    trail: _Trail,
    subject: str,
    lane: str,
    recorded: RecordedEvent,
    new_only: Sequence[tuple[str, str, Document]] = (),
) -> bool:
    """The event and its place on both clocks under ``subject`` (a case or a client), and
    ``new_only`` where nothing is stored yet; False when it was kept already."""
    event_id = str(recorded.event_id)
    event_key = f"{subject}|{lane}|{event_id}"
    indexed = _indexed(recorded, event_key)
    # The seen-marker and, only if it was not there, the rest: checked and set in one
    # statement (one round trip on PostgreSQL).
    return await transaction.put_once(
        (trail.seen, event_id, {"case_id": subject, "key": event_key}),
        [
            (trail.events, event_key, {"event": to_structured(recorded)}),
            *(
                (trail.index, _prefix(subject, basis, lane) + sort_suffix(recorded, basis), indexed)
                for basis in TimeBasis
            ),
        ],
        new_only,
    )


async def retire_old_layout(read_models: ReadModelStore) -> None:
    """Delete what the projection before ``v2`` left (nothing once done: a no-op after)."""
    # The old facts entries held categories of need in the clear: no copy stays in the files.
    await read_models.retire(TimelineProjection.retired)


class ReadModelTimelines:
    """Reads the timelines the projection wrote (``app.queries.CaseTimelines``): from the
    store's last commit, or from one snapshot of it (``snapshot``)."""

    def __init__(
        self,
        read_models: ReadModelStore,
        registry: EventRegistry,
        reads: DocumentReader | None = None,
    ) -> None:
        self._read_models = read_models
        self._registry = registry
        self._reads: DocumentReader = read_models if reads is None else reads
        """What the timelines are read from: the store's last commit, or a snapshot's."""

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[ReadModelTimelines]:
        """The timelines as one commit holds them, whatever the projection applies meanwhile
        (``ReadModelStore.snapshot``)."""
        async with self._read_models.snapshot() as view:
            yield ReadModelTimelines(self._read_models, self._registry, view)

    async def facts_of(self, case_id: str) -> list[Entry] | None:
        """The case's fact entries (``None`` when audit has no event of the case)."""
        if await self._reads.get(CASES, case_id) is None:
            return None
        document = await self._reads.get(FACTS, case_id)
        return [] if document is None else list(document["entries"])

    async def page(
        self,
        case_id: str,
        query: TimelineQuery,
        cursor: PageCursor | None,
        size: int,
        unindexed: Sequence[RecordedEvent] = (),
    ) -> IndexPage:
        """``size`` entries of the view in its clock's order, read from the index only: each
        lane is read up to ``size + 1`` keys and the lanes are merged on their sort keys.
        ``unindexed``: events of the case the index may not hold yet, merged in where they
        belong when the view takes them (one that is indexed already is listed once)."""
        backward = cursor is not None and cursor.backward
        found: dict[str, tuple[dict[str, Any], RecordedEvent | None, _Trail]] = {}
        for trail, subject, lane in await self._sources(case_id, query):
            keys = _key_range(subject, query, lane, cursor, size + 1)
            prefix = _prefix(subject, query.basis, lane)
            for event in unindexed:
                suffix = sort_suffix(event, query.basis)
                if (
                    subject == case_id
                    and lane_of(event.event_type) == lane
                    and keys.holds(prefix + suffix, _indexed(event, ""))
                ):
                    found[suffix] = ({}, event, trail)
            rows = await self._reads.key_range(trail.index, keys)
            found.update(
                (key.removeprefix(prefix), (document, None, trail)) for key, document in rows
            )
        ordered = sorted(found.items(), key=lambda item: item[0].encode(), reverse=backward)
        chosen = ordered[:size]
        if backward:
            chosen.reverse()
        # The page's events in one read per trail: one read per event made a page 100 round
        # trips on PostgreSQL (a state folded page by page took 7 times the whole-case read).
        wanted: dict[_Trail, list[str]] = {}
        for _, (document, given, trail) in chosen:
            if given is None:
                wanted.setdefault(trail, []).append(document["event"])
        stored = {
            trail: await self._reads.get_many(trail.events, keys) for trail, keys in wanted.items()
        }
        documents = []
        for _, (document, given, trail) in chosen:
            if given is not None:
                continue
            kept = stored[trail].get(document["event"])
            if kept is None:
                raise RuntimeError(f"timeline event {document['event']!r} is missing")
            documents.append(kept["event"])
        # The page decoded at once: a key the cache lacks sends it to a worker thread once.
        decoded = iter(await decoding(partial(self._decoded_all, case_id, documents)))
        entries = [given if given is not None else next(decoded) for _, (_, given, _) in chosen]
        return IndexPage(entries, [suffix for suffix, _ in chosen], more=len(found) > size)

    async def own_position(self) -> int:
        """The position in audit's own store up to which its events are in the timeline."""
        return await self._reads.applied_position(TimelineProjection.name)

    async def count(self, case_id: str, query: TimelineQuery) -> int:
        """Events in the whole view (all pages)."""
        total = 0
        for trail, subject, lane in await self._sources(case_id, query):
            keys = _key_range(subject, query, lane, None, 0)
            total += await self._reads.count_range(trail.index, keys)
        return total

    async def client_of(self, case_id: str) -> str | None:
        """The client the case was opened for (None before audit has its opening)."""
        document = await self._reads.get(FACTS, case_id)
        for entry in [] if document is None else document["entries"]:
            if entry["type"] == CaseOpened.event_type:
                return str(entry["client_id"])
        return None

    async def knows_client(self, client_id: str) -> bool:
        """Whether audit has received the client's registration (``ClientTrailProjection``)."""
        prefix = _prefix(client_id, TimeBasis.RECORDED, HISTORY)
        where = {"type": [ClientRegistered.event_type]}
        registration = KeyRange(prefix, prefix + KEY_END, where=where, limit=1)
        return bool(await self._read_models.key_range(CLIENT_INDEX, registration))

    async def _sources(self, case_id: str, query: TimelineQuery) -> list[tuple[_Trail, str, str]]:
        """(trail, subject, lane) of each part of the case's view: its lanes, and its client's
        own events beside its history. The sort keys of both are of one clock and never equal
        (they end in source, stream and sequence), so merged they are one order, and an
        as-of moment, a period and a page cursor bound both alike."""
        lanes = list(_lanes(query))
        sources = [(_CASE_TRAIL, case_id, lane) for lane in lanes]
        if HISTORY in lanes and (client_id := await self.client_of(case_id)):
            sources.append((_CLIENT_TRAIL, client_id, HISTORY))
        return sources

    async def events_of(self, case_id: str) -> list[RecordedEvent]:
        """Every event of the case (access events included), on the occurred clock."""
        return await self._everything(f"{case_id}|")

    async def event(self, event_id: UUID) -> RecordedEvent | None:
        """The event audit received with this id, a case's or a client's (None for another)."""
        for trail in (_CASE_TRAIL, _CLIENT_TRAIL):
            seen = await self._reads.get(trail.seen, str(event_id))
            if seen is not None:
                document = await self._reads.get(trail.events, seen["key"])
                if document is None:
                    return None
                return await self._decode(seen["case_id"], document["event"])
        return None

    async def _everything(self, prefix: str) -> list[RecordedEvent]:
        """The case's events under ``prefix``, read by key range."""
        case_id = prefix.split("|", 1)[0]
        events: list[RecordedEvent] = []
        low = prefix
        while True:
            rows = await self._reads.key_range(
                EVENTS, KeyRange(low, prefix + KEY_END, limit=_READ_ALL)
            )
            documents = [document["event"] for _, document in rows]
            events.extend(await decoding(partial(self._decoded_all, case_id, documents)))
            if len(rows) < _READ_ALL:
                return sorted(events, key=lambda e: sort_suffix(e, TimeBasis.OCCURRED).encode())
            low = rows[-1][0]

    async def _decode(self, case_id: str, document: dict[str, Any]) -> RecordedEvent:
        return await decoding(lambda: self._decoded(case_id, document))

    def _decoded_all(self, case_id: str, documents: list[dict[str, Any]]) -> list[RecordedEvent]:
        return [self._decoded(case_id, document) for document in documents]

    def _decoded(self, case_id: str, document: dict[str, Any]) -> RecordedEvent:
        """Decoded here (keys the cache lacks are asked for from this thread)."""
        try:
            return from_structured(document, self._registry)
        except InvalidEventError as error:
            # A stored entry that no longer decodes is a fault of audit, not of the caller.
            raise RuntimeError(
                f"timeline entry {document.get('id')!r} of case {case_id!r}: {error}"
            ) from error


def _lanes(query: TimelineQuery) -> Iterator[str]:
    types = query.event_types
    if not types or types - ACCESS_TYPES:
        yield HISTORY
    if (not types and not query.without_accesses) or types & ACCESS_TYPES:
        yield ACCESSES


def _key_range(
    subject: str, query: TimelineQuery, lane: str, cursor: PageCursor | None, limit: int
) -> KeyRange:
    prefix = _prefix(subject, query.basis, lane)
    low, high = prefix, prefix + KEY_END
    if query.since is not None:
        # Keys of events at `since` extend these digits, so they sort after them.
        low = max(low, prefix + sortable_micros(to_micros(query.since)), key=str.encode)
    last = min(
        (moment for moment in (query.as_of, query.until) if moment is not None), default=None
    )
    if last is not None:
        high = min(high, prefix + sortable_micros(to_micros(last)) + KEY_END, key=str.encode)
    if cursor is not None and cursor.backward:
        high = min(high, prefix + cursor.suffix, key=str.encode)
    elif cursor is not None:
        low = max(low, prefix + cursor.suffix, key=str.encode)
    where: dict[str, list[str]] = {}
    if query.event_types:
        where["type"] = sorted(query.event_types)
    if query.actor_id is not None:
        where["actor"] = [query.actor_id]
    backward = cursor is not None and cursor.backward
    return KeyRange(low, high, where, descending=backward, limit=limit)


def _indexed(recorded: RecordedEvent, event_key: str) -> dict[str, Any]:
    """An index entry: what a page's filters look at, and where the event is."""
    return {
        "type": recorded.event_type,
        "actor": recorded.metadata.actor.user_id,
        "event": event_key,
    }


def _new_header(case_id: str) -> dict[str, Any]:
    return {"case_id": case_id, "events": 0}
