"""Which cases audit knows of each client: the accounting of disclosures is asked per client.

``audit_client_cases/<client_id>`` holds the client's case ids (from ``case.opened``), read by
primary key, so the look-up does not grow with the number of clients.
"""

from __future__ import annotations

from bisect import insort

from casetrail_platform.projections.port import DocumentTransaction, Projection, ReadModelStore
from events.catalog.cases import CaseOpened
from events.envelope import RecordedEvent

CLIENT_CASES = "audit_client_cases"


class ClientCasesProjection(Projection):
    name = "client-cases"
    collections = (CLIENT_CASES,)
    event_types = frozenset({CaseOpened.event_type})

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        event = recorded.event
        if not isinstance(event, CaseOpened):
            return
        document = await transaction.get(CLIENT_CASES, event.client_id) or {
            "client_id": event.client_id,
            "case_ids": [],
        }
        if event.case_id in document["case_ids"]:
            return
        # Sorted, as they are read: the same document whatever order the openings arrive in
        # (different cases, so partitions), as a rebuild makes.
        insort(document["case_ids"], event.case_id)
        await transaction.put(CLIENT_CASES, event.client_id, document)


class ReadModelClientCases:
    """Reads what the projection wrote (``app.queries.ClientCases``)."""

    def __init__(self, read_models: ReadModelStore) -> None:
        self._read_models = read_models

    async def cases_of(self, client_id: str) -> list[str]:
        document = await self._read_models.get(CLIENT_CASES, client_id)
        return [] if document is None else sorted(str(c) for c in document["case_ids"])
