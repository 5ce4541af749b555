"""The disclosures of each case, indexed by when they were made, for the accounting of
disclosures (``AuditService.ListDisclosures``).

Every read of a case appends a ``record.accessed``, so over the six years an accounting may
cover a case gathers many thousands of them, nearly all internal uses. The accounting reads
only this index: ``audit_disclosures_recorded/<case>|<disclosed-at>|<event id>`` holds, for each
event that was a disclosure (``domain.disclosures``), the event as a CloudEvents structured
document. ``<case>`` is the event's subject: a read of a client with no case is recorded, and
kept, under the client's id, which the accounting reads beside the client's cases.
Disclosed-at is the event's recorded-at (``Disclosure.disclosed_at``). The digits
(``timeline.sortable_micros``) make the key order the accounting's order, so a period and a page
cursor are key bounds, and a page reads ``page_size + 1`` keys per case whatever the length of
the case's history.

Whether a read was a disclosure is decided on its data as JSON, not by decoding it: audit
receives every read. A referral is decoded (few, and its provider may be sealed in a future
schema). The events keep their sealed values, as the timeline's copies do.
"""

from __future__ import annotations

import json
from typing import Any

from casetrail_platform.keys.off_loop import decoding
from casetrail_platform.projections.port import (
    DocumentTransaction,
    KeyRange,
    Projection,
    ReadModelStore,
)
from events.catalog.access import RecordAccessed
from events.catalog.referrals import ReferralMade
from events.cloudevents import from_structured, to_structured
from events.envelope import RecordedEvent, to_micros
from events.errors import InvalidEventError
from events.registry import EventRegistry
from services.audit.adapters.timeline import KEY_END, sortable_micros
from services.audit.domain.disclosures import DisclosureKey, disclosure_of, read_is_disclosure

DISCLOSURES = "audit_disclosures_recorded"
"""Keyed by recorded-at. The index keyed by occurred-at (``audit_disclosures``, projection
``disclosure-index``) is left behind unread: this one has a new name, so it is built from the
first event on the bus up, as any new projection is."""


def _key(case_id: str, disclosed_at_micros: int, event_id: str) -> str:
    return f"{case_id}|{sortable_micros(disclosed_at_micros)}|{event_id}"


class DisclosureIndexProjection(Projection):
    name = "disclosure-index-recorded"
    collections = (DISCLOSURES,)
    event_types = frozenset({RecordAccessed.event_type, ReferralMade.event_type})
    idempotent = True  # a document keyed by its event, never changed

    def __init__(self, home_agency: str) -> None:
        self._home_agency = home_agency
        """Reads by staff of this agency for care are internal uses, not disclosures."""

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        if recorded.event_type == RecordAccessed.event_type:
            if not read_is_disclosure(json.loads(recorded.data), self._home_agency):
                return
        elif (
            recorded.event_type != ReferralMade.event_type
            or disclosure_of(recorded, self._home_agency) is None
        ):
            return
        key = _key(recorded.subject, to_micros(recorded.recorded_at), str(recorded.event_id))
        # A key is the event's own: a redelivered event puts the same document again.
        await transaction.put(DISCLOSURES, key, {"event": to_structured(recorded)})


class ReadModelDisclosureIndex:
    """Reads what the projection wrote (``app.disclosures.DisclosureIndex``). Periods are
    inclusive microsecond bounds on the disclosed-at clock (the event's recorded-at)."""

    def __init__(self, read_models: ReadModelStore, registry: EventRegistry) -> None:
        self._read_models = read_models
        self._registry = registry

    async def count(self, case_id: str, start: int, end: int) -> int:
        return await self._read_models.count_range(
            DISCLOSURES, _period_range(case_id, start, end, None, 0)
        )

    async def page(
        self,
        case_ids: list[str],
        start: int,
        end: int,
        after: DisclosureKey | None,
        size: int,
    ) -> tuple[list[RecordedEvent], bool]:
        """Up to ``size`` disclosures of the cases after ``after``: each case's range is read
        up to ``size + 1`` keys and the cases are merged on their keys' time and event id."""
        found: list[tuple[str, dict[str, Any]]] = []
        for case_id in case_ids:
            keys = _period_range(case_id, start, end, after, size + 1)
            rows = await self._read_models.key_range(DISCLOSURES, keys)
            found.extend((key.removeprefix(f"{case_id}|"), document) for key, document in rows)
        found.sort(key=lambda item: item[0].encode())
        documents = [document["event"] for _, document in found[:size]]
        events = await decoding(lambda: [self._decode(document) for document in documents])
        return events, len(found) > size

    def _decode(self, document: dict[str, Any]) -> RecordedEvent:
        try:
            return from_structured(document, self._registry)
        except InvalidEventError as error:
            # A stored entry that no longer decodes is a fault of audit, not of the caller.
            raise RuntimeError(f"disclosure {document.get('id')!r}: {error}") from error


def _period_range(
    case_id: str, start: int, end: int, after: DisclosureKey | None, limit: int
) -> KeyRange:
    # Keys at a moment extend its digits with "|<event id>", all below KEY_END.
    low = f"{case_id}|{sortable_micros(start - 1)}|{KEY_END}"
    if after is not None:
        low = max(low, _key(case_id, *after), key=str.encode)
    return KeyRange(low, f"{case_id}|{sortable_micros(end)}|{KEY_END}", limit=limit)
