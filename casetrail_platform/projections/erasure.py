"""How a read model forgets an erased client's sensitive values (``casetrail.client.erased``).

The events keep their sealed values, which no longer open; a read model that copied values in
the clear must not keep them either. A projection that holds such values overrides
``Projection.erase`` and replaces them in the erased cases' documents with the erasure marker
(``scrub``), keeping everything else: the case's non-sensitive history stays readable.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
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


async def scrub_cases(
    transaction: DocumentTransaction,
    collection: str,
    erased: ClientErased,
    *,
    codes: Collection[str] = (),
    texts: Collection[str] = (),
    settle: Callable[[Document], None] | None = None,
) -> None:
    """``scrub`` the documents of ``erased``'s cases in ``collection`` (keyed by case id).

    ``settle``: what the projection's own rules make of a scrubbed document (values a set
    held once each, derived fields), so that it equals the document a rebuild after the
    erasure makes from events that read erased from the start."""
    for case_id in erased.case_ids:
        document: Document | None = await transaction.get(collection, case_id)
        if document is not None:
            scrub(document, codes=codes, texts=texts)
            if settle is not None:
                settle(document)
            await transaction.put(collection, case_id, document)


def _marked(value: Any, marker: str) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [_marked(item, marker) for item in value]
    if isinstance(value, dict):
        return {key: _marked(item, marker) for key, item in value.items()}
    return marker if isinstance(value, str) else value
