"""A projection of a service's own store that fails on an event at start (a bug, an event it
cannot apply): the start awaited its catch-up unguarded, so the service never served, its other
projections were never caught up or followed, and every restart failed the same way. Now the
service starts and serves, the projection is left to its follower's retries, and its own health
entry reports it NOT_SERVING until it gets past the event."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from casetrail_platform.bus.inprocess import InProcessBus
from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.hosting import host_for
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.projections.port import DocumentTransaction, Projection
from casetrail_platform.projections.progress import projection_health
from casetrail_platform.store.port import NO_STREAM
from events.envelope import RecordedEvent
from tests.support.identity import TestIssuer
from tests.support.sample_events import NoteWritten, note, sample_registry

CANARY = "CANARY-" + "h" * 40


class Filed(Projection):
    name = "filed"
    collections = ("filed",)

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        await transaction.put("filed", str(recorded.position), {"type": recorded.event_type})


class Poisoned(Projection):
    """Fails on every note until ``cured`` (its next version, deployed)."""

    name = "poisoned"
    collections = ("poisoned",)

    def __init__(self, failure: Exception) -> None:
        self.failure = failure
        self.cured = False

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        if not self.cured and isinstance(recorded.event, NoteWritten):
            raise self.failure
        await transaction.put("poisoned", str(recorded.position), {"type": recorded.event_type})


def _infrastructure(directory: Path) -> Infrastructure:
    return Infrastructure(
        data_dir=directory,
        inprocess_bus=InProcessBus(),
        registry=sample_registry(),
        verifier=TestIssuer().verifier(),
        seal_sensitive=False,
    )


async def _health(port: int, entry: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=entry), timeout=5
        )
    return int(answer.status)


async def test_a_projection_failing_at_start_is_reported_not_the_start_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = await host_for(_infrastructure(tmp_path), "test")
    await host.store.append("case-1", [note("case-1", CANARY)], NO_STREAM)
    poisoned = Poisoned(RuntimeError(f"cannot file {CANARY}"))
    host.project_own_events(poisoned)  # first: the one after it was never caught up
    host.project_own_events(Filed())
    with caplog.at_level(logging.ERROR):
        running = await host.start("127.0.0.1:0", [], [])
    try:
        assert await host.read_models.applied_position("filed") == 1
        assert await host.read_models.applied_position("poisoned") == 0
        serving = health_pb2.HealthCheckResponse.SERVING
        stalled_entry = projection_health("test", "poisoned")
        assert await _health(running.port, "") == serving
        assert await _health(running.port, projection_health("test", "filed")) == serving
        assert (
            await _health(running.port, stalled_entry) == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        assert "projection poisoned not caught up at start" in caplog.text
        assert "RuntimeError" in caplog.text
        assert CANARY not in caplog.text

        poisoned.cured = True
        for _ in range(200):
            if await _health(running.port, stalled_entry) == serving:
                break
            await asyncio.sleep(0.05)
        assert await _health(running.port, stalled_entry) == serving
        assert await host.read_models.applied_position("poisoned") == 1
    finally:
        await running.stop()


async def test_an_outage_at_start_still_fails_it(tmp_path: Path) -> None:
    """The database away fails every part of the service alike: the start, as before."""
    host = await host_for(_infrastructure(tmp_path), "test")
    await host.store.append("case-1", [note("case-1")], NO_STREAM)
    host.project_own_events(Poisoned(StorageUnavailableError("test read models")))
    with pytest.raises(StorageUnavailableError):
        await host.start("127.0.0.1:0", [], [])
