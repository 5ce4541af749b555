"""The outbox relay's own health entry: NOT_SERVING while events cannot reach the bus."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from grpc_health.v1 import health, health_pb2

from casetrail_platform.bus.errors import PublishError
from casetrail_platform.bus.port import EventPublisher
from casetrail_platform.bus.retry import Backoff
from casetrail_platform.checkpoints import InMemoryCheckpointStore
from casetrail_platform.hosting import watch_outbox
from casetrail_platform.outbox import OutboxRelay
from casetrail_platform.store.port import NO_STREAM
from casetrail_platform.store.sqlite import SqliteEventStore
from events.envelope import RecordedEvent
from tests.support.sample_events import note, sample_registry
from tests.support.waiting import eventually, health_reports

NAME = "casetrail.test.outbox"


class UnreachableUntilFixed(EventPublisher):
    def __init__(self) -> None:
        self.reachable = False
        self.published: list[RecordedEvent] = []

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        if not self.reachable:
            raise PublishError("broker unreachable")
        self.published.extend(records)


async def test_the_outbox_is_unhealthy_while_the_bus_refuses_and_recovers(
    tmp_path: Path,
) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    await store.append("case-1", [note("1")], NO_STREAM)
    publisher = UnreachableUntilFixed()
    relay = OutboxRelay(
        store, publisher, InMemoryCheckpointStore(), "test", backoff=Backoff(0.01, 0.05)
    )
    servicer = health.aio.HealthServicer()
    await servicer.set(NAME, health_pb2.HealthCheckResponse.UNKNOWN)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(relay.run(stop)),
        asyncio.create_task(watch_outbox(relay, servicer, NAME, stop, every=0.01)),
    ]

    await eventually(
        health_reports(servicer, NAME, health_pb2.HealthCheckResponse.NOT_SERVING),
        "outbox unhealthy",
    )
    publisher.reachable = True
    await eventually(
        health_reports(servicer, NAME, health_pb2.HealthCheckResponse.SERVING), "outbox healthy"
    )

    stop.set()
    await asyncio.gather(*tasks)
    stored = await store.read_all()
    await store.close()
    assert [r.event_id for r in publisher.published] == [r.event_id for r in stored]
