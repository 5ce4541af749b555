"""How long a service process may take to stop, and how each step of the stop is held to it.

Kubernetes sends SIGTERM after the preStop sleep and SIGKILL at the end of the pod's
``terminationGracePeriodSeconds`` (the Helm chart computes it from these numbers, and
tests/k8s checks that it is longer than ``STOP_DEADLINE_SECONDS``). A PostgreSQL or Kafka
that stops answering with its connections open must not stretch the stop past it: every
step is bounded (``within``), and a watchdog armed at the first signal ends the process at
``STOP_DEADLINE_SECONDS`` whatever is still running (``StopDeadline``).

What a stop cut short can lose is only un-acknowledged work: a command is answered once its
events are committed to the store, the outbox relay advances its checkpoint only after Kafka
acknowledged a publish (so a cut-off one is published again on the next start), and a bus
consumer commits its offsets only after its read-model transaction (so a cut-off batch is
delivered again). README "Stopping and starting".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("casetrail.shutdown")

SERVER_STOP_GRACE_SECONDS = 5.0
"""On stop, in-flight gRPC calls get this long to finish (the Helm chart's shutdown timing)."""
BACKGROUND_STOP_SECONDS = 10.0
"""Then the relay and consumers get this long to finish their batch before being cancelled."""
CANCEL_SECONDS = 1.0
"""Then the ones cancelled get this long to end; psycopg, cancelled, asks the server to cancel
the query and waits up to 5 s for it, then as long again for the connection: a frozen
server would hold each of them 10 s."""
CLOSE_SECONDS = 5.0
"""Then every close together (Kafka producer, locks, read models, snapshots, stores)."""
EXIT_SECONDS = 2.0
"""Then the spans not yet exported and the logs get this long."""
STOP_DEADLINE_SECONDS = (
    SERVER_STOP_GRACE_SECONDS
    + BACKGROUND_STOP_SECONDS
    + CANCEL_SECONDS
    + CLOSE_SECONDS
    + EXIT_SECONDS
)
"""From the first SIGTERM to the end of the process, whatever hangs (``StopDeadline``)."""

_left_behind: list[str] = []


def left_behind() -> list[str]:
    """The steps of this process's stop that were cut short (``within``)."""
    return list(_left_behind)


async def within(what: str, work: Awaitable[Any], seconds: float) -> bool:
    """Await ``work`` for at most ``seconds``; whether it finished. Past that it is cancelled
    and left to end by itself: awaiting its cancellation could take as long again (psycopg's
    cancel of a query on a frozen server). An error is logged, never raised: the rest of the
    stop goes on."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=max(seconds, 0.0))
    if task not in done:
        task.cancel()
        _left_behind.append(what)
        log.warning("stopping: %s not done after %.1f s; left behind", what, seconds)
        return False
    if not task.cancelled() and (error := task.exception()) is not None:
        # By type only: the message may quote what it failed on.
        log.error("stopping: %s failed (%s)", what, type(error).__name__)
    return True


def exit_now(code: int) -> None:
    """End the process at once (no atexit, no waiting for threads), the logs flushed first."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # a closed stream: nothing more to say anyway
            handler.flush()
    sys.stdout.flush()
    os._exit(code)


def watchdog(seconds: float, end: Callable[[int], None] = exit_now) -> threading.Timer:
    """A timer ending the process ``seconds`` from now (exit 1) unless cancelled; a thread, so
    it fires even while the event loop is blocked or closed."""

    def overdue() -> None:
        log.error("stopping: not done after %.0f s; ending the process", seconds)
        end(1)

    timer = threading.Timer(seconds, overdue)
    timer.daemon = True
    timer.start()
    return timer


class StopDeadline:
    """The first SIGTERM or SIGINT asks for a graceful stop (``on_stop``) and arms a watchdog
    that ends the process ``seconds`` later (exit 1) if the stop has not; a second signal
    ends it at once (exit 128 + the signal), as an operator pressing Ctrl-C twice expects.
    Either way only un-acknowledged work is lost (see the module's docstring).

    The watchdog is a thread: it fires even while the event loop is blocked, or while
    ``asyncio.run`` waits for the tasks the stop left behind."""

    def __init__(
        self,
        on_stop: Callable[[], None],
        seconds: float = STOP_DEADLINE_SECONDS,
        end: Callable[[int], None] = exit_now,
    ) -> None:
        self._on_stop = on_stop
        self._seconds = seconds
        self._end = end
        self._timer: threading.Timer | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.signalled, signum)

    def signalled(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._timer is not None:
            log.warning("second %s while stopping: ending at once", name)
            self._end(128 + signum)
            return
        log.info("%s: stopping (at most %.0f s)", name, self._seconds)
        self._timer = watchdog(self._seconds, self._end)
        self._on_stop()

    def cancel(self) -> None:
        """The stop finished in time."""
        if self._timer is not None:
            self._timer.cancel()
