"""The bounds of a service process's stop (casetrail_platform/shutdown.py): a step that hangs is
left behind after its time, and its cancellation is not waited for; the first signal arms a
watchdog, a second one ends the process at once."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

from casetrail_platform.shutdown import StopDeadline, left_behind, within


async def test_a_step_that_hangs_is_left_behind_in_time_even_if_its_cancellation_hangs() -> None:
    release = asyncio.Event()

    async def frozen_server_query() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            # psycopg, cancelled, asks the frozen server to cancel the query and waits.
            await release.wait()
            raise

    began = time.monotonic()
    finished = await within("a query", frozen_server_query(), 0.2)
    assert not finished
    assert time.monotonic() - began < 1.0
    assert "a query" in left_behind()
    release.set()


async def test_a_step_that_ends_in_time_is_not_left_behind_and_its_error_is_logged_only() -> None:
    async def fails() -> None:
        raise OSError("broken pipe")

    assert await within("a close that fails", fails(), 1.0)
    assert "a close that fails" not in left_behind()


def test_the_first_signal_stops_and_arms_the_watchdog_a_second_ends_at_once() -> None:
    stopped = threading.Event()
    ended: list[int] = []
    deadline = StopDeadline(stopped.set, seconds=0.3, end=ended.append)
    deadline.signalled(signal.SIGTERM)
    assert stopped.is_set()
    assert ended == []
    deadline.signalled(signal.SIGINT)
    assert ended == [128 + signal.SIGINT]
    time.sleep(0.6)  # the watchdog, armed by the first signal
    assert ended == [128 + signal.SIGINT, 1]


def test_a_stop_done_in_time_cancels_the_watchdog() -> None:
    ended: list[int] = []
    deadline = StopDeadline(lambda: None, seconds=0.2, end=ended.append)
    deadline.signalled(signal.SIGTERM)
    deadline.cancel()
    time.sleep(0.4)
    assert ended == []
