"""The per-case timeline read model: every case event audit received, as CloudEvents.

Layout (all reads and writes by primary key, so neither grows slower with the number of cases):

* ``audit_cases/<case_id>``: how many events and chunks the case has;
* ``audit_timeline_chunks/<case_id>:<chunk>``: up to ``chunk_size`` events in arrival order,
  each a CloudEvents structured document (``events.cloudevents.to_structured``);
* ``audit_seen_events/<event_id>``: marks an event as applied.

Chunks bound both sides: appending rewrites one chunk (not the whole history), reading a case
of n events takes n / chunk_size lookups. The seen-marker makes ``apply`` idempotent whatever
feeds it: the bus (where a redelivery is normal) and audit's own store both carry audit's own
access events.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from events.cloudevents import from_structured, to_structured
from events.envelope import RecordedEvent
from events.errors import InvalidEventError
from events.projections.port import DocumentTransaction, Projection, ReadModelStore
from events.registry import EventRegistry

CASES = "audit_cases"
CHUNKS = "audit_timeline_chunks"
SEEN = "audit_seen_events"
DEFAULT_CHUNK_SIZE = 20


def chunk_key(case_id: str, chunk: int) -> str:
    return f"{case_id}:{chunk:08d}"


class TimelineProjection(Projection):
    name = "timeline"
    collections = (CASES, CHUNKS, SEEN)

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self._chunk_size = chunk_size

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        # Client-level events (casetrail.client.registered) belong to no case.
        if recorded.event.subject_field != "case_id":
            return
        event_id = str(recorded.event_id)
        if await transaction.get(SEEN, event_id) is not None:
            return
        case_id = recorded.subject
        header = await transaction.get(CASES, case_id) or _new_header(case_id)
        structured = to_structured(recorded)
        if header["chunks"] and header["last_chunk_events"] < self._chunk_size:
            # The last chunk has room: the store splices the event in (no chunk decoded and
            # encoded again per event: most events are reads' access records, one per read).
            number = header["chunks"] - 1
            if not await transaction.append_to_list(
                CHUNKS, chunk_key(case_id, number), "events", structured
            ):
                raise RuntimeError(f"timeline chunk {number} of case {case_id!r} is missing")
            header["last_chunk_events"] += 1
        else:
            header["chunks"] += 1
            number = header["chunks"] - 1
            chunk = {"case_id": case_id, "chunk": number, "events": [structured]}
            await transaction.put(CHUNKS, chunk_key(case_id, number), chunk)
            header["last_chunk_events"] = 1
        header["events"] += 1
        await transaction.put(CASES, case_id, header)
        await transaction.put(SEEN, event_id, {"case_id": case_id})


class ReadModelTimelines:
    """Reads the timelines the projection wrote (``app.queries.CaseTimelines``)."""

    def __init__(self, read_models: ReadModelStore, registry: EventRegistry) -> None:
        self._read_models = read_models
        self._registry = registry

    async def events_of(self, case_id: str) -> list[RecordedEvent]:
        header = await self._read_models.get(CASES, case_id)
        if header is None:
            return []
        documents: list[dict[str, Any]] = []
        for number in range(int(header["chunks"])):
            chunk = await self._read_models.get(CHUNKS, chunk_key(case_id, number))
            if chunk is not None:
                documents.extend(chunk["events"])
        return [self._decode(case_id, document) for document in documents]

    async def event(self, event_id: UUID) -> RecordedEvent | None:
        """The case event audit received with this id (None for one of no case)."""
        seen = await self._read_models.get(SEEN, str(event_id))
        if seen is None:
            return None
        for recorded in await self.events_of(seen["case_id"]):
            if recorded.event_id == event_id:
                return recorded
        return None

    def _decode(self, case_id: str, document: dict[str, Any]) -> RecordedEvent:
        try:
            return from_structured(document, self._registry)
        except InvalidEventError as error:
            # A stored entry that no longer decodes is a fault of audit, not of the caller.
            raise RuntimeError(
                f"timeline entry {document.get('id')!r} of case {case_id!r}: {error}"
            ) from error


def _new_header(case_id: str) -> dict[str, Any]:
    return {"case_id": case_id, "events": 0, "chunks": 0, "last_chunk_events": 0}
