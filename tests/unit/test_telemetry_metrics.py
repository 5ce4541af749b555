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
from tests.support.cases import registration

_SERVICE = "casetrail.intake.v1.IntakeService"


def _scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text: str = answer.read().decode()
    return text


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = _scrape_text(port)
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


_OWN_PROJECTIONS = {
    ("intake", "intake.client-directory-v6"),
    ("intake", "intake.emergency-accesses"),
    ("coordination", "assignments"),
    ("audit", "timeline-index-v2"),
    ("audit", "disclosure-index-recorded"),
}
"""Every projection a service feeds from its own store (the bootstraps' project_own_events)."""
_SERVICES = {"intake", "planning", "coordination", "audit"}
_BUS_FED_COUNT = "casetrail_projection_lag_seconds_count"


async def test_each_own_store_projection_shows_how_far_it_has_got(tmp_path: Path) -> None:
    _host, port, server = serve_metrics("127.0.0.1:0")
    try:
        async with (
            embedded_services(tmp_path) as local,
            connect(local.addresses, local.tokens) as connection,
        ):
            request = registration()
            client = await connection.as_(RECEPTIONIST).intake.RegisterClient(request)
            directory = (("projection", "intake.client-directory-v6"), ("service", "intake"))
            # Sampled every 2 s: until the client's registration shows as applied.
            async with asyncio.timeout(15):
                while True:
                    samples = await asyncio.to_thread(_scrape, port)
                    position = samples.get(("casetrail_projection_position", directory), 0.0)
                    behind = samples.get(("casetrail_projection_lag_events", directory))
                    fed = [labels for name, labels in samples if name == _BUS_FED_COUNT]
                    witnessed = samples.get(("casetrail_ledger_witness_consistent", ()))
                    if position > 0 and behind == 0 and fed and witnessed == 1:
                        break
                    await asyncio.sleep(0.2)
            text = await asyncio.to_thread(_scrape_text, port)
    finally:
        server.shutdown()  # type: ignore[attr-defined]

    for metric in (
        "casetrail_projection_lag_events",
        "casetrail_projection_position",
        "casetrail_projection_position_age_seconds",
    ):
        labelled = {labels for name, labels in samples if name == metric}
        # Labelled by service and projection only. One registry per process: other tests may
        # have run the four services (the same series) or hosts of their own (other names).
        assert {tuple(key for key, _value in labels) for labels in labelled} == {
            ("projection", "service")
        }
        ours = {(dict(labels)["service"], dict(labels)["projection"]) for labels in labelled}
        assert {(service, name) for service, name in ours if service in _SERVICES} == (
            _OWN_PROJECTIONS
        )
    # A bus-fed projection's delays, per service feeding it: intake and planning both feed
    # policy.case-facts.
    assert {tuple(key for key, _value in labels) for labels in fed} == {("projection", "service")}
    assert client.client_id not in text
    assert request.name.family_name not in text
    assert request.identifiers[0].value not in text
