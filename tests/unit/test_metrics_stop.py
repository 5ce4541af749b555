"""casetrail serve stops its metrics server off the event loop: ``shutdown()`` blocks until the
serving thread's next poll (up to 0.5 s), which on the loop held every other step of the stop
(the services' closes, side by side with it)."""

from __future__ import annotations

import asyncio
import time

from casetrail_platform.telemetry.metrics import serve_metrics
from services.runner import stop_metrics


class _SlowToStop:
    """A server whose shutdown blocks as long as the serving thread's poll can."""

    stopped = False

    def shutdown(self) -> None:
        time.sleep(0.5)
        self.stopped = True


async def test_the_loop_keeps_running_while_the_metrics_server_stops() -> None:
    """On the loop (the old stop), no tick came during the 0.5 s."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    server = _SlowToStop()
    await stop_metrics(server)
    ticker.cancel()
    assert server.stopped
    assert ticks >= 5, ticks  # 50 on an idle machine


async def test_a_real_metrics_server_stops_and_none_is_nothing_to_stop() -> None:
    _host, _port, server = serve_metrics("127.0.0.1:0")
    await asyncio.wait_for(stop_metrics(server), timeout=5)
    await stop_metrics(None)
