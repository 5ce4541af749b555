"""The metrics endpoint of a process running the four services (embedded backend): it parses
with prometheus-client's own parser, and its counters match the commands sent."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from casetrail.intake.v1 import intake_pb2_grpc
from casetrail_platform.telemetry.metrics import serve_metrics
from cli.rpc import connect
from cli.walk.story import RECEPTIONIST
from services.demo import embedded_services
from tests.e2e.support import registration

_SERVICE = "casetrail.intake.v1.IntakeService"


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _rpcs(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], code: str) -> float:
    labels = (("code", code), ("method", "RegisterClient"), ("service", _SERVICE))
    return samples.get(("casetrail_rpc_requests_total", labels), 0.0)


async def test_the_counters_match_the_commands_sent(tmp_path: Path) -> None:
    _host, port, server = serve_metrics("127.0.0.1:0")
    try:
        async with (
            embedded_services(tmp_path) as local,
            connect(local.addresses, local.tokens) as connection,
        ):
            before = await asyncio.to_thread(_scrape, port)
            intake = connection.as_(RECEPTIONIST).intake
            for _ in range(3):
                await intake.RegisterClient(registration())
            bad = registration()
            bad.date_of_birth = "not a date"
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await intake.RegisterClient(bad)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            async with grpc.aio.insecure_channel(local.addresses["intake"]) as channel:
                anonymous = intake_pb2_grpc.IntakeServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await anonymous.RegisterClient(registration())
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            after = await asyncio.to_thread(_scrape, port)
    finally:
        server.shutdown()  # type: ignore[attr-defined]

    assert _rpcs(after, "OK") - _rpcs(before, "OK") == 3
    assert _rpcs(after, "INVALID_ARGUMENT") - _rpcs(before, "INVALID_ARGUMENT") == 2
    assert _rpcs(after, "UNAUTHENTICATED") - _rpcs(before, "UNAUTHENTICATED") == 1
    timed = (("method", "RegisterClient"), ("service", _SERVICE))
    count = after[("casetrail_rpc_duration_seconds_count", timed)]
    assert count - before.get(("casetrail_rpc_duration_seconds_count", timed), 0.0) == 6
    relays = {
        dict(labels)["relay"] for name, labels in after if name == "casetrail_outbox_lag_events"
    }
    assert "intake-outbox" in relays
