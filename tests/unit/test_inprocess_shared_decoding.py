"""The in-process bus decodes each message once and shares the result among its groups."""

from __future__ import annotations

import asyncio

import pytest

from casetrail_platform.bus import inprocess
from casetrail_platform.bus.inprocess import InProcessBus
from events.cloudevents import to_kafka_binary
from events.dead_letters import DeadLetterReason
from events.topics import DEFAULT_CASE_EVENTS_TOPIC as TOPIC
from tests.contract.bus_conftest import Recorder, eventually, recorded
from tests.support.sample_events import sample_registry


async def test_groups_share_one_decoded_event_and_each_dead_letters_poison() -> None:
    bus = InProcessBus(partitions=2)
    registry = sample_registry()
    events = [recorded("c-1", 1, 1), recorded("c-2", 1, 2)]
    await bus.publisher().publish(events[:1])
    bus.append("casetrail.case-events", b"c-1", b"\xff not json", [("ce_id", b"nope")])
    await bus.publisher().publish(events[1:])

    stop = asyncio.Event()
    recorders = {"casetrail.a": Recorder(), "casetrail.b": Recorder()}
    tasks = [
        asyncio.create_task(bus.subscriber(registry).run(group, recorder, stop))
        for group, recorder in recorders.items()
    ]
    await eventually(lambda: all(r.has_all(events) for r in recorders.values()), "every event")
    stop.set()
    await asyncio.gather(*tasks)

    first, second = recorders.values()
    for event in events:
        assert first.projection[event.event_id] is second.projection[event.event_id]
        assert first.projection[event.event_id] == event
    for group in recorders:
        [letter] = bus.dead_letters(group)
        assert letter.reason is DeadLetterReason.UNDECODABLE
        assert letter.group == group
        assert "ce_specversion" in letter.detail


async def test_messages_every_group_read_keep_their_bytes_not_their_decoded_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The log holds every message for the life of the process: once every group committed
    one, beyond the latest few of its partition, only its bytes stay. A group joining later
    decodes them, and gets equal events."""
    monkeypatch.setattr(inprocess, "RECENT_DECODED", 2)
    monkeypatch.setattr(inprocess, "FORGET_EVERY", 1)
    bus = InProcessBus(partitions=1)
    registry = sample_registry()
    events = [recorded("c-1", sequence, sequence) for sequence in range(1, 7)]
    await bus.publisher().publish(events)

    async def consumed_by(group: str) -> Recorder:
        stop, recorder = asyncio.Event(), Recorder()
        task = asyncio.create_task(bus.subscriber(registry).run(group, recorder, stop))
        await eventually(lambda: recorder.has_all(events), f"{group} to read every event")
        await eventually(lambda: bus.committed(TOPIC, group) == {0: 6}, f"{group} to commit")
        stop.set()
        await task
        return recorder

    first = await consumed_by("casetrail.first")
    assert [m.recorded is None for m in bus.messages(TOPIC)] == [True] * 4 + [False] * 2
    assert [m.value for m in bus.messages(TOPIC)] == [
        to_kafka_binary(event).value for event in events
    ]
    later = await consumed_by("casetrail.later")
    for event in events:
        assert later.projection[event.event_id] == first.projection[event.event_id] == event


def test_the_look_for_messages_every_group_read_comes_every_few_polls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Looking costs a pass over every group and partition, so it is made at every
    ``FORGET_EVERY``-th poll of the topic (each poll tells it), not at each one."""
    monkeypatch.setattr(inprocess, "RECENT_DECODED", 1)
    monkeypatch.setattr(inprocess, "FORGET_EVERY", 3)
    bus = InProcessBus(partitions=1)
    for sequence in range(1, 7):
        event = recorded("c-1", sequence, sequence)
        encoded = to_kafka_binary(event)
        bus.append(TOPIC, encoded.key, encoded.value, encoded.headers, event)
    bus._group(TOPIC, "casetrail.only").committed[0] = 6

    looks = []
    for _poll in range(4):
        bus._forget_decoded(TOPIC)
        looks.append(sum(m.recorded is None for m in bus.messages(TOPIC)))
    assert looks == [0, 0, 5, 5]
