"""Audit's timeline given a client's erasure before the events of the client's case, on both
read-model backends. The bus may deliver it so (the client's stream and the case's are keys of
different partitions, topics of different services), and a rebuild may too: the fact entries
stored after it must hold no more than the erasure leaves when it arrives last (no categories
of need), and the documents must be the same bytes either way."""

from __future__ import annotations

from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import dump_document
from events.catalog.cases import PresentingNeed
from events.catalog.erasure import ClientErased
from events.catalog.values import NeedCategory
from events.envelope import RecordedEvent
from services.audit.adapters.timeline import FACTS, TimelineProjection
from tests.unit.audit.support import CASE, DAY, T0, Producer, assessed, intake, opened
from tests.unit.planning.support import dump

CLIENT = "client-7f3a"
MENTAL_HEALTH = (PresentingNeed(category=NeedCategory.MENTAL_HEALTH, description="Low mood"),)


def _history() -> list[RecordedEvent]:
    producer = intake()
    return [
        producer.record(
            opened().model_copy(update={"presenting_needs": MENTAL_HEALTH}), occurred_at=T0
        ),
        producer.record(assessed(), occurred_at=T0 + DAY),
    ]


def _erasure() -> RecordedEvent:
    return Producer("casetrail/intake", f"client-{CLIENT}").record(
        ClientErased(client_id=CLIENT, case_ids=(CASE,), request_reference="dms://r/1"),
        occurred_at=T0 + 9 * DAY,
    )


async def _stored(read_models: ReadModelStore, delivery: list[RecordedEvent]) -> dict[str, str]:
    projection = TimelineProjection()
    await read_models.reset(projection.name, projection.collections)
    handler = BusProjectionHandler(read_models, projection, service="audit")
    for recorded in delivery:
        await handler(recorded)
    documents = await dump(read_models, projection.collections)
    return {key: dump_document(document) for key, document in documents.items()}


async def test_an_erasure_delivered_before_the_cases_events_leaves_what_it_leaves_last(
    read_models: ReadModelStore,
) -> None:
    history, erased = _history(), _erasure()
    before_erasure = await _stored(read_models, history)
    assert "mental_health" in before_erasure[f"{FACTS}/{CASE}"], "the canary is stored"

    erased_last = await _stored(read_models, [*history, erased])
    assert "mental_health" not in erased_last[f"{FACTS}/{CASE}"]

    erased_first = await _stored(read_models, [erased, *history])
    # Before: the case's header did not exist yet, the erasure scrubbed nothing, and the
    # opening's entry kept the client's category of need in the clear.
    assert "mental_health" not in erased_first[f"{FACTS}/{CASE}"]
    assert erased_first == erased_last

    between = await _stored(read_models, [history[0], erased, history[1]])
    assert between == erased_last
