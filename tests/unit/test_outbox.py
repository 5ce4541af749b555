"""The outbox relay: store -> bus, checkpoint only after the bus acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from casetrail_platform.bus.errors import PublishError
from casetrail_platform.bus.inprocess import InProcessBus
from casetrail_platform.bus.port import Acknowledgement, EventPublisher
from casetrail_platform.bus.retry import Backoff
from casetrail_platform.checkpoints import CheckpointStore, InMemoryCheckpointStore
from casetrail_platform.outbox import OutboxRelay
from casetrail_platform.store.sqlite import SqliteEventStore
from events.envelope import RecordedEvent
from tests.contract.bus_conftest import WAIT_LIMIT, Recorder, eventually, running
from tests.support.sample_events import note, sample_registry

QUICK = Backoff(initial=0.01, maximum=0.02)


class RecordingPublisher(EventPublisher):
    """Acknowledges (or, while ``down``, refuses) and remembers every batch."""

    def __init__(self, *, durable: bool = True) -> None:
        self.batches: list[list[RecordedEvent]] = []
        self.down = False
        self.refusals = 0
        self._durable = durable

    @property
    def durable(self) -> bool:
        return self._durable

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        if self.down:
            self.refusals += 1
            raise PublishError("broker unreachable")
        self.batches.append(list(records))

    @property
    def published(self) -> list[RecordedEvent]:
        return [event for batch in self.batches for event in batch]


class CrashingCheckpoints(CheckpointStore):
    """A checkpoint store whose process 'dies' on the next save."""

    def __init__(self, inner: CheckpointStore) -> None:
        self.inner = inner
        self.crash_next_save = True

    async def load(self, name: str) -> int:
        return await self.inner.load(name)

    async def save(self, name: str, position: int) -> None:
        if self.crash_next_save:
            self.crash_next_save = False
            raise RuntimeError("killed between publish and checkpoint")
        await self.inner.save(name, position)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    yield opened
    await opened.close()


async def add_notes(store: SqliteEventStore, case_id: str, count: int) -> list[RecordedEvent]:
    stream = f"case-{case_id}"
    version = await store.stream_version(stream)
    return await store.append(stream, [note(case_id) for _ in range(count)], version)


async def test_publishes_the_store_in_order_and_checkpoints_after_each_batch(
    store: SqliteEventStore,
) -> None:
    stored = await add_notes(store, "c-1", 4) + await add_notes(store, "c-2", 3)
    publisher, checkpoints = RecordingPublisher(), InMemoryCheckpointStore()
    relay = OutboxRelay(store, publisher, checkpoints, "relay", batch_size=3)

    assert await relay.publish_pending() == 7

    assert [len(batch) for batch in publisher.batches] == [3, 3, 1]
    assert [e.event_id for e in publisher.published] == [e.event_id for e in stored]
    assert await checkpoints.load("relay") == stored[-1].position
    assert await relay.publish_pending() == 0
    assert await relay.lag() == 0


async def test_a_refused_publish_leaves_the_checkpoint_where_it_was(
    store: SqliteEventStore,
) -> None:
    stored = await add_notes(store, "c-1", 3)
    publisher, checkpoints = RecordingPublisher(), InMemoryCheckpointStore()
    relay = OutboxRelay(store, publisher, checkpoints, "relay")
    publisher.down = True

    with pytest.raises(PublishError):
        await relay.publish_pending()
    assert await checkpoints.load("relay") == 0
    assert await relay.lag() == 3

    publisher.down = False
    assert await relay.publish_pending() == 3
    assert [e.event_id for e in publisher.published] == [e.event_id for e in stored]


async def test_a_crash_between_publish_and_checkpoint_publishes_the_batch_again(
    store: SqliteEventStore,
) -> None:
    stored = await add_notes(store, "c-1", 2)
    publisher = RecordingPublisher()
    checkpoints = CrashingCheckpoints(InMemoryCheckpointStore())

    with pytest.raises(RuntimeError, match="killed"):
        await OutboxRelay(store, publisher, checkpoints, "relay").publish_pending()
    restarted = OutboxRelay(store, publisher, checkpoints, "relay")
    assert await restarted.publish_pending() == 2

    ids = [e.event_id for e in stored]
    assert [e.event_id for e in publisher.published] == ids + ids
    assert await checkpoints.load("relay") == stored[-1].position


async def test_run_waits_out_a_bus_outage_while_the_store_keeps_accepting(
    store: SqliteEventStore,
) -> None:
    publisher, checkpoints = RecordingPublisher(), InMemoryCheckpointStore()
    relay = OutboxRelay(store, publisher, checkpoints, "relay", backoff=QUICK, idle_timeout=0.05)
    publisher.down = True
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        during = await add_notes(store, "c-1", 3)
        await eventually(lambda: publisher.refusals >= 3, "the relay to retry")
        status = await relay.status()
        assert status.lag == 3
        assert status.consecutive_failures >= 1
        assert status.last_error is not None
        assert await checkpoints.load("relay") == 0

        publisher.down = False
        after = await add_notes(store, "c-1", 2)
        expected = [e.event_id for e in during + after]
        await eventually(
            lambda: [e.event_id for e in publisher.published] == expected, "every event"
        )
    finally:
        stop.set()
        await task
    status = await relay.status()
    assert status.lag == 0
    assert status.consecutive_failures == 0
    assert await checkpoints.load("relay") == after[-1].position


async def test_stop_ends_run_even_in_a_long_backoff(store: SqliteEventStore) -> None:
    await add_notes(store, "c-1", 1)
    publisher = RecordingPublisher()
    publisher.down = True
    relay = OutboxRelay(
        store, publisher, InMemoryCheckpointStore(), "relay", backoff=Backoff(600, 600)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await eventually(lambda: publisher.refusals == 1, "the first attempt")
    stop.set()
    async with asyncio.timeout(30):  # guards against a hang only
        await task


async def test_a_relay_in_front_of_a_forgetful_bus_starts_from_the_beginning(
    store: SqliteEventStore,
) -> None:
    stored = await add_notes(store, "c-1", 3)
    checkpoints = InMemoryCheckpointStore()
    await checkpoints.save("relay", stored[-1].position)

    durable = RecordingPublisher()
    assert await OutboxRelay(store, durable, checkpoints, "relay").publish_pending() == 0

    forgetful = RecordingPublisher(durable=False)
    relay = OutboxRelay(store, forgetful, checkpoints, "relay")
    assert await relay.lag() == 3
    assert await relay.publish_pending() == 3
    assert [e.event_id for e in forgetful.published] == [e.event_id for e in stored]
    assert await relay.lag() == 0


async def test_a_relay_in_front_of_a_forgetful_bus_never_moves_the_checkpoint(
    store: SqliteEventStore,
) -> None:
    await add_notes(store, "c-1", 3)
    checkpoints = InMemoryCheckpointStore()
    forgetful = OutboxRelay(store, RecordingPublisher(durable=False), checkpoints, "relay")
    assert await forgetful.publish_pending() == 3
    assert await checkpoints.load("relay") == 0

    kafka_later = RecordingPublisher()
    assert await OutboxRelay(store, kafka_later, checkpoints, "relay").publish_pending() == 3


async def test_events_reach_subscribers_through_the_in_process_bus(
    store: SqliteEventStore,
) -> None:
    bus = InProcessBus(partitions=3)
    relay = OutboxRelay(
        store, bus.publisher(), InMemoryCheckpointStore(), "relay", idle_timeout=0.05
    )
    recorder = Recorder()
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    try:
        async with running(bus.subscriber(sample_registry()), "planning", recorder):
            stored = await add_notes(store, "c-1", 2) + await add_notes(store, "c-2", 2)
            await eventually(lambda: recorder.has_all(stored), "every stored event")
    finally:
        stop.set()
        await relaying
    assert {e.event_id: e for e in recorder.deliveries} == {e.event_id: e for e in stored}


async def test_the_in_process_bus_is_caught_up_once_every_relay_refilling_it_has(
    store: SqliteEventStore, tmp_path: Path
) -> None:
    """The bus is rebuilt from the stores at each start, each relay at its own pace: a group
    that handled all one relay republished of a case is not caught up with what was recorded
    while another relay has yet to republish the case's later events."""
    other = await SqliteEventStore.open(tmp_path / "other.db", sample_registry())
    try:
        earlier = await add_notes(store, "c-1", 1)
        later = await add_notes(other, "c-1", 1)
        bus, checkpoints = InProcessBus(partitions=3), InMemoryCheckpointStore()
        quick = OutboxRelay(store, bus.publisher(), checkpoints, "quick")
        slow = OutboxRelay(other, bus.publisher(), checkpoints, "slow")
        subscriber = bus.subscriber(sample_registry())
        recorder = Recorder()
        async with running(subscriber, "planning", recorder):
            await quick.publish_pending()
            await eventually(lambda: recorder.has_all(earlier), "the quick relay's event")
            assert not await subscriber.caught_up("planning", "c-1", patience=0.3)
            waiting = asyncio.ensure_future(
                subscriber.caught_up("planning", "c-1", patience=WAIT_LIMIT)
            )
            await slow.publish_pending()
            assert await waiting
            assert recorder.has_all(later)
    finally:
        await other.close()


async def test_a_relay_stopped_before_it_refilled_the_bus_is_not_waited_for(
    store: SqliteEventStore,
) -> None:
    """It refills nothing more: the store's next relay (the service started again) tells the
    bus anew."""
    await add_notes(store, "c-1", 1)
    bus = InProcessBus()
    relay = OutboxRelay(store, bus.publisher(), InMemoryCheckpointStore(), "relay")
    subscriber = bus.subscriber(sample_registry())
    assert not await subscriber.caught_up("planning", "c-1", patience=0.1)
    stopped = asyncio.Event()
    stopped.set()
    await relay.run(stopped)
    assert await subscriber.caught_up("planning", "c-1", patience=0.1)


class HangingPublisher(EventPublisher):
    """A bus that is down but never says so (an idempotent Kafka producer waits it out)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        self.entered.set()
        await asyncio.Event().wait()


async def test_a_publish_that_hangs_shows_in_the_status_and_stop_still_works(
    store: SqliteEventStore,
) -> None:
    await add_notes(store, "c-1", 2)
    publisher, checkpoints = HangingPublisher(), InMemoryCheckpointStore()
    relay = OutboxRelay(store, publisher, checkpoints, "relay")
    assert (await relay.status()).publish_waiting_seconds is None
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await eventually(publisher.entered.is_set, "the publish to start")

    status = await relay.status()
    assert status.publish_waiting_seconds is not None
    assert status.lag == 2
    stop.set()
    async with asyncio.timeout(30):  # guards against a hang only
        await task
    assert await checkpoints.load("relay") == 0
    assert (await relay.status()).publish_waiting_seconds is None


class AckByHand(EventPublisher):
    """Takes batches at once and acknowledges each one when the test says so."""

    def __init__(self) -> None:
        self.batches: list[list[RecordedEvent]] = []
        self.acknowledgements: list[Acknowledgement] = []

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        await (await self.enqueue(records))

    async def enqueue(self, records: Sequence[RecordedEvent]) -> Acknowledgement:
        self.batches.append(list(records))
        acknowledgement: Acknowledgement = asyncio.get_running_loop().create_future()
        self.acknowledgements.append(acknowledgement)
        return acknowledgement

    def acknowledge(self, batch: int) -> None:
        self.acknowledgements[batch].set_result(None)

    def refuse(self, batch: int) -> None:
        self.acknowledgements[batch].set_exception(PublishError("not acknowledged"))

    @property
    def published(self) -> list[RecordedEvent]:
        return [event for batch in self.batches for event in batch]


async def test_batches_are_pipelined_and_the_checkpoint_follows_acknowledgements_in_order(
    store: SqliteEventStore,
) -> None:
    stored = await add_notes(store, "c-1", 6)
    publisher, checkpoints = AckByHand(), InMemoryCheckpointStore()
    relay = OutboxRelay(store, publisher, checkpoints, "relay", batch_size=2, max_in_flight=4)
    relaying = asyncio.create_task(relay.publish_pending())
    try:
        await eventually(lambda: len(publisher.batches) == 3, "every batch to be handed over")
        assert [e.event_id for e in publisher.published] == [e.event_id for e in stored]
        assert (await relay.status()).publish_waiting_seconds is not None

        publisher.acknowledge(1)  # the bus acknowledged a later batch first
        await asyncio.sleep(0)
        assert await checkpoints.load("relay") == 0
        publisher.acknowledge(0)
        publisher.acknowledge(2)
        assert await relaying == 6
    finally:
        relaying.cancel()
    assert await checkpoints.load("relay") == stored[-1].position
    status = await relay.status()
    assert status.lag == 0
    assert status.publish_waiting_seconds is None


async def test_no_more_than_max_in_flight_batches_wait_for_the_bus(
    store: SqliteEventStore,
) -> None:
    stored = await add_notes(store, "c-1", 6)
    publisher, checkpoints = AckByHand(), InMemoryCheckpointStore()
    relay = OutboxRelay(store, publisher, checkpoints, "relay", batch_size=2, max_in_flight=2)
    relaying = asyncio.create_task(relay.publish_pending())
    try:
        await eventually(lambda: len(publisher.batches) == 2, "two batches in flight")
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(publisher.batches) == 2

        publisher.acknowledge(0)
        await eventually(lambda: len(publisher.batches) == 3, "the third batch")
        assert await checkpoints.load("relay") == stored[1].position
        publisher.acknowledge(1)
        publisher.acknowledge(2)
        assert await relaying == 6
    finally:
        relaying.cancel()


async def test_a_refused_batch_stops_the_checkpoint_before_it_whatever_follows(
    store: SqliteEventStore,
) -> None:
    stored = await add_notes(store, "c-1", 6)
    publisher, checkpoints = AckByHand(), InMemoryCheckpointStore()
    relay = OutboxRelay(store, publisher, checkpoints, "relay", batch_size=2)
    relaying = asyncio.create_task(relay.publish_pending())
    await eventually(lambda: len(publisher.batches) == 3, "every batch to be handed over")
    publisher.acknowledge(0)
    publisher.refuse(1)
    publisher.acknowledge(2)

    with pytest.raises(PublishError):
        await relaying
    assert await checkpoints.load("relay") == stored[1].position
    assert (await relay.status()).lag == 4

    again = RecordingPublisher()
    assert await OutboxRelay(store, again, checkpoints, "relay").publish_pending() == 4
    assert [e.event_id for e in again.published] == [e.event_id for e in stored[2:]]


async def test_stop_while_batches_are_in_flight_saves_no_checkpoint_for_them(
    store: SqliteEventStore,
) -> None:
    await add_notes(store, "c-1", 4)
    publisher, checkpoints = AckByHand(), InMemoryCheckpointStore()
    relay = OutboxRelay(store, publisher, checkpoints, "relay", batch_size=2, idle_timeout=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await eventually(lambda: len(publisher.batches) == 2, "both batches in flight")
    stop.set()
    async with asyncio.timeout(30):  # guards against a hang only
        await task
    publisher.acknowledge(0)
    publisher.acknowledge(1)
    await asyncio.sleep(0)
    assert await checkpoints.load("relay") == 0
    assert (await relay.status()).lag == 4


def test_max_in_flight_must_be_positive(store: SqliteEventStore) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        OutboxRelay(store, RecordingPublisher(), InMemoryCheckpointStore(), "r", max_in_flight=0)


async def test_published_waits_for_the_bus_to_acknowledge_a_position_bounded(
    store: SqliteEventStore,
) -> None:
    """What coordination's assignment commands wait for before answering: the relay leading
    is told at once; while the bus is down the wait gives up at its bound."""
    publisher, checkpoints = RecordingPublisher(), InMemoryCheckpointStore()
    relay = OutboxRelay(store, publisher, checkpoints, "relay", backoff=QUICK, idle_timeout=0.05)
    publisher.down = True
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        [first] = await add_notes(store, "c-1", 1)
        assert not await relay.published(first.position, 0.2)
        publisher.down = False
        assert await relay.published(first.position, 10.0)
        assert first.event_id in {e.event_id for e in publisher.published}
    finally:
        stop.set()
        await task


class HeldCheckpoints(CheckpointStore):
    """Saves wait while ``released`` is clear; loads are counted, saves remembered."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.released.set()
        self.loads = 0
        self.saved: list[int] = []

    async def load(self, name: str) -> int:
        self.loads += 1
        return max(self.saved, default=0)

    async def save(self, name: str, position: int) -> None:
        await self.released.wait()
        self.saved.append(position)


async def test_the_leader_tells_its_waiters_before_it_saves_its_checkpoint(
    store: SqliteEventStore,
) -> None:
    """A command answered once published does not wait for the checkpoint's write as well,
    nor read the checkpoint in the replica that leads the relay: it knows its own progress."""
    checkpoints = HeldCheckpoints()
    relay = OutboxRelay(store, RecordingPublisher(), checkpoints, "relay", idle_timeout=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        [first] = await add_notes(store, "c-1", 1)
        assert await relay.published(first.position, 5.0)
        await eventually(lambda: first.position in checkpoints.saved, "the first checkpoint")
        checkpoints.released.clear()
        loads = checkpoints.loads

        [second] = await add_notes(store, "c-1", 1)
        assert await relay.published(second.position, 1.0)
        assert checkpoints.loads == loads
        assert second.position not in checkpoints.saved

        checkpoints.released.set()
        await eventually(lambda: second.position in checkpoints.saved, "the second checkpoint")
    finally:
        checkpoints.released.set()
        stop.set()
        await task


async def test_a_leader_left_untold_reads_the_checkpoint_another_replica_saved(
    store: SqliteEventStore,
) -> None:
    """Leadership lost unnoticed: the replica that thinks it leads is stuck (its bus is down)
    while another publishes; after one look period it finds the other's checkpoint."""
    checkpoints = InMemoryCheckpointStore()
    stuck_publisher = RecordingPublisher()
    stuck_publisher.down = True
    stuck = OutboxRelay(
        store, stuck_publisher, checkpoints, "relay", backoff=QUICK, idle_timeout=0.05
    )
    stop = asyncio.Event()
    task = asyncio.create_task(stuck.run(stop))
    try:
        [first] = await add_notes(store, "c-1", 1)
        await eventually(lambda: stuck_publisher.refusals > 0, "the stuck relay's first try")
        waiting = asyncio.ensure_future(stuck.published(first.position, 10.0))
        await OutboxRelay(store, RecordingPublisher(), checkpoints, "relay").publish_pending()
        assert await waiting
    finally:
        stop.set()
        await task


async def test_a_replica_not_leading_the_relay_reads_the_leaders_checkpoint(
    store: SqliteEventStore,
) -> None:
    publisher, checkpoints = RecordingPublisher(), InMemoryCheckpointStore()
    leader = OutboxRelay(store, publisher, checkpoints, "relay", idle_timeout=0.05)
    other = OutboxRelay(store, RecordingPublisher(), checkpoints, "relay")
    [first] = await add_notes(store, "c-1", 1)
    assert not await other.published(first.position, 0.1)
    waiting = asyncio.ensure_future(other.published(first.position, 10.0))
    await leader.publish_pending()
    assert await waiting
