"""What the in-process bus adds to the shared contract (tests/contract/test_bus_contract.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import pytest

from casetrail_platform.bus.deadletter import parse_dead_letter
from casetrail_platform.bus.inprocess import InProcessBus
from events.dead_letters import DeadLetterReason
from events.envelope import RecordedEvent
from tests.contract.bus_conftest import (
    BatchRecorder,
    Recorder,
    cancel,
    eventually,
    recorded,
    running,
)
from tests.support.sample_events import sample_registry


def test_it_says_it_is_not_durable() -> None:
    bus = InProcessBus()
    assert bus.durable is False
    assert bus.publisher().durable is False


async def test_a_key_always_lands_on_the_same_partition() -> None:
    first, second = InProcessBus(partitions=6), InProcessBus(partitions=6)
    for case_id in ("c-1", "c-2", "c-3"):
        a = [first.append("t", case_id.encode(), b"{}") for _ in range(3)]
        b = second.append("t", case_id.encode(), b"{}")
        assert {m.partition for m in a} == {b.partition}
        assert [m.offset for m in a] == sorted({m.offset for m in a})


async def test_a_record_that_cannot_be_encoded_leaves_the_log_untouched() -> None:
    bus = InProcessBus()
    good = recorded("c-1", 1, 1)
    naive = replace(good.metadata, occurred_at=datetime(2024, 1, 1))  # no time zone
    template = recorded("c-1", 2, 2)
    bad = RecordedEvent(
        template.event_id,
        template.stream,
        template.sequence,
        template.position,
        template.recorded_at,
        template.event,
        naive,
    )

    with pytest.raises(ValueError, match="timezone"):
        await bus.publisher("t").publish([good, bad])
    assert bus.messages("t") == []


async def test_committed_offsets_follow_handled_messages_only() -> None:
    bus = InProcessBus(partitions=1)
    events = [recorded("c-1", n, n) for n in range(1, 4)]
    await bus.publisher("t").publish(events)
    reached = asyncio.Event()

    async def stuck_on_third(event: RecordedEvent) -> None:
        if event.sequence == 3:
            reached.set()
            await asyncio.Event().wait()

    async with running(bus.subscriber(sample_registry(), "t"), "g", stuck_on_third) as member:
        await eventually(reached.is_set, "the third event")
        assert bus.committed("t", "g") == {0: 2}
        await cancel(member)
    assert bus.committed("t", "g") == {0: 2}


async def test_partitions_of_a_member_that_leaves_go_to_the_others() -> None:
    bus = InProcessBus(partitions=4)
    subscriber = bus.subscriber(sample_registry(), "t")
    stays, leaves = Recorder(), Recorder()
    async with running(subscriber, "g", stays) as staying:
        async with running(subscriber, "g", leaves) as leaving:
            await eventually(
                lambda: len(staying.assignment) == 2 and len(leaving.assignment) == 2,
                "an even split",
            )
        await eventually(lambda: len(staying.assignment) == 4, "the leaver's partitions")
        events = [recorded(f"c-{n}", 1, n) for n in range(1, 21)]
        await bus.publisher("t").publish(events)
        await eventually(lambda: stays.has_all(events), "every event on the stayer")
    assert leaves.deliveries == []


async def test_dead_letters_keep_the_message_and_say_why() -> None:
    bus = InProcessBus(partitions=1)
    bus.append("t", b"c-9", b"[]", [("ce_id", b"x"), ("casetrail_dlq_reason", b"stale")])
    good = recorded("c-9", 1, 1)
    await bus.publisher("t").publish([good])
    recorder = Recorder()
    async with running(bus.subscriber(sample_registry(), "t"), "g", recorder):
        await eventually(lambda: recorder.has_all([good]), "the good event")

    [letter] = bus.dead_letters("g")
    assert bus.dead_letters("other") == []
    headers = letter.headers()
    assert ("ce_id", b"x") in headers
    assert next(v for n, v in headers if n == "casetrail_dlq_reason").startswith(b"undecodable: ")
    assert ("casetrail_dlq_group", b"g") in headers
    assert ("casetrail_dlq_partition", b"0") in headers
    assert ("casetrail_dlq_offset", b"0") in headers
    assert len([n for n, _ in headers if n == "casetrail_dlq_reason"]) == 1

    parsed = parse_dead_letter(letter.message.key, letter.message.value, headers)
    assert parsed.reason is DeadLetterReason.UNDECODABLE
    assert parsed.message == replace(letter.message, headers=(("ce_id", b"x"),))
    assert parsed.detail == letter.detail[: len(parsed.detail)]


async def test_a_batch_handler_gets_up_to_max_batch_records_committed_batch_by_batch() -> None:
    bus = InProcessBus(partitions=1)
    events = [recorded("c-1", n, n) for n in range(1, 6)]
    await bus.publisher("t").publish(events)
    committed_before: list[dict[int, int]] = []

    class Noting(BatchRecorder):
        def check(self, records: Sequence[RecordedEvent]) -> None:
            committed_before.append(bus.committed("t", "g"))

    recorder = Noting()
    async with running(bus.subscriber(sample_registry(), "t", max_batch=2), "g", recorder):
        await eventually(lambda: recorder.has_all(events), "every event")

    assert recorder.ids_of_calls() == [
        [e.event_id for e in events[0:2]],
        [e.event_id for e in events[2:4]],
        [events[4].event_id],
    ]
    assert committed_before == [{0: 0}, {0: 2}, {0: 4}]
    assert bus.committed("t", "g") == {0: 5}


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        InProcessBus().subscriber(sample_registry(), max_batch=0)


def test_topic_names_are_checked() -> None:
    bus = InProcessBus()
    with pytest.raises(ValueError, match="topic name"):
        bus.publisher("no spaces please")
