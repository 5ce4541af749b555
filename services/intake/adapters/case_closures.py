"""Closures of cases, learnt from the bus: the planning service owns ``casetrail.case.closed``.

Fed by the host's ``BusProjectionHandler`` (exactly once per source stream sequence); the event
id is kept as well, so a closure that somehow arrived twice is still counted once. The closures
are listed in the order of planning's stream (by sequence), not of their arrival.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from casetrail_platform.projections.port import DocumentTransaction, Projection, ReadModelStore
from events.catalog.cases import CaseClosed
from events.envelope import RecordedEvent

CLOSURES = "intake_case_closures"


@dataclass(frozen=True, slots=True)
class Closure:
    reason: str
    closed_at: datetime


class CaseClosuresProjection(Projection):
    name = "intake.case-closures"
    collections = (CLOSURES,)
    event_types = frozenset({CaseClosed.event_type})

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        event = recorded.event
        if not isinstance(event, CaseClosed):
            return
        document = await transaction.get(CLOSURES, event.case_id) or {
            "case_id": event.case_id,
            "closures": [],
        }
        event_id = str(recorded.event_id)
        if any(closure["event_id"] == event_id for closure in document["closures"]):
            return
        document["closures"].append(
            {
                "event_id": event_id,
                "reason": event.reason.value,
                "closed_at": recorded.metadata.occurred_at.isoformat(),
                "sequence": recorded.sequence,
            }
        )
        # In the order of planning's stream, whatever order they arrived in (a closure
        # dead-lettered and replayed after a later one); those kept before the sequence came
        # first.
        document["closures"].sort(key=lambda closure: closure.get("sequence", 0))
        await transaction.put(CLOSURES, event.case_id, document)


class ClosureLog:
    """What intake knows about the closures of its cases."""

    def __init__(
        self,
        read_models: ReadModelStore,
        caught_up: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """``caught_up``: whether the projection's consumer group holds the case's last
        closure on the bus, waiting a bounded time (``ServiceHost.caught_up``); ``None``: a
        log not fed from a bus."""
        self._read_models = read_models
        self._caught_up = caught_up

    async def caught_up(self, case_id: str) -> bool:
        """Whether the log holds every closure of the case that was on the bus when asked
        (at once when not fed from a bus)."""
        return self._caught_up is None or await self._caught_up(case_id)

    async def closures(self, case_id: str) -> tuple[Closure, ...]:
        document = await self._read_models.get(CLOSURES, case_id)
        if document is None:
            return ()
        return tuple(
            Closure(closure["reason"], datetime.fromisoformat(closure["closed_at"]))
            for closure in document["closures"]
        )

    async def count(self, case_id: str) -> int:
        return len(await self.closures(case_id))
