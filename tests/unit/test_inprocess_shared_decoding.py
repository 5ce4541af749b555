"""The in-process bus decodes each message once and shares the result among its groups."""

from __future__ import annotations

import asyncio

from casetrail_platform.bus.inprocess import InProcessBus
from events.dead_letters import DeadLetterReason
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
