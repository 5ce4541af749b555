"""Bus-fed projections shared by services, under out-of-order delivery: events set aside
(dead-lettered, parked) and delivered after later ones, or from streams spread over partitions,
build the documents an in-order delivery (a rebuild) builds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from casetrail_platform.policy.projection import FACTS, CaseFactsProjection, CaseFactsReader
from casetrail_platform.projections.port import Document, Projection
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseOpened, PresentingNeed, ReferralSource, ReferralSourceKind
from events.catalog.values import NeedCategory
from events.envelope import Actor, EventMetadata, RecordedEvent
from services.audit.adapters.client_cases import CLIENT_CASES, ClientCasesProjection

MOMENT = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)


def _recorded(
    event: CaseEvent, sequence: int, source: str, recorded_at: datetime = MOMENT
) -> RecordedEvent:
    return RecordedEvent(
        event_id=uuid4(),
        stream=f"case-{event.subject}",
        sequence=sequence,
        position=sequence,
        recorded_at=recorded_at,
        event=event,
        metadata=EventMetadata(
            source, Actor("coord-1", Role.COORDINATOR), recorded_at, correlation_id=uuid4()
        ),
    )


def _opened(case_id: str) -> CaseOpened:
    return CaseOpened(
        case_id=case_id,
        client_id="client-1",
        referral_source=ReferralSource(kind=ReferralSourceKind.HOSPITAL),
        presenting_needs=(PresentingNeed(category=NeedCategory.HOME_CARE),),
    )


async def _both_ways(
    read_models: SqliteReadModelStore,
    service: str,
    projection: Projection,
    events: list[RecordedEvent],
    collection: str,
    key: str,
) -> tuple[Document | None, Document | None]:
    """The document after delivering ``events`` in order, then after a rebuild delivering them
    backwards."""
    built = []
    for delivery in (events, events[::-1]):
        await read_models.reset(projection.name, projection.collections)
        handler = BusProjectionHandler(read_models, projection, service=service)
        for recorded in delivery:
            await handler(recorded)
        built.append(await read_models.get(collection, key))
    return built[0], built[1]


async def test_policy_facts_are_the_same_whatever_order_their_events_arrive_in(
    read_models: SqliteReadModelStore,
) -> None:
    events = [
        _recorded(_opened("case-1"), 1, "casetrail/intake"),
        # Recorded by one append (one moment): only the sequence tells them apart.
        _recorded(
            CaseAssigned(
                case_id="case-1", worker_id="worker-bo", worker_role=Role.SOCIAL_WORKER, reason="x"
            ),
            1,
            "casetrail/coordination",
            MOMENT + timedelta(hours=1),
        ),
        _recorded(
            CaseReassigned(
                case_id="case-1",
                previous_worker_id="worker-bo",
                worker_id="worker-ana",
                worker_role=Role.SOCIAL_WORKER,
                reason="caseload",
            ),
            2,
            "casetrail/coordination",
            MOMENT + timedelta(hours=1),
        ),
    ]
    in_order, backwards = await _both_ways(
        read_models, "planning", CaseFactsProjection(), events, FACTS, "case-1"
    )
    assert backwards == in_order
    facts = await CaseFactsReader(read_models).facts("case-1")
    assert facts.worker_id == "worker-ana"


async def test_a_clients_cases_are_the_same_whatever_order_their_openings_arrive_in(
    read_models: SqliteReadModelStore,
) -> None:
    events = [_recorded(_opened(f"case-{n}"), 1, "casetrail/intake") for n in (1, 2, 3)]
    in_order, backwards = await _both_ways(
        read_models, "audit", ClientCasesProjection(), events, CLIENT_CASES, "client-1"
    )
    assert backwards == in_order
