"""Every bus-fed handler of every service, given every event again, changes nothing.

The embedded default is the harshest redelivery there is: its bus keeps nothing across a
restart, so every relay publishes its whole store again from position 0 and every group reads
it from the start (``InProcessBus``). Marco's case is walked to its closure (coordination's
follow-ups cancel and release), the deployment restarted, and every event handed over again:
no store holds a second event (a follow-up written twice, a release booked twice) and no
read-model document differs (a caseload, a count, a budget line counted twice).

Distributed (PostgreSQL and Kafka, one process per service), the same case's every record is
put back on the topic as ``casetrail dlq replay`` puts a letter back (the same key, value and
headers, marked ``casetrail_dlq_replayed``): after later events of its case, to every group."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from casetrail_platform.bus.kafka_clients import close_quietly, new_producer
from cli.main import SERVICES
from cli.rpc import connect
from events.dead_letters import REPLAYED
from services.demo import embedded_services, walk_case
from tests.contract.bus_conftest import kafka_test_settings
from tests.support.distributed import service_processes
from tests.support.identity import TestIssuer
from tests.support.kafka_reading import partitions_of, records_to_end

Snapshot = dict[str, tuple[list[tuple[object, ...]], list[tuple[object, ...]]]]

CHANGING_ON_THEIR_OWN = ("ledger_witness",)
"""Collections that change with time, not with events (audit's witness of the services'
ledgers, which sign again on start)."""


def snapshot(data_dir: Path) -> Snapshot:
    taken: Snapshot = {}
    for service in SERVICES:
        directory = data_dir / service
        with sqlite3.connect(directory / "events.db") as events:
            stored = events.execute(
                "SELECT position, event_id, stream, sequence, event_type, causation_id"
                " FROM stored_events ORDER BY position"
            ).fetchall()
        with sqlite3.connect(directory / "read-models.db") as read_models:
            documents = [
                row
                for row in read_models.execute(
                    "SELECT collection, key, document FROM documents ORDER BY collection, key"
                ).fetchall()
                if not str(row[0]).startswith(CHANGING_ON_THEIR_OWN)
            ]
        taken[service] = (stored, documents)
    return taken


async def snapshot_postgres(dsn: str) -> Snapshot:
    import psycopg

    taken: Snapshot = {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as connection:
        for service in SERVICES:
            stored = await (
                await connection.execute(
                    "SELECT position, event_id::text, stream, sequence, event_type,"
                    f" causation_id::text FROM {service}_events.stored_events ORDER BY position"
                )
            ).fetchall()
            documents = [
                row
                for row in await (
                    await connection.execute(
                        "SELECT collection, key, document::text"
                        f" FROM {service}_read_models.documents ORDER BY collection, key"
                    )
                ).fetchall()
                if not str(row[0]).startswith(CHANGING_ON_THEIR_OWN)
            ]
            taken[service] = (stored, documents)
    return taken


async def settled(
    take: Callable[[], Awaitable[Snapshot]], *, quiet_for: int = 4, patience: float = 180.0
) -> Snapshot:
    """The stores and read models once nothing has changed for ``quiet_for`` seconds."""
    last, quiet = await take(), 0
    async with asyncio.timeout(patience):
        while quiet < quiet_for:
            await asyncio.sleep(1)
            now = await take()
            quiet = quiet + 1 if now == last else 0
            last = now
    return last


async def consumed_to_end(topic: str, groups: int, patience: float = 180.0) -> None:
    """Until ``groups`` consumer groups have committed ``topic`` up to its end: every
    replayed record was handled (else an unchanged read model could mean "not yet")."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    settings = kafka_test_settings()
    partitions = await partitions_of([topic])
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    ends_reader = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    await ends_reader.start()
    try:
        ends = await ends_reader.end_offsets(partitions)
        async with asyncio.timeout(patience):
            while True:
                done = 0
                for group, _ in await admin.list_consumer_groups():
                    committed = await admin.list_consumer_group_offsets(group)
                    mine = {tp: meta.offset for tp, meta in committed.items() if tp.topic == topic}
                    done += bool(mine) and all(mine.get(tp, 0) >= ends[tp] for tp in ends)
                if done >= groups:
                    return
                await asyncio.sleep(1)
    finally:
        await ends_reader.stop()
        await admin.close()


def assert_unchanged(before: Snapshot, after: Snapshot) -> None:
    # The closure's follow-ups are among what is handed over again.
    assert any(row[5] is not None for row in before["coordination"][0]), "no follow-up"
    for service in SERVICES:
        stored_before, documents_before = before[service]
        stored_after, documents_after = after[service]
        assert stored_after == stored_before, f"{service} recorded events on redelivery"
        changed = sorted({row[:2] for row in set(documents_after) ^ set(documents_before)}, key=str)
        assert not changed, f"{service}: documents changed on redelivery: {changed[:10]}"


async def test_every_event_handed_over_again_changes_no_store_and_no_read_model(
    tmp_path: Path,
) -> None:
    async def take() -> Snapshot:
        return snapshot(tmp_path)

    async with embedded_services(tmp_path) as local:
        async with connect(local.addresses, local.tokens) as connection:
            await walk_case(connection, lambda _: None)
        before = await settled(take)
    async with embedded_services(tmp_path):
        after = await settled(take)
    assert_unchanged(before, after)


@pytest.mark.postgres
@pytest.mark.kafka
async def test_every_record_replayed_as_a_dead_letter_changes_nothing_on_kafka(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    async with service_processes(tmp_path, issuer.env()) as processes:
        async with connect(processes.addresses, issuer.tokens) as connection:
            await walk_case(connection, lambda _: None, patience=90.0)

        async def take() -> Snapshot:
            return await snapshot_postgres(processes.dsn)

        before = await settled(take)
        records = await records_to_end(await partitions_of([processes.topic]))
        assert records
        producer = new_producer(kafka_test_settings(), "casetrail-test-replay")
        await producer.start()
        try:
            for record in records:  # as kafka_dead_letters.replay_dead_letters sends a letter
                await producer.send_and_wait(
                    processes.topic,
                    value=record.value,
                    key=record.key,
                    headers=[*record.headers, (REPLAYED, b"1")],
                )
        finally:
            await close_quietly(producer, 10.0)
        await consumed_to_end(processes.topic, groups=11)  # every group of the four services
        after = await settled(take)
    assert_unchanged(before, after)
