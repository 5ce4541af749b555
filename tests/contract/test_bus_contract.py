"""The event-bus contract: every adapter (in-process, Kafka) must pass all of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from uuid import UUID

import pytest

from casetrail_platform.bus.errors import BarrierNotReachedError, RetriableHandlerError
from casetrail_platform.bus.ordering import SequenceGuard
from casetrail_platform.bus.retry import Backoff, RetryPolicy
from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.projections.port import DocumentTransaction, Projection
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.telemetry.metrics import process_metrics
from events.cloudevents import to_kafka_binary
from events.dead_letters import DeadLetterReason
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from tests.contract.bus_conftest import (
    FAST_RETRY,
    WAIT_LIMIT,
    BatchRecorder,
    BusHarness,
    Recorder,
    cancel,
    case_history,
    eventually,
    first_seen_order,
    open_harness,
    recorded,
    running,
    touched,
)
from tests.support.sample_events import CaseTouched, NoteWritten, sample_registry


@pytest.fixture
def bus_registry() -> EventRegistry:
    return sample_registry()


@pytest.fixture(params=["inprocess", pytest.param("kafka", marks=pytest.mark.kafka)])
async def bus(
    request: pytest.FixtureRequest, bus_registry: EventRegistry
) -> AsyncIterator[BusHarness]:
    harness = await open_harness(request.param, bus_registry)
    try:
        yield harness
    finally:
        await harness.close()


async def test_round_trip_carries_cloudevents_binary_mode(bus: BusHarness) -> None:
    events = [recorded("c-1", 1, 1), recorded("c-2", 1, 2), recorded("c-1", 2, 3)]
    await bus.publisher.publish(events)

    recorder = Recorder()
    async with running(bus.subscriber(), bus.group(), recorder):
        await eventually(lambda: recorder.has_all(events), "all three events")

    for event in events:
        assert recorder.projection[event.event_id] == event
    on_bus = {message.header("ce_id"): message for message in await bus.messages()}
    for event in events:
        message = on_bus[str(event.event_id).encode()]
        assert message.key == event.subject.encode()
        assert message.header("ce_specversion") == b"1.0"
        assert message.header("ce_type") == event.event_type.encode()
        assert message.header("ce_subject") == event.subject.encode()
        assert message.header("content-type") == b"application/json"
        assert message.value == to_kafka_binary(event).value


async def test_events_of_one_case_arrive_in_order(bus: BusHarness) -> None:
    events = case_history([f"case-{n}" for n in range(6)], per_case=8)
    for start in range(0, len(events), 10):
        await bus.publisher.publish(events[start : start + 10])

    recorder = Recorder()
    async with running(bus.subscriber(), bus.group(), recorder):
        await eventually(lambda: recorder.has_all(events), "every event")

    per_case: dict[str, list[int]] = {}
    for event in first_seen_order(recorder.deliveries):
        per_case.setdefault(event.subject, []).append(event.sequence)
    assert per_case == {f"case-{n}": list(range(1, 9)) for n in range(6)}


async def test_enqueued_batches_keep_case_order_across_calls(bus: BusHarness) -> None:
    events = case_history([f"case-{n}" for n in range(6)], per_case=6)
    acknowledgements = [
        await bus.publisher.enqueue(events[start : start + 5]) for start in range(0, len(events), 5)
    ]
    await asyncio.gather(*acknowledgements)
    await (await bus.publisher.enqueue([]))
    await bus.publisher.publish([])

    recorder = Recorder()
    async with running(bus.subscriber(), bus.group(), recorder):
        await eventually(lambda: recorder.has_all(events), "every event")

    assert len(await bus.messages()) == len(events)
    per_case: dict[str, list[int]] = {}
    for event in first_seen_order(recorder.deliveries):
        per_case.setdefault(event.subject, []).append(event.sequence)
    assert per_case == {f"case-{n}": list(range(1, 7)) for n in range(6)}


async def test_members_of_a_group_share_partitions_and_handle_each_event_in_effect_once(
    bus: BusHarness,
) -> None:
    group = bus.group()
    projection: dict[UUID, RecordedEvent] = {}
    handled_by: dict[str, set[UUID]] = {"a": set(), "b": set()}

    def handler_for(member: str) -> Recorder:
        class Member(Recorder):
            async def __call__(self, event: RecordedEvent) -> None:
                handled_by[member].add(event.event_id)
                projection.setdefault(event.event_id, event)

        return Member()

    subscriber = bus.subscriber()
    async with (
        running(subscriber, group, handler_for("a")) as a,
        running(subscriber, group, handler_for("b")) as b,
    ):
        await eventually(
            lambda: (
                bool(a.assignment)
                and bool(b.assignment)
                and a.assignment | b.assignment == set(range(bus.partitions))
                and not a.assignment & b.assignment
            ),
            "both members to own partitions",
        )
        events = case_history([f"case-{n}" for n in range(60)], per_case=2)
        await bus.publisher.publish(events)
        await eventually(lambda: all(e.event_id in projection for e in events), "every event")

    assert set(projection) == {event.event_id for event in events}
    assert handled_by["a"]
    assert handled_by["b"]
    assert handled_by["a"] | handled_by["b"] == set(projection)


async def test_graceful_stop_commits_what_was_handled(bus: BusHarness) -> None:
    group = bus.group()
    first = case_history(["c-1", "c-2"], per_case=3)
    await bus.publisher.publish(first)
    before = Recorder()
    async with running(bus.subscriber(), group, before):
        await eventually(lambda: before.has_all(first), "the first batch")

    later = [recorded("c-1", 4, 7), recorded("c-3", 1, 8)]
    await bus.publisher.publish(later)
    after = Recorder()
    async with running(bus.subscriber(), group, after):
        await eventually(lambda: after.has_all(later), "the later events")

    assert {event.event_id for event in after.deliveries} == {event.event_id for event in later}


async def test_a_member_that_dies_mid_event_leaves_it_for_redelivery(bus: BusHarness) -> None:
    group = bus.group()
    events = [recorded("c-1", n, n) for n in range(1, 6)]
    await bus.publisher.publish(events)
    stuck_on = events[2]
    reached = asyncio.Event()

    class Stuck(Recorder):
        async def __call__(self, event: RecordedEvent) -> None:
            if event.event_id == stuck_on.event_id:
                reached.set()
                await asyncio.Event().wait()  # a handler that never finishes
            await super().__call__(event)

    dying = Stuck()
    async with running(bus.subscriber(), group, dying) as member:
        await eventually(reached.is_set, "the handler to get stuck")
        await cancel(member)
    assert stuck_on.event_id not in dying.projection

    survivor = Recorder()
    async with running(bus.subscriber(), group, survivor):
        await eventually(lambda: survivor.has_all(events[2:]), "the redelivered events")

    redelivered = first_seen_order(survivor.deliveries)
    assert redelivered[0].sequence <= stuck_on.sequence
    assert [event.sequence for event in redelivered] == list(range(redelivered[0].sequence, 6))


async def test_poison_messages_go_to_the_dead_letter_queue_and_the_rest_flows(
    bus: BusHarness,
) -> None:
    group = bus.group()
    before, after = recorded("c-1", 1, 1), recorded("c-1", 2, 2)
    unknown = to_kafka_binary(recorded("c-1", 3, 3))
    unknown_headers = [
        (name, b"casetrail.test.never-heard-of" if name == "ce_type" else value)
        for name, value in unknown.headers
        if name != "ce_dataschema"  # it names the type too
    ]
    await bus.publisher.publish([before])
    await bus.publish_raw(b"c-1", b"\xff not json", [("ce_id", b"nope")])
    await bus.publish_raw(unknown.key, unknown.value, unknown_headers)
    await bus.publisher.publish([after])

    recorder = Recorder()
    async with running(bus.subscriber(), group, recorder):
        await eventually(lambda: recorder.has_all([before, after]), "the good events")

    assert [e.event_id for e in first_seen_order(recorder.deliveries)] == [
        before.event_id,
        after.event_id,
    ]
    letters = await bus.dead_letters(group)
    assert [letter.reason for letter in letters] == [
        DeadLetterReason.UNDECODABLE,
        DeadLetterReason.INVALID_EVENT,
    ]
    bad, unknown_letter = letters
    assert bad.message.value == b"\xff not json"
    assert bad.message.key == b"c-1"
    assert ("ce_id", b"nope") in bad.message.headers
    assert bad.group == group
    assert bad.message.topic == bus.topic
    assert bad.exception_type == "events.cloudevents.UndecodableMessageError"
    assert "ce_specversion" in bad.detail
    assert "casetrail.test.never-heard-of" in unknown_letter.detail
    assert unknown_letter.message.offset == bad.message.offset + 1
    assert unknown_letter.message.value == unknown.value


async def test_a_handler_error_that_retrying_cannot_fix_is_dead_lettered(
    bus: BusHarness,
) -> None:
    group = bus.group()
    events = [recorded("c-1", n, n) for n in range(1, 4)]
    broken = events[1]

    class Picky(Recorder):
        async def __call__(self, event: RecordedEvent) -> None:
            if event.event_id == broken.event_id:
                raise ValueError("plan has no goals")
            await super().__call__(event)

    await bus.publisher.publish(events)
    recorder = Picky()
    async with running(bus.subscriber(), group, recorder):
        await eventually(lambda: recorder.has_all([events[0], events[2]]), "the other events")

    [letter] = await bus.dead_letters(group)
    assert letter.reason is DeadLetterReason.HANDLER_FAILED
    assert letter.exception_type == "builtins.ValueError"
    # A handler's own message may quote the event (opened sensitive values included) and a
    # dead-letter topic is kept forever: the letter names the error's type and place only.
    assert "plan has no goals" not in letter.detail
    assert letter.detail.startswith("ValueError at test_bus_contract.py:")
    assert letter.detail.endswith("(message withheld: it may quote event data)")
    assert letter.attempts == 1
    assert letter.message.header("ce_id") == str(broken.event_id).encode()


async def test_retriable_handler_errors_are_retried_in_place(bus: BusHarness) -> None:
    group = bus.group()
    events = [recorded("c-1", n, n) for n in range(1, 4)]
    flaky = events[1]
    attempts: list[UUID] = []

    class Flaky(Recorder):
        async def __call__(self, event: RecordedEvent) -> None:
            attempts.append(event.event_id)
            if event.event_id == flaky.event_id and attempts.count(flaky.event_id) < 3:
                raise RetriableHandlerError("read model is locked")
            await super().__call__(event)

    await bus.publisher.publish(events)
    recorder = Flaky()
    async with running(bus.subscriber(), group, recorder):
        await eventually(lambda: recorder.has_all(events), "every event")

    assert attempts.count(flaky.event_id) == 3
    assert [e.sequence for e in first_seen_order(recorder.deliveries)] == [1, 2, 3]
    assert await bus.dead_letters(group) == []


async def test_a_message_that_keeps_failing_is_dead_lettered_when_retries_run_out(
    bus: BusHarness,
) -> None:
    group = bus.group()
    events = [recorded("c-1", 1, 1), recorded("c-1", 2, 2)]
    hopeless = events[0]

    class Hopeless(Recorder):
        async def __call__(self, event: RecordedEvent) -> None:
            if event.event_id == hopeless.event_id:
                raise ConnectionError("projection database unreachable")
            await super().__call__(event)

    await bus.publisher.publish(events)
    recorder = Hopeless()
    retry = replace(FAST_RETRY, max_attempts=3)
    async with running(bus.subscriber(retry), group, recorder):
        await eventually(lambda: recorder.has_all(events[1:]), "the next event")

    [letter] = await bus.dead_letters(group)
    assert letter.reason is DeadLetterReason.RETRIES_EXHAUSTED
    assert letter.attempts == 3
    assert letter.exception_type == "builtins.ConnectionError"


async def test_a_handler_waiting_for_a_group_to_catch_up_is_retried_past_the_policy(
    bus: BusHarness,
) -> None:
    """A barrier not reached yet (``BarrierNotReachedError``: a closure's follow-up waiting
    for the case facts' group) is no failure of the event: retried with the backoff for as
    long as it takes, never dead-lettered. Counted, a closure's follow-up pending at an
    embedded start was dead-lettered while the relays refilled the bus, and lost with it."""
    group = bus.group()
    events = [recorded("c-1", 1, 1), recorded("c-1", 2, 2)]
    waiting = events[0]
    tries: list[UUID] = []

    class Behind(Recorder):
        async def __call__(self, event: RecordedEvent) -> None:
            if event.event_id == waiting.event_id:
                tries.append(event.event_id)
                if len(tries) <= 6:
                    raise BarrierNotReachedError("the case facts' group is behind")
            await super().__call__(event)

    await bus.publisher.publish(events)
    recorder = Behind()
    async with running(bus.subscriber(replace(FAST_RETRY, max_attempts=3)), group, recorder):
        await eventually(lambda: recorder.has_all(events), "every event")

    assert len(tries) == 7
    assert [e.sequence for e in first_seen_order(recorder.deliveries)] == [1, 2]
    assert await bus.dead_letters(group) == []


async def test_stopping_during_retries_leaves_the_message_for_later(bus: BusHarness) -> None:
    group = bus.group()
    event = recorded("c-1", 1, 1)
    failing = asyncio.Event()

    async def always_busy(_: RecordedEvent) -> None:
        failing.set()
        raise RetriableHandlerError("busy")

    await bus.publisher.publish([event])
    patient = RetryPolicy(Backoff(initial=5.0, maximum=5.0), max_attempts=None)
    async with running(bus.subscriber(patient), group, always_busy):
        await eventually(failing.is_set, "the first attempt")

    recorder = Recorder()
    async with running(bus.subscriber(), group, recorder):
        await eventually(lambda: recorder.has_all([event]), "the event again")
    assert await bus.dead_letters(group) == []


# --- batch delivery ----------------------------------------------------------------------------


class CaseNotes(Projection):
    """Event ids per case, in the order applied; an event in ``poison`` breaks ``apply``."""

    name = "case-notes"
    collections = ("case_notes",)

    def __init__(self, poison: Sequence[RecordedEvent] = ()) -> None:
        self.poison = {event.event_id for event in poison}

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        if recorded.event_id in self.poison:
            raise ValueError("note refers to a plan that does not exist")
        document = await transaction.get("case_notes", recorded.subject) or {"events": []}
        document["events"].append(str(recorded.event_id))
        await transaction.put("case_notes", recorded.subject, document)


class Spy:
    """Passes batches on to a ``BatchHandler``, noting each call and what went through."""

    def __init__(self, inner: BusProjectionHandler) -> None:
        self.inner = inner
        self.calls: list[list[UUID]] = []
        self.handled: list[UUID] = []

    async def handle_batch(self, records: Sequence[RecordedEvent]) -> None:
        self.calls.append([record.event_id for record in records])
        await self.inner.handle_batch(records)
        self.handled += [record.event_id for record in records]


@pytest.fixture
async def read_models(tmp_path: Path) -> AsyncIterator[SqliteReadModelStore]:
    store = SqliteReadModelStore(tmp_path / "read-models.db")
    try:
        yield store
    finally:
        await store.close()


async def notes_of(read_models: SqliteReadModelStore, case_id: str) -> list[UUID]:
    document = await read_models.get("case_notes", case_id)
    return [] if document is None else [UUID(text) for text in document["events"]]


def ids(events: Sequence[RecordedEvent]) -> list[UUID]:
    return [event.event_id for event in events]


async def test_a_batch_handler_gets_each_partitions_records_consecutive_and_in_order(
    bus: BusHarness,
) -> None:
    events = case_history([f"case-{n}" for n in range(6)], per_case=5)
    await bus.publisher.publish(events)

    recorder = BatchRecorder()
    async with running(bus.subscriber(), bus.group(), recorder):
        await eventually(lambda: recorder.has_all(events), "every event")

    where = {
        UUID((message.header("ce_id") or b"").decode()): (message.partition, message.offset)
        for message in await bus.messages()
    }
    for call in recorder.calls:
        # A batch may span partitions (like a poll); each partition's share is one run of
        # consecutive offsets, not interleaved with another partition's.
        places = [where[record.event_id] for record in call]
        runs = [
            partition
            for n, (partition, _) in enumerate(places)
            if n == 0 or places[n - 1][0] != partition
        ]
        assert len(runs) == len(set(runs))
        for partition in set(runs):
            offsets = [offset for p, offset in places if p == partition]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    assert any(len(call) > 1 for call in recorder.calls)
    per_case: dict[str, list[int]] = {}
    for event in recorder.order:
        per_case.setdefault(event.subject, []).append(event.sequence)
    assert per_case == {f"case-{n}": [1, 2, 3, 4, 5] for n in range(6)}
    assert set(recorder.applied.values()) == {1}


async def test_a_poison_record_in_a_batch_is_dead_lettered_and_the_others_applied_once(
    bus: BusHarness, read_models: SqliteReadModelStore
) -> None:
    group = bus.group()
    events = [recorded("c-1", n, n) for n in range(1, 6)]
    poison = events[2]
    spy = Spy(BusProjectionHandler(read_models, CaseNotes(poison=[poison]), service="test"))
    await bus.publisher.publish(events)

    async with running(bus.subscriber(), group, spy):
        await eventually(
            lambda: set(ids(events)) - set(spy.handled) == {poison.event_id}, "the good events"
        )

    assert spy.calls[0] == ids(events)  # one batch, rolled back whole ...
    assert spy.calls[1:] == [[event_id] for event_id in ids(events)]  # ... then one by one
    assert await notes_of(read_models, "c-1") == ids([e for e in events if e is not poison])
    [letter] = await bus.dead_letters(group)
    assert letter.reason is DeadLetterReason.HANDLER_FAILED
    assert letter.attempts == 1
    assert "plan that does not exist" not in letter.detail
    assert letter.detail.startswith("ValueError at test_bus_contract.py:")
    assert letter.message.header("ce_id") == str(poison.event_id).encode()


async def test_a_batch_applies_redelivered_and_repeated_events_once(
    bus: BusHarness, read_models: SqliteReadModelStore
) -> None:
    first, second, third = (recorded("c-1", n, n) for n in range(1, 4))
    other = recorded("c-2", 1, 4)
    deliveries = [first, second, first, other, third, second, other]
    spy = Spy(BusProjectionHandler(read_models, CaseNotes(), service="test"))
    await bus.publisher.publish(deliveries)
    await bus.publisher.publish([first, second, third])  # a relay publishing again

    async with running(bus.subscriber(), bus.group(), spy):
        await eventually(lambda: len(spy.handled) == len(deliveries) + 3, "every delivery")

    assert await notes_of(read_models, "c-1") == ids([first, second, third])
    assert await notes_of(read_models, "c-2") == ids([other])


async def test_a_batch_that_fails_with_a_retriable_error_is_retried_whole(
    bus: BusHarness,
) -> None:
    group = bus.group()
    events = [recorded("c-1", n, n) for n in range(1, 5)]

    class Flaky(BatchRecorder):
        def check(self, records: Sequence[RecordedEvent]) -> None:
            if len(self.calls) < 3:
                raise RetriableHandlerError("read model is locked")

    await bus.publisher.publish(events)
    recorder = Flaky()
    async with running(bus.subscriber(), group, recorder):
        await eventually(lambda: recorder.has_all(events), "every event")

    assert recorder.ids_of_calls()[:3] == [ids(events)] * 3
    assert recorder.order == events
    assert set(recorder.applied.values()) == {1}
    assert await bus.dead_letters(group) == []


async def test_a_batch_waiting_for_a_group_to_catch_up_is_retried_whole_past_the_policy(
    bus: BusHarness,
) -> None:
    group = bus.group()
    events = [recorded("c-1", n, n) for n in range(1, 5)]

    class Behind(BatchRecorder):
        def check(self, records: Sequence[RecordedEvent]) -> None:
            if len(self.calls) <= 6:
                raise BarrierNotReachedError("the case facts' group is behind")

    await bus.publisher.publish(events)
    recorder = Behind()
    async with running(bus.subscriber(replace(FAST_RETRY, max_attempts=3)), group, recorder):
        await eventually(lambda: recorder.has_all(events), "every event")

    assert recorder.ids_of_calls()[:7] == [ids(events)] * 7
    assert recorder.order == events
    assert set(recorder.applied.values()) == {1}
    assert await bus.dead_letters(group) == []


async def test_a_batch_that_keeps_failing_is_split_when_retries_run_out(
    bus: BusHarness,
) -> None:
    group = bus.group()
    events = [recorded("c-1", n, n) for n in range(1, 4)]
    hopeless = events[1]

    class Hopeless(BatchRecorder):
        def check(self, records: Sequence[RecordedEvent]) -> None:
            if hopeless in records:
                raise ConnectionError("projection database unreachable")

    await bus.publisher.publish(events)
    recorder = Hopeless()
    async with running(bus.subscriber(replace(FAST_RETRY, max_attempts=3)), group, recorder):
        await eventually(lambda: recorder.has_all([events[0], events[2]]), "the other events")
        await eventually(lambda: len(recorder.calls) == 3 + 1 + 3 + 1, "every attempt")

    first, _, last = (event.event_id for event in events)
    assert recorder.ids_of_calls() == [
        *[ids(events)] * 3,
        [first],
        *[[hopeless.event_id]] * 3,
        [last],
    ]
    assert recorder.applied == {first: 1, last: 1}
    [letter] = await bus.dead_letters(group)
    assert letter.reason is DeadLetterReason.RETRIES_EXHAUSTED
    assert letter.attempts == 3


async def test_undecodable_messages_split_a_batch_and_keep_the_log_order(
    bus: BusHarness,
) -> None:
    group = bus.group()
    before = [recorded("c-1", 1, 1), recorded("c-1", 2, 2)]
    after = [recorded("c-1", 3, 3), recorded("c-1", 4, 4)]
    await bus.publisher.publish(before)
    await bus.publish_raw(b"c-1", b"\xff not json", [("ce_id", b"nope")])
    await bus.publisher.publish(after)

    recorder = BatchRecorder()
    async with running(bus.subscriber(), group, recorder):
        await eventually(lambda: recorder.has_all(before + after), "the good events")

    assert recorder.order == before + after
    for call in recorder.calls:
        assert not (before[-1] in call and after[0] in call)
    [letter] = await bus.dead_letters(group)
    assert letter.reason is DeadLetterReason.UNDECODABLE


async def test_stopping_during_batch_retries_leaves_the_whole_batch_for_later(
    bus: BusHarness,
) -> None:
    group = bus.group()
    events = [recorded("c-1", n, n) for n in range(1, 4)]

    class AlwaysBusy(BatchRecorder):
        def check(self, records: Sequence[RecordedEvent]) -> None:
            raise RetriableHandlerError("busy")

    await bus.publisher.publish(events)
    busy = AlwaysBusy()
    patient = RetryPolicy(Backoff(initial=5.0, maximum=5.0), max_attempts=None)
    async with running(bus.subscriber(patient), group, busy):
        await eventually(lambda: bool(busy.calls), "the first attempt")

    recorder = BatchRecorder()
    async with running(bus.subscriber(), group, recorder):
        await eventually(lambda: recorder.has_all(events), "the events again")
    assert recorder.order == events
    assert await bus.dead_letters(group) == []


async def run_filtered(
    bus: BusHarness,
    group: str,
    handler: Recorder | BatchRecorder,
    event_types: frozenset[str],
    until: Sequence[RecordedEvent],
) -> None:
    """Run one member given only ``event_types`` until ``until`` is handled; stop gracefully."""
    stop = asyncio.Event()
    task = asyncio.create_task(bus.subscriber().run(group, handler, stop, event_types=event_types))
    try:
        await eventually(lambda: handler.has_all(until), "the wanted events")
    finally:
        stop.set()
        await task


async def test_a_group_given_event_types_gets_only_those_and_commits_past_the_rest(
    bus: BusHarness,
) -> None:
    notes = [recorded("c-1", 1, 1), recorded("c-1", 3, 3), recorded("c-1", 6, 6)]
    await bus.publisher.publish([notes[0], touched("c-1", 2, 2), notes[1]])
    # Unwanted records are skipped before decoding: even a broken one is no poison here.
    broken = [("ce_type", CaseTouched.event_type.encode()), ("ce_id", b"nope")]
    await bus.publish_raw(b"c-1", b"\xff not json", broken)
    await bus.publisher.publish([touched("c-1", 5, 5), notes[2]])
    wanted = frozenset({NoteWritten.event_type})

    one_by_one, batches = Recorder(), BatchRecorder()
    groups = [bus.group(), bus.group()]
    await run_filtered(bus, groups[0], one_by_one, wanted, notes)
    await run_filtered(bus, groups[1], batches, wanted, notes)
    assert [e.event_id for e in first_seen_order(one_by_one.deliveries)] == ids(notes)
    assert batches.order == notes
    for group in groups:
        assert await bus.dead_letters(group) == []

    # The skipped records were committed: each group goes on after them.
    marker = recorded("c-1", 7, 7)
    await bus.publisher.publish([marker])
    for group in groups:
        everything = Recorder()
        async with running(bus.subscriber(), group, everything):
            await eventually(lambda: everything.has_all([marker]), "the next event")  # noqa: B023
        assert [e.event_id for e in everything.deliveries] == [marker.event_id]
        assert await bus.dead_letters(group) == []


async def test_a_record_without_a_type_header_is_still_decoded_and_dead_lettered(
    bus: BusHarness,
) -> None:
    group = bus.group()
    await bus.publish_raw(b"c-1", b"\xff not json", [("ce_id", b"nope")])
    after = recorded("c-1", 1, 1)
    await bus.publisher.publish([after])

    await run_filtered(bus, group, Recorder(), frozenset({NoteWritten.event_type}), [after])
    [letter] = await bus.dead_letters(group)
    assert letter.reason is DeadLetterReason.UNDECODABLE


async def test_a_case_event_that_arrives_early_is_held_back_until_the_missing_one_comes(
    bus: BusHarness,
) -> None:
    """Issue 13's safety net, on every bus: a gap in a case's stream (event 3 before event 2)
    holds the later events back; none of them is dead-lettered for being early, an event
    type the group skips still counts, and nothing is committed past what is held."""
    first, missing, early, later = (recorded("c-1", n, n) for n in range(1, 5))
    skipped = touched("c-1", 5, 5)
    after = recorded("c-1", 6, 6)
    other_case = recorded("c-2", 1, 7)
    group = bus.group()
    guard = SequenceGuard(group)
    recorder = BatchRecorder()
    stop = asyncio.Event()
    member = asyncio.create_task(
        bus.subscriber().run(
            group,
            recorder,
            stop,
            event_types=frozenset({NoteWritten.event_type}),
            ordering=guard,
        )
    )
    try:
        await bus.publisher.publish([first, early, later, skipped, after, other_case])
        await eventually(lambda: recorder.has_all([first, other_case]), "what is in order")
        await eventually(lambda: guard.status().held == 4, "the early ones held back")
        assert not recorder.has_all([early])
        assert guard.status().open_gaps == 1

        await bus.publisher.publish([missing])
        await eventually(lambda: recorder.has_all([missing, early, later, after]), "the rest")
        assert guard.status() == replace(guard.status(), held=0, open_gaps=0)
    finally:
        stop.set()
        await member
    case_1 = [record.sequence for record in recorder.order if record.subject == "c-1"]
    assert case_1 == [1, 2, 3, 4, 6]
    assert await bus.dead_letters(group) == []


@dataclass
class Held(Recorder):
    """A recorder whose handler waits for ``release``: its group applies nothing until then."""

    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, event: RecordedEvent) -> None:
        await self.release.wait()
        await super().__call__(event)


async def test_caught_up_tells_when_a_group_has_handled_its_keys_partition_to_the_end(
    bus: BusHarness,
) -> None:
    """The barrier planning and intake raise before a supervisor's command: a group is caught
    up with a key once it committed past every record of the key's partition on the bus when
    asked; records published after the question are not waited for."""
    group = bus.group()
    subscriber = bus.subscriber()
    earlier = [recorded("c-1", 1, 1), recorded("c-2", 1, 2)]
    await bus.publisher.publish(earlier)
    release = asyncio.Event()
    held = Held(release=release)
    try:
        async with running(subscriber, group, held):
            # Not handled yet: not caught up, and said so once the time is out.
            assert not await subscriber.caught_up(group, "c-1", patience=0.5)
            waiting = asyncio.ensure_future(subscriber.caught_up(group, "c-1", patience=WAIT_LIMIT))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            release.set()
            assert await waiting
            await eventually(lambda: held.has_all(earlier), "the earlier events")
            assert await subscriber.caught_up(group, "c-2", patience=WAIT_LIMIT)
            # Asked again with nothing new on the bus: caught up at once.
            assert await subscriber.caught_up(group, "c-1", patience=WAIT_LIMIT)
    finally:
        await subscriber.close()


async def test_caught_up_asked_where_no_member_of_the_group_runs(bus: BusHarness) -> None:
    """Another replica's question: a subscriber running none of the group's members learns
    from the group's commits what the one running them knows first (on Kafka, from how far
    its own members applied)."""
    group = bus.group()
    running_it, elsewhere = bus.subscriber(), bus.subscriber()
    release = asyncio.Event()

    try:
        await bus.publisher.publish([recorded("c-1", 1, 1)])
        async with running(running_it, group, Held(release=release)):
            assert not await elsewhere.caught_up(group, "c-1", patience=0.5)
            waiting = asyncio.ensure_future(elsewhere.caught_up(group, "c-1", patience=WAIT_LIMIT))
            release.set()
            assert await waiting
            assert await running_it.caught_up(group, "c-1", patience=WAIT_LIMIT)
    finally:
        await running_it.close()
        await elsewhere.close()


async def test_caught_up_on_types_waits_only_for_the_keys_records_of_those_types(
    bus: BusHarness,
) -> None:
    """Planning's worker barrier: only the case's assignments are waited for, not every record
    of its partition (planning's own events coming back)."""
    group = bus.group()
    subscriber = bus.subscriber()
    wanted = recorded("c-1", 1, 1)
    kind = frozenset({wanted.event_type})
    release = asyncio.Event()

    try:
        await bus.publisher.publish([wanted])
        async with running(subscriber, group, Held(release=release)):
            # Held: the key's record of that type is waited for; another key's or type's not.
            assert not await subscriber.caught_up(group, "c-1", patience=0.5, types=kind)
            assert not await subscriber.caught_up(group, "c-1", patience=0.3)
            other = frozenset({"casetrail.test.other"})
            assert await subscriber.caught_up(group, "c-1", patience=WAIT_LIMIT, types=other)
            assert await subscriber.caught_up(group, "c-9", patience=WAIT_LIMIT, types=kind)
            waiting = asyncio.ensure_future(
                subscriber.caught_up(group, "c-1", patience=WAIT_LIMIT, types=kind)
            )
            await asyncio.sleep(0.2)
            assert not waiting.done()
            release.set()
            assert await waiting
    finally:
        await subscriber.close()


async def test_caught_up_waits_for_records_already_on_the_bus_only(bus: BusHarness) -> None:
    group = bus.group()
    subscriber = bus.subscriber()
    try:
        # A group that never consumed is caught up only with an empty partition.
        assert await subscriber.caught_up(group, "c-1", patience=WAIT_LIMIT)
        await bus.publisher.publish([recorded("c-1", 1, 1)])
        assert not await subscriber.caught_up(group, "c-1", patience=0.3)
        recorder = Recorder()
        async with running(subscriber, group, recorder):
            assert await subscriber.caught_up(group, "c-1", patience=WAIT_LIMIT)
        # Published after the group stopped: not handled, so not caught up.
        await bus.publisher.publish([recorded("c-1", 2, 2)])
        assert not await subscriber.caught_up(group, "c-1", patience=0.3)
    finally:
        await subscriber.close()


def _group_gauges(group: str) -> tuple[float, float]:
    """A group's ``casetrail_consumer_lag_messages`` over its partitions, and its
    ``casetrail_consumer_stalled_seconds``."""
    lag = stalled = 0.0
    for metric in process_metrics().registry.collect():
        for sample in metric.samples:
            if sample.labels.get("group") != group:
                continue
            if sample.name == "casetrail_consumer_lag_messages":
                lag += sample.value
            elif sample.name == "casetrail_consumer_stalled_seconds":
                stalled = sample.value
    return lag, stalled


async def test_a_group_stuck_on_failing_processing_shows_its_lag_and_how_long(
    bus: BusHarness,
) -> None:
    """Its storage away, a consumer commits nothing for as long as it lasts: its lag must
    still grow with the topic (it stayed as the last commit left it, so the lag alert never
    fired) and the stall shows, until processing goes again."""
    group = bus.group()
    first = [recorded("c-1", n, n) for n in range(1, 4)]
    storage_away = True

    class Outage(BatchRecorder):
        def check(self, records: Sequence[RecordedEvent]) -> None:
            if storage_away:
                raise StorageUnavailableError("read models: connection refused")

    recorder = Outage()
    async with running(bus.subscriber(), group, recorder):
        await bus.publisher.publish(first)
        await eventually(lambda: _group_gauges(group)[0] == 3.0, "lag 3 while stuck")
        await eventually(lambda: _group_gauges(group)[1] > 0.3, "the stall shown")
        later = [recorded("c-2", 1, 4), recorded("c-2", 2, 5)]
        await bus.publisher.publish(later)
        await eventually(lambda: _group_gauges(group)[0] == 5.0, "lag 5 while stuck")
        assert not recorder.applied
        storage_away = False
        await eventually(lambda: recorder.has_all(first + later), "every event")
        await eventually(lambda: _group_gauges(group) == (0.0, 0.0), "no lag, no stall")
