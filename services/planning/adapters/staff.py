"""The workers planning knows of: one document per worker in ``staff``, the role and credentials
of the latest case assignment that named them (``CaseAssigned``, ``CaseReassigned``).

Two projections write them. The case view writes them in the transaction of the case's own
change, so a command that finds the worker assigned finds their credentials too.
``StaffProjection`` writes them from its own consumer group, which a deployment upgraded from
before the collection existed starts at the beginning of the topic: it learns the assignments
made before the upgrade without a replay of the case view (which keeps its position and would
never see them again). Both write the same document for the same assignment, and a document is
only replaced by a later assignment, so neither order nor a repeat changes the result.

Later is the ``order`` of the document (``assignment_order``: recorded-at, then the position in
the recording store, so two assignments recorded at one moment are ordered too), compared by
the store as it writes (``DocumentTransaction.put_if_later``): the two writers' transactions may
run at once (replicas, on PostgreSQL), and one that read the worker's document before the
other committed a later assignment would otherwise put an earlier one back over it, the worker
seen with out-of-date credentials until their next assignment. A document stored before it
had an ``order`` is replaced by the next assignment of the worker.

Assignments of different cases may arrive in any order (they cross partitions): the one
recorded last wins, so a rebuild, replaying them in another order, builds the same documents.
"""

from __future__ import annotations

from collections.abc import Iterable

from casetrail_platform.projections.port import DocumentTransaction, Projection, ReadModelStore
from events.catalog.assignment import CaseAssigned, CaseReassigned, WorkerCredential
from events.catalog.base import Role
from events.envelope import RecordedEvent, to_micros
from services.planning.domain.model import StaffMember

STAFF = "staff"


class StaffProjection(Projection):
    """The staff collection on its own (see the module's docstring for why there are two)."""

    name = "staff"
    collections = (STAFF,)
    event_types = frozenset({CaseAssigned.event_type, CaseReassigned.event_type})
    idempotent = True  # a document is only replaced by a later assignment

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, CaseAssigned | CaseReassigned):
            await record_worker(transaction, event, recorded)


async def record_worker(
    transaction: DocumentTransaction, event: CaseAssigned | CaseReassigned, recorded: RecordedEvent
) -> None:
    await transaction.put_if_later(
        STAFF,
        event.worker_id,
        {
            "worker_id": event.worker_id,
            "role": event.worker_role.value,
            "credentials": [c.model_dump(mode="json") for c in event.credentials],
            "as_of": recorded.recorded_at.isoformat(),
            "order": assignment_order(recorded),
        },
        "order",
    )


def assignment_order(recorded: RecordedEvent) -> str:
    """Where an assignment falls among a worker's, as a string in byte order: recorded-at, then
    the source and its store's position (only coordination assigns: its store's order)."""
    return (
        f"{to_micros(recorded.recorded_at):020d}|{recorded.metadata.source}"
        f"|{recorded.position:020d}"
    )


async def staff_members(
    read_models: ReadModelStore, worker_ids: Iterable[str]
) -> dict[str, StaffMember]:
    """The workers of ``worker_ids`` that planning knows of."""
    found = {}
    for worker_id in sorted(set(worker_ids)):
        document = await read_models.get(STAFF, worker_id)
        if document is not None:
            found[worker_id] = StaffMember(
                worker_id,
                Role(document["role"]),
                tuple(WorkerCredential.model_validate(c) for c in document["credentials"]),
            )
    return found
