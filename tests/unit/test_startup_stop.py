"""A start-up attempt still connecting when SIGTERM comes is given up within the stop's bound
for cancelled work (casetrail_platform.shutdown.CANCEL_SECONDS), not waited for without one:
psycopg's connect, cancelled on a frozen server, can take 10 s to end."""

from __future__ import annotations

import asyncio
import time

from casetrail_platform.shutdown import CANCEL_SECONDS
from services.startup import start_when_reachable

_HOLD_SECONDS = 6.0
"""How long the attempt takes to end once cancelled (a frozen server's connect)."""


async def test_an_attempt_slow_to_end_when_cancelled_is_left_behind_in_time() -> None:
    """The old code waited for it: 6 s here, 10 s on a frozen PostgreSQL."""
    ended = asyncio.Event()

    async def attempt() -> str:
        try:
            await asyncio.sleep(3600)  # connecting to a server that does not answer
        except asyncio.CancelledError:
            hold = asyncio.ensure_future(asyncio.sleep(_HOLD_SECONDS))
            # The cancel is not taken at once (psycopg asks the server first); shield keeps
            # this hold from a second cancel, as a blocking wait would.
            await asyncio.shield(hold)
            ended.set()
            raise
        return "connected"

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    started = time.monotonic()
    result = await start_when_reachable(attempt, lambda error: None, stop, what="intake")
    took = time.monotonic() - started
    assert result is None
    assert took < 0.1 + CANCEL_SECONDS + 1.0, took
    assert not ended.is_set()  # left behind, not waited for
