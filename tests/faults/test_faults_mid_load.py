"""Issue 8: the fault suite. The four services run as separate processes on the PostgreSQL
server and Kafka broker `make test` started; while clients send commands, PostgreSQL is
restarted, then the broker, then service processes are killed with SIGKILL and started again.
After each fault the whole run is reconciled exactly (``tests/support/load.py``): every
acknowledged command in the store, on Kafka, in audit's timeline and in the read models,
nothing duplicated, nothing dead-lettered; and no command was ever answered anything but OK
or a retriable UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from casetrail_platform.bus.kafka_settings import KafkaSettings
from tests.faults.servers import restart, server_down
from tests.support.distributed import ServiceProcesses, service_processes
from tests.support.identity import TestIssuer
from tests.support.load import Load, reconcile
from tests.support.servers import kafka_bootstrap

pytestmark = [
    pytest.mark.faults,
    pytest.mark.postgres,
    pytest.mark.kafka,
    pytest.mark.asyncio(loop_scope="module"),
]

CASES = 6
LOAD_BEFORE = 2.0
"""Seconds of load before each fault, and after it before the load stops."""
HEALTH_PATIENCE = 30.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def load(tmp_path_factory: pytest.TempPathFactory, issuer: TestIssuer) -> AsyncIterator[Load]:
    data_dir = tmp_path_factory.mktemp("faults")
    async with service_processes(data_dir, issuer.env()) as processes:
        load = Load(processes, uuid.uuid4().hex[:8], issuer.tokens)
        try:
            await load.prepare(CASES)
            yield load
        finally:
            await load.close()


def kafka() -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap(), request_timeout_ms=10_000)


async def under_load(load: Load, fault: Callable[[], Awaitable[None]]) -> None:
    """Commands before, during and after ``fault``; then wait for those in flight."""
    stop = asyncio.Event()
    clients = asyncio.create_task(load.run(stop))
    try:
        await asyncio.sleep(LOAD_BEFORE)
        await fault()
        await asyncio.sleep(LOAD_BEFORE)
    finally:
        stop.set()
        await clients


async def assert_reconciled(load: Load) -> None:
    result = await reconcile(load, kafka())
    print(result.summary(), "retried:", dict(load.retried))
    assert result.problems == []
    assert load.refused == {}, "only OK and retriable answers are expected"


async def health(processes: ServiceProcesses, service: str, entry: str) -> int:
    async with grpc.aio.insecure_channel(processes.addresses[service]) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=entry), timeout=5
        )
    return int(response.status)


async def until_health(processes: ServiceProcesses, wanted: int) -> None:
    """Every service reports ``wanted`` for its database and as a whole."""
    deadline = time.monotonic() + HEALTH_PATIENCE
    for service in processes.addresses:
        for entry in (f"casetrail.{service}.database", ""):
            while await health(processes, service, entry) != wanted:
                assert time.monotonic() < deadline, f"{service} {entry!r} never {wanted}"
                await asyncio.sleep(0.2)


async def test_a_postgres_restart_mid_load_loses_nothing(load: Load) -> None:
    processes = load.processes

    async def restart_postgres() -> None:
        async with server_down("postgres"):
            await until_health(processes, health_pb2.HealthCheckResponse.NOT_SERVING)
            await asyncio.sleep(1.0)
        back = time.monotonic()
        await until_health(processes, health_pb2.HealthCheckResponse.SERVING)
        first = load.first_ack_after(back)
        print(f"first command acknowledged {first} s after PostgreSQL accepted connections")

    await under_load(load, restart_postgres)
    assert load.retried["UNAVAILABLE"] > 0, "commands met the outage and were told to retry"
    await assert_reconciled(load)


async def test_a_kafka_restart_mid_load_loses_nothing(load: Load) -> None:
    async def restart_kafka() -> None:
        await restart("kafka", down_for=1.0)

    await under_load(load, restart_kafka)
    await assert_reconciled(load)


@pytest.mark.parametrize("service", ["planning", "audit"])
async def test_a_service_killed_mid_load_loses_nothing(load: Load, service: str) -> None:
    processes = load.processes

    async def kill_and_start() -> None:
        await processes.kill(service)
        await asyncio.sleep(0.5)
        await processes.start((service,))

    await under_load(load, kill_and_start)
    await assert_reconciled(load)
