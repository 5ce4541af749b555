"""Every read model keyed by case that forgets an erased client's values (``CaseErasure``),
given the client's erasure before the case's events, on both read-model backends.

The bus orders a stream's events, not the client's stream against their cases' (other
partitions, other services' topics), and a case's event may still be decoded in the clear
after the erasure (decoded in the batch the erasure came in, or before the key's destruction,
which follows the erasure's record, reached the key table): the events here are such, with
their sensitive values in the clear. Whichever arrives first, the documents must be the same
bytes as when the erasure arrives last, holding none of those values. Intake's emergency accesses
come from intake's own store, in its order: an access's append is guarded on the client's
stream as read (``ClientErasure``), so none decided before the erasure is appended after it any
more, but their projection is held to the same rule as the others. (Audit's timeline has its
own test: ``test_timeline_erasure_order_contract``.)"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from casetrail_platform.commands import CommandContext
from casetrail_platform.keys.fields import FieldProtection
from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from casetrail_platform.policy.projection import CaseFactsProjection as PolicyFactsProjection
from casetrail_platform.projections.port import Projection, ReadModelStore
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import dump_document
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import CaseEvent
from events.catalog.erasure import ClientErased
from events.catalog.examples import CASE, CLIENT, example_events
from events.catalog_registry import default_registry
from events.envelope import RecordedEvent
from services.audit.adapters.timeline import TimelineProjection
from services.coordination.adapters.projections import CaseFactsProjection
from services.intake.adapters.emergency_accesses import EmergencyAccessesProjection
from services.planning.adapters.case_views import CaseViewProjection
from tests.unit.audit.support import INTAKE_WORKER as ACTOR
from tests.unit.audit.support import T0, Producer
from tests.unit.planning.support import dump

PROJECTIONS: dict[str, Callable[[], Projection]] = {
    "policy-facts": PolicyFactsProjection,
    "planning-case-view": CaseViewProjection,
    "coordination-case-facts": CaseFactsProjection,
    "intake-emergency-accesses": EmergencyAccessesProjection,
}
SEALED_PROJECTIONS: dict[str, Callable[[], Projection]] = {
    **PROJECTIONS,
    "audit-timeline": TimelineProjection,
}
"""With audit's timeline, which keeps each event as stored: only events sealed in a store (the
values as ciphertext) show that it keeps nothing more in the clear."""
FED_TO = {
    "policy-facts": "planning",
    "planning-case-view": "planning",
    "coordination-case-facts": "coordination",
    "intake-emergency-accesses": "intake",
    "audit-timeline": "audit",
}
"""The service whose bus handler applies each (the policy's facts: one of the three)."""
CANARIES = (
    *("home_care", "counseling", "socialisation", '"health"'),
    *("hip fracture", "corner shop", "medication list", "on-call log"),
)
"""Sensitive values of the example events in the clear: need categories, a consent's category
(the policy's facts), free text (planning's case view, an emergency access's reason and
review note)."""


def _case_events() -> list[CaseEvent]:
    return [
        event
        for event in example_events()
        if event.subject_field == "case_id"
        and event.subject == CASE
        and not isinstance(event, ClientErased)
    ]


def _history() -> list[RecordedEvent]:
    """Every example event of the case, as the bus delivers it, in the clear."""
    producer = Producer("casetrail/intake", f"case-{CASE}")
    events = _case_events()
    return [
        producer.record(event, occurred_at=T0 + timedelta(minutes=index))
        for index, event in enumerate(events)
    ]


def _erasure() -> RecordedEvent:
    return Producer("casetrail/intake", f"client-{CLIENT}").record(
        ClientErased(client_id=CLIENT, case_ids=(CASE,), request_reference="dms://r/1"),
        occurred_at=T0 + timedelta(days=9),
    )


async def _stored(
    read_models: ReadModelStore, name: str, projection: Projection, delivery: list[RecordedEvent]
) -> dict[str, str]:
    await read_models.reset(projection.name, projection.collections)
    handler = BusProjectionHandler(read_models, projection, service=FED_TO[name])
    for recorded in delivery:
        await handler(recorded)
    documents = await dump(read_models, projection.collections)
    return {key: dump_document(document) for key, document in documents.items()}


def _clear(stored: dict[str, str]) -> set[str]:
    return {canary for canary in CANARIES if any(canary in text for text in stored.values())}


@pytest.mark.parametrize("name", sorted(PROJECTIONS))
async def test_an_erasure_delivered_before_the_cases_events_leaves_what_it_leaves_last(
    read_models: ReadModelStore, name: str
) -> None:
    projection = PROJECTIONS[name]()
    history, erased = _history(), _erasure()
    assert _clear(await _stored(read_models, name, projection, history)), "the canaries are stored"

    erased_last = await _stored(read_models, name, projection, [*history, erased])
    assert not _clear(erased_last)

    # Before: the erasure found no document of the case, scrubbed nothing, and the document
    # the events made after it kept their values in the clear.
    erased_first = await _stored(read_models, name, projection, [erased, *history])
    assert not _clear(erased_first)
    assert erased_first == erased_last

    half = len(history) // 2
    between = await _stored(
        read_models, name, projection, [*history[:half], erased, *history[half:]]
    )
    assert between == erased_last

    # Rebuilt from zero with the erasure first (as a replay from the topics may deliver it).
    assert await _stored(read_models, name, projection, [erased, *history]) == erased_last


async def _sealed_history(tmp_path: Path) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
    """The case's events sealed in a store under the client's key, read back in the clear,
    then once the key is destroyed: as a rebuild after the erasure reads them."""
    table = SqliteDataKeyTable(tmp_path / "keys" / "keys.db")
    kek = FileKeyEncryptionKey(tmp_path / "keys" / KEK_FILE_NAME)

    async def read() -> list[RecordedEvent]:
        keyring = FieldProtection(ClientKeyring(kek, table))
        store = await SqliteEventStore.open(tmp_path / "sealed.db", registry.protected(keyring))
        try:
            recorded = await store.read_all(0)
            for each in recorded:
                each.event  # opened now, with the keys as they stand  # noqa: B018
            return list(recorded)
        finally:
            await store.close()

    registry = default_registry()
    store = await SqliteEventStore.open(
        tmp_path / "sealed.db", registry.protected(FieldProtection(ClientKeyring(kek, table)))
    )
    try:
        stream = f"case-{CASE}"
        for index, event in enumerate(_case_events()):
            context = CommandContext(actor=ACTOR, idempotency_key=f"k{index}", occurred_at=T0)
            events = context.new_events("casetrail/intake", [event])
            await store.append(stream, events, await store.stream_version(stream))
    finally:
        await store.close()
    try:
        clear = await read()
        ClientKeyring(kek, table).destroy(CLIENT)
        return clear, await read()
    finally:
        table.close()


@pytest.mark.parametrize("name", sorted(SEALED_PROJECTIONS))
async def test_events_read_erased_after_an_erasure_come_to_what_it_leaves_last(
    read_models: ReadModelStore, name: str, tmp_path: Path
) -> None:
    """A rebuild after the erasure reads the case's events erased (their key is destroyed),
    wherever the erasure falls: the same documents as the events read in the clear and the
    erasure last."""
    projection = SEALED_PROJECTIONS[name]()
    clear, read_erased = await _sealed_history(tmp_path)
    erased = _erasure()
    assert _clear(await _stored(read_models, name, projection, clear)), "the canaries are sealed"
    assert not _clear(await _stored(read_models, name, projection, read_erased))
    erased_last = await _stored(read_models, name, projection, [*clear, erased])
    assert await _stored(read_models, name, projection, [erased, *read_erased]) == erased_last
    assert await _stored(read_models, name, projection, [*read_erased, erased]) == erased_last
