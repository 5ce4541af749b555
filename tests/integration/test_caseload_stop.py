"""The caseload worker process (Faust) ends within the chart's grace period after SIGTERM
(``shutdown.caseloadGracePeriodSeconds``), on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from services.caseload.__main__ import STOP_DEADLINE_SECONDS
from tests.faults.servers import frozen, seconds_to_end_after_sigterm
from tests.integration.caseload import (
    Setup,
    get,
    publish,
    scenario,
    worker_env_of,
    worker_process,
)
from tests.support.case_history import History
from tests.support.servers import free_port

pytestmark = [pytest.mark.kafka]

GRACE_PERIOD = 60  # the chart's shutdown.caseloadGracePeriodSeconds (tests/k8s checks it)


async def ready(port: int) -> bool:
    try:
        status, _ = await get(port, "/caseload-status/ready/")
    except (OSError, RuntimeError, ValueError):
        return False
    return status == 200


async def until_ready(process: asyncio.subprocess.Process, port: int, log_path: Path) -> None:
    """Until the worker says it is ready (within 120 s), failing with its log if it ends."""
    async with asyncio.timeout(120):
        while not await ready(port):
            assert process.returncode is None, log_tail(log_path)
            await asyncio.sleep(0.3)


def log_tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]


async def keep_publishing(setup: Setup) -> None:
    while True:
        await publish(setup.kafka, setup.topic, scenario(History()))
        await asyncio.sleep(0.05)


async def test_the_worker_ends_within_its_grace_period_after_sigterm(
    setup: Setup, tmp_path: Path
) -> None:
    """Faust's stop commits the open transactions and leaves the group in a few seconds; when
    that last commit fails (IllegalOperation: Not in the middle of a transaction, seen after
    exactly_once traffic) Faust's consumer thread kept the process alive: still running
    120 s after SIGTERM on the old code, where Kubernetes kills it at 60."""
    port = free_port()
    log_path = tmp_path / "worker.log"
    async with worker_process(worker_env_of(setup.settings, port), log_path) as process:
        await until_ready(process, port, log_path)
        # Events arriving while it stops: an agent still processing one after Faust's stop
        # ended the transactions is what makes its last commit fail.
        traffic = asyncio.ensure_future(keep_publishing(setup))
        await asyncio.sleep(3)
        took = await seconds_to_end_after_sigterm(process, GRACE_PERIOD + 10)
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
        log = log_path.read_text(errors="replace")
        assert process.returncode is not None, f"running {took:.0f} s after SIGTERM:\n{log[-3000:]}"
    assert took < STOP_DEADLINE_SECONDS + 2 < GRACE_PERIOD, log[-3000:]


@pytest.mark.faults
async def test_the_worker_ends_within_its_grace_period_with_kafka_frozen(
    setup: Setup, tmp_path: Path
) -> None:
    """A broker that stops answering with its connections open holds Faust's last commit and
    its group leave; the stop deadline ends the process before Kubernetes' SIGKILL."""
    port = free_port()
    log_path = tmp_path / "worker.log"
    async with worker_process(worker_env_of(setup.settings, port), log_path) as process:
        await until_ready(process, port, log_path)
        await publish(setup.kafka, setup.topic, scenario(History()))
        await asyncio.sleep(2)
        with frozen("kafka"):
            took = await seconds_to_end_after_sigterm(process, GRACE_PERIOD + 10)
        log = log_path.read_text(errors="replace")
        assert process.returncode is not None, f"running {took:.0f} s after SIGTERM:\n{log[-3000:]}"
    assert took < STOP_DEADLINE_SECONDS + 2 < GRACE_PERIOD, log[-3000:]
