"""The services of one process started on one in-process bus (``services.runner.
start_services``: ``make run``, the demo, tests' support): its barriers wait until every
service has started. Each service's relay refills the bus from its store and is made only as
its service starts, and each service serves before the next starts: intake answered while
coordination's and planning's stores were not on the bus yet, so a transfer recorded before
the stop counted for nothing and the old team's supervisor reopened the case."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.infrastructure import Infrastructure
from services.coordination import bootstrap as coordination
from services.runner import start_services, stop_services
from tests.support.identity import TestIssuer

SERVICES = ("intake", "coordination")
PATIENCE = 5.0
"""A barrier's patience where it is to be answered (FACTS_WAIT_SECONDS)."""
BRIEF = 0.3
"""A barrier's patience where it is to wait still."""


async def _caught_up(infra: Infrastructure, patience: float) -> bool:
    """A barrier on the bus, as intake's policy facts ask before a supervisor's ReopenCase."""
    assert infra.inprocess_bus is not None
    subscriber = infra.inprocess_bus.subscriber(infra.registry, infra.topic)
    return await subscriber.caught_up(
        "casetrail.intake.policy.case-facts-v2", "case-1", patience=patience
    )


async def test_the_bus_barriers_wait_until_every_service_of_the_process_has_started(
    tmp_path: Path, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    start = coordination.start

    async def slow_start(*arguments: Any) -> Any:  # its own projections caught up first, say
        started.set()
        await release.wait()
        return await start(*arguments)

    monkeypatch.setattr(coordination, "start", slow_start)
    infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
    starting = asyncio.create_task(
        start_services(infra, SERVICES, "127.0.0.1", dict.fromkeys(SERVICES, 0))
    )
    try:
        await started.wait()  # intake serves
        assert not await _caught_up(infra, BRIEF)
    finally:
        release.set()
        running = await starting
    try:
        assert await _caught_up(infra, PATIENCE)
    finally:
        await stop_services(running)


async def test_a_start_that_fails_holds_the_barriers_no_longer(
    tmp_path: Path, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_start(*arguments: Any) -> Any:
        raise RuntimeError("coordination's agency file is unreadable")

    monkeypatch.setattr(coordination, "start", failing_start)
    infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
    with pytest.raises(RuntimeError, match="agency file"):
        await start_services(infra, SERVICES, "127.0.0.1", dict.fromkeys(SERVICES, 0))
    assert await _caught_up(infra, PATIENCE)


async def test_a_single_service_started_holds_the_barriers_no_longer(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
    running = await start_services(infra, ("intake",), "127.0.0.1", {"intake": 0})
    try:
        assert await _caught_up(infra, PATIENCE)
    finally:
        await stop_services(running)


async def test_a_start_that_fails_after_making_its_relay_holds_the_barriers_no_longer(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    """Coordination's port is taken: its start fails after its relay was made (telling the
    bus a refill is under way), before the relay ever ran to end it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = {"intake": 0, "coordination": taken.getsockname()[1]}
        infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
        with pytest.raises(Exception, match="bind"):
            await start_services(infra, SERVICES, "127.0.0.1", ports)
    assert await _caught_up(infra, PATIENCE)
