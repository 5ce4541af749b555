"""Whether a service runs beside maintenance (``casetrail_platform.locking.serving``), on both
backends: a running service is seen, a stopped or dead one is not, and a service started
during the maintenance waits for it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.locking.postgres import PostgresLocks
from casetrail_platform.locking.serving import alone, mark_serving, projection_leadership
from tests.support.servers import kafka_bootstrap, postgres_dsn, server_missing


@pytest.fixture
async def distributed(tmp_path: Path) -> Infrastructure:
    """The distributed backend's infrastructure on the test servers (PostgreSQL reachable)."""
    import psycopg

    dsn = postgres_dsn()
    try:
        await (await psycopg.AsyncConnection.connect(dsn)).close()
    except psycopg.OperationalError as error:
        server_missing("PostgreSQL", error)
    return Infrastructure.distributed(
        tmp_path, dsn, KafkaSettings(bootstrap_servers=kafka_bootstrap())
    )


async def test_an_embedded_service_running_is_seen_and_one_starting_waits(
    tmp_path: Path,
) -> None:
    infra = Infrastructure.embedded(tmp_path)
    unmark = await mark_serving(infra, "intake")
    async with alone(infra, "intake", "intake.emergency-accesses") as nobody:
        assert not nobody
    async with alone(infra, "coordination", "assignments") as nobody:
        assert nobody  # another service's mark says nothing of this one
    await unmark()
    async with alone(infra, "intake", "intake.emergency-accesses") as nobody:
        assert nobody
        starting = asyncio.ensure_future(mark_serving(infra, "intake"))
        await asyncio.sleep(0.2)
        assert not starting.done()  # waits for the maintenance to end
    await (await asyncio.wait_for(starting, 5))()


async def test_a_distributed_replica_following_the_projection_is_seen(
    distributed: Infrastructure,
) -> None:
    assert distributed.postgres_dsn is not None
    service = f"test{uuid.uuid4().hex[:8]}"
    locks = PostgresLocks(distributed.postgres_dsn, poll=0.05)
    stop = asyncio.Event()
    following = asyncio.Event()

    async def follow(lost: asyncio.Event) -> None:
        following.set()
        await lost.wait()

    replica = asyncio.ensure_future(
        locks.lead(projection_leadership(service, "assignments"), follow, stop)
    )
    try:
        await asyncio.wait_for(following.wait(), 5)
        async with alone(distributed, service, "assignments") as nobody:
            assert not nobody
        async with alone(distributed, service, "other-projection") as nobody:
            assert nobody
    finally:
        stop.set()
        await replica
        await locks.close()
    async with alone(distributed, service, "assignments") as nobody:
        assert nobody


async def test_a_distributed_replica_starting_is_seen_before_it_leads_and_one_waits(
    distributed: Infrastructure,
) -> None:
    """A replica catches its projections up before it tries for their leadership
    (``ServiceHost._start``): a rebuild beginning meanwhile found nobody following and reset
    the projection under a replica about to answer from it. The replica's mark, taken first,
    shows it; and one starting during the rebuild waits for it to end."""
    service = f"test{uuid.uuid4().hex[:8]}"
    unmark = await mark_serving(distributed, service)  # started, not leading yet
    async with alone(distributed, service, "assignments") as nobody:
        assert not nobody
    other = await mark_serving(distributed, f"{service}x")
    await other()  # another service's mark says nothing of this one
    await unmark()
    async with alone(distributed, service, "assignments") as nobody:
        assert nobody
        starting = asyncio.ensure_future(mark_serving(distributed, service))
        await asyncio.sleep(0.3)
        assert not starting.done()  # waits for the maintenance to end
    await (await asyncio.wait_for(starting, 5))()
