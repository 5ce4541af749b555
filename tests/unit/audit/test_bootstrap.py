"""The audit service as ``make run`` starts it: embedded storage, in-process bus, real gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import cast

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail_platform.infrastructure import Infrastructure
from cli.rpc import Person
from services.audit.bootstrap import start
from tests.support.identity import TestIssuer, acting, caller_channel
from tests.support.servers import free_port
from tests.unit.audit.support import CASE, DAY, T0, late_recorded_case


def auditor() -> common_pb2.QueryContext:
    return acting(
        Person("auditor-kim", "auditor"), common_pb2.QueryContext(purpose="confidentiality_review")
    )


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for the bus and the projections to catch up (a bounded wait, not a timing claim)."""
    for _ in range(800):
        if await check():
            return
        await asyncio.sleep(0.025)
    pytest.fail(f"never happened: {what}")


@pytest.fixture
async def running(
    tmp_path: Path, issuer: TestIssuer
) -> AsyncIterator[tuple[Infrastructure, audit_pb2_grpc.AuditServiceAsyncStub, grpc.aio.Channel]]:
    infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
    service = await start(infra)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as opened:
            channel = caller_channel(opened, issuer)
            stub = cast(
                "audit_pb2_grpc.AuditServiceAsyncStub", audit_pb2_grpc.AuditServiceStub(channel)
            )
            yield infra, stub, channel
    finally:
        await service.stop()


async def test_events_from_the_bus_and_audits_own_accesses_form_the_history(
    running: tuple[Infrastructure, audit_pb2_grpc.AuditServiceAsyncStub, grpc.aio.Channel],
) -> None:
    infra, audit, channel = running
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(
        health_pb2.HealthCheckRequest(service="casetrail.audit.v1.AuditService")
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

    assert infra.inprocess_bus is not None
    await infra.inprocess_bus.publisher(infra.topic).publish(late_recorded_case())

    async def case_events_arrived() -> bool:
        try:
            page = await audit.GetTimeline(
                audit_pb2.GetTimelineRequest(context=auditor(), case_id=CASE, as_of=_at(10))
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.NOT_FOUND:
                raise
            return False
        return bool(page.total_events == 4)

    await eventually(case_events_arrived, "the case's four events reached the timeline")

    async def access_in_history() -> bool:
        page = await audit.GetTimeline(
            audit_pb2.GetTimelineRequest(context=auditor(), case_id=CASE)
        )
        return any(e.event_type == "casetrail.record.accessed" for e in page.entries)

    await eventually(access_in_history, "the auditor's access joined the case history")
    log = await audit.GetAccessLog(audit_pb2.GetAccessLogRequest(context=auditor(), case_id=CASE))
    assert {r.accessor.user_id for r in log.records} == {"auditor-kim"}


def _at(days: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(T0 + days * DAY)
    return stamp


async def test_a_health_port_answers_probes_in_plaintext_and_nothing_else(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    """With ``health_address`` (CASETRAIL_HEALTH_PORT) the service also answers grpc.health.v1
    alone on a plaintext port, as Kubernetes' gRPC probes need when the main port speaks TLS."""
    health_port = free_port()
    infra = replace(
        Infrastructure.embedded(tmp_path, verifier=issuer.verifier()),
        health_address=f"127.0.0.1:{health_port}",
    )
    service = await start(infra)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(
                health_pb2.HealthCheckRequest(service="casetrail.audit.v1.AuditService")
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetTimeline(audit_pb2.GetTimelineRequest(case_id=CASE))
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await service.stop()
