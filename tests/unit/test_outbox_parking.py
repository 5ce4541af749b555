"""A record the bus refuses for good is parked with its case's later records; the rest flows
in order, health says so, and an operator's retry publishes the case again in order
(issue 8, item 7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from grpc_health.v1 import health, health_pb2

from casetrail_platform.bus.errors import PublishError
from casetrail_platform.bus.inprocess import InProcessBus
from casetrail_platform.bus.kafka import KafkaEventPublisher
from casetrail_platform.bus.port import Acknowledgement, EventPublisher
from casetrail_platform.checkpoints import InMemoryCheckpointStore
from casetrail_platform.hosting import watch_outbox
from casetrail_platform.outbox import OutboxRelay
from casetrail_platform.parking import ParkingLot
from casetrail_platform.store.port import NO_STREAM
from casetrail_platform.store.sqlite import SqliteEventStore
from casetrail_platform.store.sqlite_parking import SqliteParkingLot
from events.catalog.base import CaseEvent
from events.envelope import NewEvent, RecordedEvent
from events.registry import EventRegistry
from events.topics import DEFAULT_CASE_EVENTS_TOPIC
from tests.contract.bus_conftest import kafka_test_settings
from tests.support.sample_events import NoteWritten, note, sample_registry
from tests.support.waiting import eventually, health_reports

NAME = "casetrail.test.outbox"

TOO_BIG = "x" * 500


class SizeLimitedPublisher(EventPublisher):
    """Refuses, for good, any call holding a note longer than ``limit`` characters, as a
    Kafka topic with a small ``max.message.bytes`` does (the whole batch fails)."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self.published: list[RecordedEvent] = []

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        for record in records:
            if len(str(getattr(record.event, "text", ""))) > self.limit:
                raise PublishError("MessageSizeTooLargeError", refused=True)
        self.published.extend(records)

    async def enqueue(self, records: Sequence[RecordedEvent]) -> Acknowledgement:
        acknowledged: Acknowledgement = asyncio.get_running_loop().create_future()
        try:
            await self.publish(records)
        except PublishError as error:
            acknowledged.set_exception(error)
        else:
            acknowledged.set_result(None)
        return acknowledged

    def sequences(self, case_id: str) -> list[int]:
        return [r.sequence for r in self.published if r.subject == case_id]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    yield opened
    await opened.close()


async def add(store: SqliteEventStore, case_id: str, *texts: str) -> list[RecordedEvent]:
    stream = f"case-{case_id}"
    version = await store.stream_version(stream)
    return await store.append(stream, [note(case_id, text) for text in texts], version)


async def publish_until_settled(relay: OutboxRelay) -> None:
    """What ``run`` does: try again after a failure (the second attempt isolates)."""
    for _ in range(3):
        try:
            await relay.publish_pending()
            return
        except PublishError:
            continue
    raise AssertionError("the relay never got past the refusal")


def retrying(
    store: SqliteEventStore, publisher: EventPublisher, parking: ParkingLot
) -> OutboxRelay:
    """A relay that looks for retry requests on every round (``retry_check_every=0``)."""
    return OutboxRelay(
        store, publisher, InMemoryCheckpointStore(), "relay", parking=parking, retry_check_every=0.0
    )


async def test_a_refused_record_is_parked_with_its_case_and_the_rest_flows_in_order(
    store: SqliteEventStore,
) -> None:
    publisher = SizeLimitedPublisher()
    parking: ParkingLot = SqliteParkingLot(store)
    checkpoints = InMemoryCheckpointStore()
    relay = OutboxRelay(store, publisher, checkpoints, "relay", batch_size=4, parking=parking)
    await add(store, "a", "one")
    await add(store, "b", "one")
    refused = (await add(store, "a", TOO_BIG))[0]
    await add(store, "b", "two", "three")
    held = await add(store, "a", "three", "four")
    await add(store, "c", "one")

    await publish_until_settled(relay)

    assert publisher.sequences("a") == [1]  # nothing of case a after the refused one
    assert publisher.sequences("b") == [1, 2, 3]
    assert publisher.sequences("c") == [1]
    parked = await parking.parked("relay")
    assert [r.position for r in parked] == [refused.position] + [r.position for r in held]
    assert parked[0].reason.startswith("refused by the bus: MessageSizeTooLargeError")
    assert all(r.reason.startswith("held:") for r in parked[1:])
    assert TOO_BIG not in repr(parked)  # reasons and keys only, never the data
    status = await relay.status()
    assert (status.parked, status.parked_total, status.lag) == (3, 3, 0)
    assert "MessageSizeTooLargeError" in (status.parked_reason or "")

    # Later events of the parked case stay parked; other cases go on.
    await add(store, "a", "five")
    await add(store, "b", "four")
    await relay.publish_pending()
    assert publisher.sequences("a") == [1]
    assert publisher.sequences("b") == [1, 2, 3, 4]
    assert (await relay.status()).parked == 4


async def test_a_retry_publishes_the_parked_case_in_order_and_forgets_it(
    store: SqliteEventStore,
) -> None:
    publisher = SizeLimitedPublisher()
    parking = SqliteParkingLot(store)
    relay = retrying(store, publisher, parking)
    await add(store, "a", "one", TOO_BIG, "three")
    await publish_until_settled(relay)
    assert publisher.sequences("a") == [1]

    assert await parking.request_retry("relay", "a") == 2
    await relay.publish_pending()  # still too large: stays parked, the request is cleared
    assert publisher.sequences("a") == [1]
    assert [r.retry_requested for r in await parking.parked("relay")] == [False, False]

    publisher.limit = 1000  # the operator raised the topic's limit
    await parking.request_retry("relay")
    await add(store, "a", "four")
    await relay.publish_pending()
    assert publisher.sequences("a") == [1, 2, 3, 4]
    assert await parking.parked("relay") == []
    assert (await relay.status()).parked == 0


async def test_a_retry_refused_at_a_held_record_tells_that_refusal(
    store: SqliteEventStore,
) -> None:
    """The limit raised enough for the refused record but not for one held behind it: the
    retry publishes the first and is refused at the second, which was parked as held behind
    the first. Its reason becomes the refusal; it named a record no longer parked, and the
    health check then told no reason at all ("None")."""
    publisher = SizeLimitedPublisher()
    parking = SqliteParkingLot(store)
    relay = retrying(store, publisher, parking)
    await add(store, "a", "one", "x" * 200, "x" * 2000)
    await publish_until_settled(relay)
    assert [r.reason.startswith("held:") for r in await parking.parked("relay")] == [False, True]

    publisher.limit = 1000  # raised, but not enough for the third
    await parking.request_retry("relay", "a")
    await relay.publish_pending()
    assert publisher.sequences("a") == [1, 2]
    [still] = await parking.parked("relay")
    assert (still.sequence, still.retry_requested) == (3, False)
    assert still.reason.startswith("refused by the bus: MessageSizeTooLargeError")
    assert "MessageSizeTooLargeError" in ((await relay.status()).parked_reason or "")


async def test_parked_records_survive_a_restart_of_the_relay(store: SqliteEventStore) -> None:
    publisher = SizeLimitedPublisher()
    checkpoints = InMemoryCheckpointStore()
    first = OutboxRelay(store, publisher, checkpoints, "relay", parking=SqliteParkingLot(store))
    await add(store, "a", TOO_BIG)
    await publish_until_settled(first)

    restarted = OutboxRelay(store, publisher, checkpoints, "relay", parking=SqliteParkingLot(store))
    await add(store, "a", "two")
    await add(store, "b", "one")
    await restarted.publish_pending()
    assert publisher.sequences("a") == []
    assert publisher.sequences("b") == [1]
    assert (await restarted.status()).parked == 2


async def test_health_reports_the_outbox_not_serving_while_records_are_parked(
    store: SqliteEventStore,
) -> None:
    publisher = SizeLimitedPublisher()
    parking = SqliteParkingLot(store)
    relay = retrying(store, publisher, parking)
    await add(store, "a", TOO_BIG)
    await publish_until_settled(relay)
    servicer = health.aio.HealthServicer()
    await servicer.set(NAME, health_pb2.HealthCheckResponse.UNKNOWN)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(relay.run(stop)),
        asyncio.create_task(watch_outbox(relay, servicer, NAME, stop, every=0.01)),
    ]
    try:
        await eventually(
            health_reports(servicer, NAME, health_pb2.HealthCheckResponse.NOT_SERVING),
            "outbox unhealthy",
        )
        publisher.limit = 1000
        await parking.request_retry("relay")
        await eventually(
            health_reports(servicer, NAME, health_pb2.HealthCheckResponse.SERVING), "outbox healthy"
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert publisher.sequences("a") == [1]


class RefusingAtHandOver(SizeLimitedPublisher):
    """Refuses when the records are handed over (``enqueue`` raising at once, as the port
    allows and as its default ``enqueue`` does), not in the acknowledgement."""

    async def enqueue(self, records: Sequence[RecordedEvent]) -> Acknowledgement:
        return await EventPublisher.enqueue(self, records)


async def test_a_record_refused_at_hand_over_is_parked_too(store: SqliteEventStore) -> None:
    # The relay looked for the refused record only when an acknowledgement failed: refused at
    # hand-over, with nothing in flight, the same batch was sent again on every round for ever.
    publisher = RefusingAtHandOver()
    parking: ParkingLot = SqliteParkingLot(store)
    relay = OutboxRelay(
        store, publisher, InMemoryCheckpointStore(), "relay", batch_size=4, parking=parking
    )
    await add(store, "a", "one")
    refused = (await add(store, "a", TOO_BIG))[0]
    await add(store, "b", "one", "two")

    await publish_until_settled(relay)

    assert publisher.sequences("a") == [1]
    assert publisher.sequences("b") == [1, 2]
    assert [r.position for r in await parking.parked("relay")] == [refused.position]
    assert (await relay.status()).lag == 0


class DownOnce(SizeLimitedPublisher):
    """Once ``down`` is set, fails the next publish as a broker away does (not refused)."""

    down = False

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        if self.down:
            self.down = False
            raise PublishError("KafkaConnectionError: broker away")
        await super().publish(records)


async def test_a_retry_cut_short_by_a_broker_outage_is_tried_again(
    store: SqliteEventStore,
) -> None:
    # The relay cleared the operator's request on any failure of the retry, a broker briefly
    # away too: the case stayed parked for good although nothing was wrong with its records.
    publisher = DownOnce()
    parking = SqliteParkingLot(store)
    relay = retrying(store, publisher, parking)
    await add(store, "a", "one", TOO_BIG, "three")
    await publish_until_settled(relay)
    publisher.limit = 1000  # the operator raised the topic's limit
    assert await parking.request_retry("relay", "a") == 2

    publisher.down = True
    await publish_until_settled(relay)  # the outage meets the retry; the next round retries

    assert publisher.sequences("a") == [1, 2, 3]
    assert await parking.parked("relay") == []


class Away(SizeLimitedPublisher):
    """Fails every publish as a broker away does (not refused) while ``away`` is set."""

    away = False

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        if self.away:
            raise PublishError("KafkaConnectionError: broker away")
        await super().publish(records)


async def test_records_held_round_after_round_while_the_bus_is_away_count_once(
    store: SqliteEventStore,
) -> None:
    # Each failed round read the held records again and added their positions to the relay's
    # list once more: status and metrics counted 51 parked after 50 rounds (the lot held 2),
    # and the list grew for as long as the outage lasted.
    publisher = Away()
    parking = SqliteParkingLot(store)
    relay = OutboxRelay(store, publisher, InMemoryCheckpointStore(), "relay", parking=parking)
    await add(store, "a", "one", TOO_BIG)
    await publish_until_settled(relay)
    await add(store, "a", "three")
    await add(store, "b", "one")
    publisher.away = True
    for _ in range(20):
        with pytest.raises(PublishError, match="broker away"):
            await relay.publish_pending()

    status = await relay.status()
    assert (status.parked, status.parked_total) == (2, 2)
    assert len(await parking.parked("relay")) == 2
    publisher.away = False
    await relay.publish_pending()
    assert publisher.sequences("b") == [1]
    assert (await relay.status()).parked == 2


async def test_a_parked_record_is_not_taken_as_published_by_any_replica(
    store: SqliteEventStore,
) -> None:
    """The relay goes past a parked record (its checkpoint too): coordination's assignment
    commands, waiting for their event to be on the bus (``OutboxRelay.published``), must not
    take it as there, in the replica leading the relay or another."""
    parking: ParkingLot = SqliteParkingLot(store)
    checkpoints = InMemoryCheckpointStore()
    leader = OutboxRelay(store, SizeLimitedPublisher(), checkpoints, "relay", parking=parking)
    other = OutboxRelay(store, SizeLimitedPublisher(), checkpoints, "relay", parking=parking)
    [refused] = await add(store, "a", TOO_BIG)
    [flowing] = await add(store, "b", "one")
    await publish_until_settled(leader)

    for relay in (leader, other):
        assert await relay.published(flowing.position, 1.0)
        assert not await relay.published(refused.position, 1.0)


async def lead_once(relay: OutboxRelay, store: SqliteEventStore) -> None:
    """``relay`` leads until it has published the whole store, then loses leadership (the
    locks' ``lead`` sets the event its ``run`` was given)."""
    lost = asyncio.Event()
    leading = asyncio.create_task(relay.run(lost))
    last = await store.last_position()

    async def gone_past() -> bool | None:
        return (await relay.status()).published_position >= last or None

    await eventually(gone_past, "the relay past the store's last record")
    lost.set()
    await leading


async def test_a_replica_that_lost_leadership_forgets_what_it_saw_parked(
    store: SqliteEventStore,
) -> None:
    """Another replica leads the relay meanwhile: what it parks and releases is in the parking
    lot, not in the list the first one kept (a record parked since was taken as on the bus,
    one released since reported parked, the outbox NOT_SERVING, for ever)."""
    parking: ParkingLot = SqliteParkingLot(store)
    checkpoints = InMemoryCheckpointStore()
    publisher = SizeLimitedPublisher()
    first = OutboxRelay(store, publisher, checkpoints, "relay", parking=parking)
    second = OutboxRelay(
        store, publisher, checkpoints, "relay", parking=parking, retry_check_every=0.0
    )
    [refused] = await add(store, "a", TOO_BIG)
    await lead_once(first, store)  # parks it, then another replica leads

    publisher.limit = 1000
    await parking.request_retry("relay")
    await second.publish_pending()  # the new leader releases it
    assert await first.published(refused.position, 1.0)
    assert (await first.status()).parked == 0

    publisher.limit = 100
    [parked_since] = await add(store, "b", TOO_BIG)
    await publish_until_settled(second)  # the new leader parks it
    assert not await first.published(parked_since.position, 1.0)
    assert (await first.status()).parked == 0  # the leader's to report


async def test_a_replica_leading_again_goes_on_from_where_the_other_one_left(
    store: SqliteEventStore,
) -> None:
    """Its own position from when it led before is behind the checkpoint the other replica
    moved on meanwhile: going on from it would publish those records a second time."""
    checkpoints = InMemoryCheckpointStore()
    publisher = SizeLimitedPublisher()
    first = OutboxRelay(store, publisher, checkpoints, "relay")
    second = OutboxRelay(store, publisher, checkpoints, "relay")
    await add(store, "a", "one", "two")
    await lead_once(first, store)
    await add(store, "b", "three")
    await lead_once(second, store)
    await add(store, "c", "four")

    await lead_once(first, store)

    positions = [record.position for record in publisher.published]
    assert positions == list(range(1, await store.last_position() + 1))


class NoteWrittenPastTheRules(CaseEvent):
    """``NoteWritten`` as an older release stored one: version 1, with a field version 2's
    model refuses, so that it no longer upcasts (``UnreadableStoredEventError``)."""

    event_type = NoteWritten.event_type
    schema_version = 1
    case_id: str
    text: str
    mood: str


async def test_a_stored_record_that_no_longer_decodes_is_parked_and_the_rest_flows(
    tmp_path: Path,
) -> None:
    """Published upcast, it cannot be encoded: the relay failed on it for good, round after
    round, and nothing of any case stored after it reached the bus."""
    path = tmp_path / "unreadable.db"
    older = await SqliteEventStore.open(path, EventRegistry([NoteWrittenPastTheRules]))
    unreadable = NoteWrittenPastTheRules(case_id="a", text="one", mood="sad")
    await older.append("case-a", [NewEvent(unreadable, note("a").metadata)], NO_STREAM)
    await older.close()
    store = await SqliteEventStore.open(path, sample_registry())
    try:
        await add(store, "a", "two")
        await add(store, "b", "one", "two")
        bus = InProcessBus()
        parking: ParkingLot = SqliteParkingLot(store)
        relay = OutboxRelay(
            store, bus.publisher(), InMemoryCheckpointStore(), "relay", parking=parking
        )

        await publish_until_settled(relay)

        on_the_bus = [m.recorded for m in bus.messages(DEFAULT_CASE_EVENTS_TOPIC)]
        assert [(r.subject, r.sequence) for r in on_the_bus if r] == [("b", 1), ("b", 2)]
        parked = await parking.parked("relay")
        assert [(r.key, r.sequence) for r in parked] == [("a", 1), ("a", 2)]
        assert "does not decode" in parked[0].reason
        assert "sad" not in repr(parked)
        assert (await relay.status()).lag == 0
        # The Kafka publisher refuses it alike, before anything is sent.
        [stored, _] = await store.read_stream("case-a")
        with pytest.raises(PublishError) as refused:
            await KafkaEventPublisher(kafka_test_settings()).enqueue([stored])
        assert refused.value.refused
    finally:
        await store.close()
