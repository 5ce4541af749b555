"""A hundred exports of one long case at once, through a real server and channel (port 0).

Before the server bounded its calls, the exports shared one event loop with the server's intake
of new calls; a turn of the loop took so long that calls waited in gRPC core's queue of calls not
yet taken, and after 30 s core cancelled them: ``CANCELLED`` with no details (27-50 of 100), the
server's code never reached, nothing recorded. Now each is answered or refused
``RESOURCE_EXHAUSTED`` naming the limit, with a retry delay, and health answers meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail_platform.grpc_platform.capacity import MAX_STREAMS_VARIABLE, Capacity
from casetrail_platform.grpc_platform.errors import SERVER_BUSY
from casetrail_platform.grpc_platform.server import create_server
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from services.audit.adapters.timeline import TimelineProjection
from services.audit.app.queries import AuditDeps
from services.audit.entrypoints.grpc_server import SERVICE_NAME, AuditServicer
from tests.support.grpc import details
from tests.support.identity import TestIssuer, caller_channel
from tests.unit.audit.support import (
    CASE,
    COORDINATOR,
    T0,
    assigned,
    coordination,
    intake,
    opened,
    viewer,
)

AT_ONCE = 100
EVENTS = 3000


@pytest.fixture
async def long_case(read_models: SqliteReadModelStore) -> int:
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    desk, office = intake(), coordination()
    events = [desk.record(opened(), occurred_at=T0)] + [
        office.record(
            assigned(worker_id=f"worker-{n}"),
            occurred_at=T0 + timedelta(minutes=n),
            actor=COORDINATOR,
        )
        for n in range(EVENTS - 1)
    ]
    for first in range(0, len(events), 500):
        await handler.handle_batch(events[first : first + 500])
    return len(events)


@pytest.fixture
async def channel(deps: AuditDeps, issuer: TestIssuer) -> AsyncIterator[grpc.aio.Channel]:
    servicer = AuditServicer(deps)
    server, port, _ = await create_server(
        "127.0.0.1:0",
        [lambda s: audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, s)],
        [SERVICE_NAME],
        verifier=issuer.verifier(),
        capacity=Capacity(max_streams=4),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened_channel:
            yield opened_channel
    finally:
        await server.stop(None)


async def test_a_hundred_exports_at_once_are_answered_or_refused_busy(
    channel: grpc.aio.Channel, issuer: TestIssuer, long_case: int
) -> None:
    audit = audit_pb2_grpc.AuditServiceStub(caller_channel(channel, issuer))
    health = health_pb2_grpc.HealthStub(channel)
    refusals: list[grpc.aio.AioRpcError] = []

    async def export() -> str:
        request = audit_pb2.ExportCaseRequest(context=viewer(), case_id=CASE)
        try:
            chunks = [chunk async for chunk in audit.ExportCase(request)]
        except grpc.aio.AioRpcError as error:
            refusals.append(error)
            return str(error.code().name)
        assert sum(chunk.event_count for chunk in chunks) == long_case
        return "OK"

    async def probe() -> None:
        # A probe, like kubelet's, while the server is full: answered, never refused.
        await asyncio.sleep(0.5)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    *outcomes, _ = await asyncio.gather(*[export() for _ in range(AT_ONCE)], probe())

    counted = collections.Counter(outcomes)
    assert set(counted) <= {"OK", "RESOURCE_EXHAUSTED"}, counted
    assert counted["OK"] >= 4
    for refused in refusals:
        status = rpc_status.from_call(refused)
        assert status is not None
        [info] = details(status, error_details_pb2.ErrorInfo)
        assert (info.reason, info.metadata["limit"]) == (SERVER_BUSY, MAX_STREAMS_VARIABLE)
        [retry] = details(status, error_details_pb2.RetryInfo)
        assert retry.retry_delay.seconds == 1
