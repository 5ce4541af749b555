"""One replica of a test service, as a process of its own, for the handover tests
(``test_projection_handover.py``): it does what ``ServiceHost._start`` does on the distributed
backend (mark itself running, catch its own-store projection up, then follow it while leading
``projection_leadership``, and relay its store to Kafka while leading the relay's lock), with a
projection slow enough to be killed in the middle of a batch.

It tells the test where it is by lines on stdout, each with the time: ``starting``,
``catching-up`` (marked running: ``mark_serving``), ``caught-up``, ``leads <what>``.
Run: ``python -m tests.integration.handover_replica <dsn> <service> <topic> <pause> <dir>``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from casetrail_platform.bus.kafka import KafkaEventPublisher
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.locking.port import Work
from casetrail_platform.locking.postgres import PostgresLocks
from casetrail_platform.locking.serving import mark_serving, projection_leadership
from casetrail_platform.outbox import OutboxRelay
from casetrail_platform.projections.port import DocumentTransaction, Projection
from casetrail_platform.projections.postgres import PostgresReadModelStore
from casetrail_platform.projections.runner import catch_up, follow
from casetrail_platform.store.postgres import PostgresEventStore
from casetrail_platform.store.postgres_checkpoints import PostgresCheckpointStore
from events.envelope import RecordedEvent
from tests.support.sample_events import sample_registry

COLLECTION = "stream-positions"


class StreamPositions(Projection):
    """Per stream, the positions of the events applied, in the order applied: an event
    applied twice shows twice, one skipped is missing. ``pause``: seconds per event."""

    name = "stream-positions"
    collections = (COLLECTION,)

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        document = await transaction.get(COLLECTION, recorded.stream) or {"positions": []}
        document["positions"].append(recorded.position)
        await transaction.put(COLLECTION, recorded.stream, document)
        if self.pause:
            await asyncio.sleep(self.pause)


def say(line: str) -> None:
    print(line, time.time(), flush=True)


def leading(what: str, work: Work) -> Work:
    async def led(must_stop: asyncio.Event) -> None:
        say(f"leads {what}")
        await work(must_stop)

    return led


async def main(dsn: str, service: str, topic: str, pause: float, data_dir: str) -> None:
    store = await PostgresEventStore.connect(dsn, sample_registry(), schema=f"{service}_events")
    read_models = await PostgresReadModelStore.connect(dsn, schema=f"{service}_read_models")
    checkpoints = await PostgresCheckpointStore.connect(dsn, schema=f"{service}_events")
    locks = PostgresLocks(dsn)
    projection = StreamPositions(pause)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    say("starting")
    infra = Infrastructure(data_dir=Path(data_dir), postgres_dsn=dsn, seal_sensitive=False)
    unmark = await mark_serving(infra, service)
    say("catching-up")
    await catch_up(store, read_models, projection)
    say("caught-up")
    publisher = KafkaEventPublisher(KafkaSettings.from_env(), topic=topic)
    await publisher.start()
    relay = OutboxRelay(store, publisher, checkpoints, f"{service}-outbox")

    async def following(must_stop: asyncio.Event) -> None:
        await follow(store, read_models, projection, must_stop, linger=0.02)

    try:
        await asyncio.gather(
            locks.lead(
                projection_leadership(service, projection.name),
                leading("projection", following),
                stop,
            ),
            locks.lead(f"casetrail.{service}.outbox-relay", leading("relay", relay.run), stop),
        )
    finally:
        await publisher.stop()
        await locks.close()
        await checkpoints.close()
        await read_models.close()
        await store.close()
        await unmark()
        say("stopped")


if __name__ == "__main__":
    dsn, service, topic, pause, data_dir = sys.argv[1:6]
    asyncio.run(main(dsn, service, topic, float(pause), data_dir))
