"""Liveness is not readiness: a database outage takes a service out of the endpoints ("" and its
service names NOT_SERVING) but its liveness entry stays SERVING, so kubelet does not restart
every replica during a fail-over (the chart's livenessProbe asks ``LIVENESS_SERVICE``)."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.grpc_platform.server import create_server
from casetrail_platform.health import LIVENESS_SERVICE, watch_storage
from tests.support.identity import TestIssuer

SERVICE = "casetrail.test.v1.TestService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_database_outage_leaves_the_liveness_entry_serving() -> None:
    database_up = True

    async def probe() -> None:
        if not database_up:
            raise StorageUnavailableError("test database")

    server, port, health_servicer = await create_server(
        "127.0.0.1:0", [], [SERVICE], verifier=TestIssuer().verifier()
    )
    await server.start()
    stop = asyncio.Event()
    watching = asyncio.create_task(
        watch_storage(
            [probe], health_servicer, "casetrail.test.database", [SERVICE], stop, every=0.01
        )
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def status(name: str) -> int:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=name))
                return int(answer.status)

            assert await status(LIVENESS_SERVICE) == SERVING
            database_up = False
            for _ in range(200):
                if await status("") == NOT_SERVING:
                    break
                await asyncio.sleep(0.01)
            assert await status("") == NOT_SERVING  # readiness: out of the endpoints
            assert await status(SERVICE) == NOT_SERVING
            assert await status(LIVENESS_SERVICE) == SERVING  # liveness: no restart
    finally:
        stop.set()
        await watching
        await server.stop(None)
