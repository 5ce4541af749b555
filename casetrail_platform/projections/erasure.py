"""How a read model forgets an erased client's sensitive values (``casetrail.client.erased``).

The events keep their sealed values, which no longer open; a read model that copied values in
the clear must not keep them either. A projection that holds such values overrides
``Projection.erase`` and replaces them in the erased cases' documents with the erasure marker
(``scrub``), keeping everything else: the case's non-sensitive history stays readable; one
whose documents belong to cases does so through ``CaseErasure``, which also holds for an
erasure delivered before the case's events.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from casetrail_platform.projections.port import Document, DocumentTransaction
from events.catalog.erasure import ClientErased
from events.sealed_values import ERASED_CODE, ERASED_TEXT


def scrub(value: Any, *, codes: Collection[str] = (), texts: Collection[str] = ()) -> Any:
    """``value`` with whatever sits under a key in ``codes`` (need categories, service kinds)
    or ``texts`` (free text), at any depth, replaced by the marker; in place."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = scrub(item, codes=codes, texts=texts)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in codes:
                value[key] = _marked(item, ERASED_CODE)
            elif key in texts:
                value[key] = _marked(item, ERASED_TEXT)
            else:
                value[key] = scrub(item, codes=codes, texts=texts)
    return value


def scrubbing(
    *,
    codes: Collection[str] = (),
    texts: Collection[str] = (),
    settle: Callable[[Document], None] | None = None,
) -> Callable[[Document], None]:
    """What ``CaseErasure`` does to a document: ``scrub`` it, then ``settle`` it (what the
    projection's own rules make of a scrubbed document: values a set held once each, derived
    fields), so that it equals the document a rebuild after the erasure makes from events that
    read erased from the start."""

    def forget(document: Document) -> None:
        scrub(document, codes=codes, texts=texts)
        if settle is not None:
            settle(document)

    return forget


def erased_marks(collection: str) -> str:
    """The collection of the cases ``CaseErasure`` marked erased in ``collection``, keyed by
    case id: one of the projection's ``collections``, so a rebuild from zero starts without."""
    return f"{collection}_erased"


@dataclass(frozen=True, slots=True)
class CaseErasure:
    """How a projection keeping a case's documents in ``collection`` forgets an erased
    client's values (``forget``, in place, idempotent), whichever the bus delivers first: the
    erasure or the case's events.

    The bus orders a stream's events, not the client's stream against their cases' (other
    partitions, other services' topics), and a case's event delivered after the erasure may
    still open in the clear (decoded with the batch the erasure came in, or before the key's
    destruction, which follows the erasure's record, was done). An erasure delivered first
    found no document and scrubbed nothing, so the document those events made kept their
    values. So ``erase`` also marks each case erased (``erased_marks``), and the projection
    passes each document of a case through ``settle`` before it puts it: the same document
    whichever came first, and a rebuild from zero makes it too. The mark is read then put, as
    the documents are: for projections that track what they applied (not ``idempotent``),
    whose bus batches hold the projection's lock on PostgreSQL (audit's idempotent timeline
    marks its case header by compare and set instead)."""

    collection: str
    forget: Callable[[Document], None]
    key_field: str | None = None
    """For a collection of several documents per case (``documents``)."""

    @property
    def marks(self) -> str:
        return erased_marks(self.collection)

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        for case_id in erased.case_ids:
            await transaction.put(self.marks, case_id, {"case_id": case_id})
            for key, document in await self.documents(transaction, case_id):
                self.forget(document)
                await transaction.put(self.collection, key, document)

    async def documents(
        self, transaction: DocumentTransaction, case_id: str
    ) -> list[tuple[str, Document]]:
        """The case's documents in ``collection``, by key: the one keyed by the case id, or
        with ``key_field``, every one whose ``case_id`` it is (keyed by their ``key_field``)."""
        if self.key_field is None:
            document = await transaction.get(self.collection, case_id)
            return [] if document is None else [(case_id, document)]
        found = await transaction.find(self.collection, {"case_id": case_id})
        return [(str(document[self.key_field]), document) for document in found]

    async def settle(
        self, transaction: DocumentTransaction, case_id: str, document: Document
    ) -> None:
        """``document`` (the case's, about to be put) forgotten if the case was erased
        before: as the erasure, arriving after, would leave it."""
        if await transaction.get(self.marks, case_id) is not None:
            self.forget(document)


def _marked(value: Any, marker: str) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [_marked(item, marker) for item in value]
    if isinstance(value, dict):
        return {key: _marked(item, marker) for key, item in value.items()}
    return marker if isinstance(value, str) else value
