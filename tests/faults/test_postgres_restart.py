"""Issue 8, item 1, at the adapters: a PostgreSQL restart is a non-event for the event store,
its LISTEN follower, checkpoints, read models, the services' locks and the ledger. While the
server is down every call fails fast with ``StorageUnavailableError``; once it is back the same
objects work again, nothing reopened by hand, and a follower catches up with what was appended
meanwhile."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.postgres import PostgresLedgerStore
from casetrail_platform.locking.postgres import PostgresLocks
from casetrail_platform.locking.serving import SESSION_CHECK, alone, mark_serving
from casetrail_platform.projections.postgres import PostgresReadModelStore
from casetrail_platform.store.postgres import PostgresEventStore
from casetrail_platform.store.postgres_checkpoints import PostgresCheckpointStore
from events.registry import EventRegistry
from tests.faults.servers import restart, server_down
from tests.support.distributed import fresh_database
from tests.support.sample_events import note, sample_registry
from tests.support.servers import kafka_bootstrap

pytestmark = [pytest.mark.faults, pytest.mark.postgres]


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with fresh_database() as fresh:
        yield fresh


@pytest.fixture
def registry() -> EventRegistry:
    return sample_registry()


async def test_adapters_answer_unavailable_while_down_and_recover_by_themselves(
    dsn: str, registry: EventRegistry
) -> None:
    store = await PostgresEventStore.connect(dsn, registry, schema="faults_events")
    checkpoints = await PostgresCheckpointStore.connect(dsn, schema="faults_events")
    read_models = await PostgresReadModelStore.connect(dsn, schema="faults_read_models")
    locks = PostgresLocks(dsn)
    ledger = await PostgresLedgerStore.connect(dsn, schema="faults_events")
    try:
        # Every kind of connection in use before the restart: writer, readers, LISTEN.
        await store.append("case-1", [note("case-1")], 0)
        await store.wait_for_append(0, 0.1)
        await checkpoints.save("relay", 1)
        async with read_models.transaction() as transaction:
            await transaction.put("cases", "case-1", {"notes": 1})
        assert await read_models.get("cases", "case-1") == {"notes": 1}
        async with locks.holding(["client:1"]):
            pass  # leaves an idle session the restart will drop
        assert await ledger.store_last_position() == 1

        async with server_down("postgres"):
            unavailable = [
                store.append("case-1", [note("case-1")], 1),
                store.read_stream("case-1"),
                store.last_position(),
                checkpoints.load("relay"),
                checkpoints.save("relay", 2),
                read_models.get("cases", "case-1"),
                read_models.find("cases"),
                ledger.store_last_position(),
            ]
            for call in unavailable:
                with pytest.raises(StorageUnavailableError):
                    await asyncio.wait_for(call, 10)
            with pytest.raises(StorageUnavailableError):
                async with read_models.transaction() as transaction:
                    await transaction.put("cases", "case-1", {"notes": 2})
            with pytest.raises(StorageUnavailableError):
                async with locks.holding(["client:1"]):
                    pass

        # Back: the same objects, no reconnecting by hand.
        waiting = asyncio.create_task(store.wait_for_append(1, 30))
        await store.append("case-1", [note("case-1")], 1)
        await asyncio.wait_for(waiting, 30)
        assert [e.sequence for e in await store.read_stream("case-1")] == [1, 2]
        assert await store.last_position() == 2
        await checkpoints.save("relay", 2)
        assert await checkpoints.load("relay") == 2
        async with read_models.transaction() as transaction:
            await transaction.put("cases", "case-1", {"notes": 2})
        assert await read_models.get("cases", "case-1") == {"notes": 2}
        async with locks.holding(["client:1"]):
            pass
        assert await ledger.store_last_position() == 2
    finally:
        await ledger.close()
        await locks.close()
        await read_models.close()
        await checkpoints.close()
        await store.close()


async def test_a_replica_marked_running_is_marked_again_after_a_restart(
    dsn: str, tmp_path: Path
) -> None:
    """A replica's mark (``mark_serving``) is a session-level lock: it went with the restart
    and was never taken again, so a rebuild begun afterwards found nobody running and reset
    the projection under the replica. It is taken again once the server is back."""
    infra = Infrastructure.distributed(
        tmp_path, dsn, KafkaSettings(bootstrap_servers=kafka_bootstrap())
    )
    service = f"faults{uuid.uuid4().hex[:8]}"
    unmark = await mark_serving(infra, service)
    try:
        await restart("postgres", down_for=1.0)

        async def seen_running() -> bool:
            async with alone(infra, service, "assignments") as nobody:
                return not nobody

        async with asyncio.timeout(4 * SESSION_CHECK + 10):
            while not await seen_running():  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        await unmark()

    async def released() -> bool:
        async with alone(infra, service, "assignments") as nobody:
            return nobody

    # Released for good. Unlocked at once when the session answers; a session closed while it
    # was being taken again releases once its server process notices (CI51 saw it still held).
    async with asyncio.timeout(10):
        while not await released():  # noqa: ASYNC110
            await asyncio.sleep(0.2)
