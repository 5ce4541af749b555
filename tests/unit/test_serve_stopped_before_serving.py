"""casetrail serve stopped while its distributed start-up still waits for PostgreSQL or Kafka
("stopped before serving") is done stopping: the stop's watchdog (StopDeadline) must not go on
to end the process at the deadline."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.shutdown import StopDeadline
from services import runner
from tests.support.runner import composed_infrastructure

WATCHDOG_SECONDS = 0.2


async def test_the_watchdog_is_cancelled_when_stopped_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the old code the watchdog fired WATCHDOG_SECONDS after the SIGTERM: exit 1."""
    options = runner.parse(["--backend", "distributed", "--service", "intake", "--any-port"])
    infra = await composed_infrastructure(monkeypatch, options, tmp_path)

    ended: list[int] = []
    deadlines: list[StopDeadline] = []

    class QuickDeadline(StopDeadline):
        def __init__(self, on_stop: Callable[[], None]) -> None:
            super().__init__(on_stop, WATCHDOG_SECONDS, ended.append)
            deadlines.append(self)

        def install(self, loop: asyncio.AbstractEventLoop) -> None:
            """No handlers on this (the test) process's signals: signalled is called below."""

    async def stopped_while_starting(*_: Any) -> None:
        (deadline,) = deadlines
        deadline.signalled(signal.SIGTERM)  # SIGTERM while PostgreSQL is out of reach

    monkeypatch.setattr(runner, "StopDeadline", QuickDeadline)
    monkeypatch.setattr(runner, "start_distributed", stopped_while_starting)
    await runner._serve(options, tmp_path, infra, ["intake"], {"intake": 0}, None)
    assert "stopped before serving" in capsys.readouterr().out

    await asyncio.sleep(WATCHDOG_SECONDS * 3)
    assert ended == []
