"""Starting a distributed service process whose PostgreSQL or Kafka is not reachable yet.

Instead of exiting with a stack trace (and crash-looping under a supervisor), the process
retries with capped backoff, logs one line per attempt naming what it could not reach, answers
NOT_SERVING on its plaintext health port meanwhile (when it has one), and stops cleanly on
SIGTERM while waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2

from casetrail_platform.addresses import BindError
from casetrail_platform.bus.kafka_clients import transient
from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.grpc_platform.server import create_health_server
from casetrail_platform.shutdown import CANCEL_SECONDS, within

log = logging.getLogger("casetrail.startup")

T = TypeVar("T")

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 10.0


def unreachable(error: BaseException, postgres: str, kafka: str) -> str | None:
    """What ``error`` says is out of reach (``postgres``/``kafka``: how to name each server),
    or ``None`` when it is not an outage (a configuration error: start-up fails for good).
    An outage as the bus's members take one (``transient``): a broker just restarted and still
    fenced, refusing a topic's creation, is waited for, not taken for a wrong setting."""
    if not isinstance(error, Exception) or not transient(error):
        return None
    module = type(error).__module__
    if module.startswith("psycopg") or isinstance(error, StorageUnavailableError):
        return postgres
    if module.startswith("aiokafka") or module.startswith("kafka"):
        return kafka
    return f"{postgres} or {kafka}"


def postgres_name(dsn: str) -> str:
    """``PostgreSQL at host:port``: the DSN's address, never its credentials."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # an unparsable DSN fails later with psycopg's own message
        return "PostgreSQL"
    return f"PostgreSQL at {parts.get('host', 'localhost')}:{parts.get('port', 5432)}"


def reason(error: BaseException) -> str:
    """The first line of the error (psycopg adds hints on further lines)."""
    name = type(error).__name__
    text = str(error).strip().splitlines()
    if not text:
        return name
    return text[0] if text[0].startswith(name) else f"{name}: {text[0]}"


async def start_when_reachable(
    attempt: Callable[[], Awaitable[T]],
    describe: Callable[[BaseException], str | None],
    stop: asyncio.Event,
    *,
    what: str,
    health_address: str | None = None,
    first_retry: float = FIRST_RETRY_SECONDS,
    max_retry: float = MAX_RETRY_SECONDS,
) -> T | None:
    """``attempt()`` until it succeeds (its result) or ``stop`` is set (``None``). Failures that
    ``describe`` names (the unreachable server) are retried with backoff; others are raised.
    While retrying, ``health_address`` answers NOT_SERVING."""
    waiting_health: grpc.aio.Server | None = None
    delay = first_retry
    number = 0
    try:
        while not stop.is_set():
            number += 1
            if waiting_health is not None:
                # The attempt binds the service's own health server on this port, and a port
                # is one server's alone (no SO_REUSEPORT: a second process took half the
                # connections): the stand-in gives it up first. A probe meanwhile is refused,
                # to a startup or readiness probe as good as NOT_SERVING.
                await waiting_health.stop(None)
                waiting_health = None
            task = asyncio.ensure_future(attempt())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not task.done():  # SIGTERM while connecting: give up the attempt
                # Bounded as the stop's other cancelled work is: a psycopg connect cancelled
                # on a frozen server can take 10 s to end; past the bound it is left behind.
                task.cancel()
                await within(f"{what}: start-up attempt", task, CANCEL_SECONDS)
                return None
            error = task.exception()
            if error is None:
                if number > 1:
                    log.info("%s: started after %d attempts", what, number)
                return task.result()
            missing = describe(error)
            if missing is None:
                raise error
            log.warning(
                "%s: %s unreachable (%s); not serving, attempt %d, next in %.0f s",
                what,
                missing,
                reason(error),
                number,
                delay,
            )
            if health_address is not None:
                waiting_health = await _serve_not_serving(health_address)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, max_retry)
        return None
    finally:
        if waiting_health is not None:
            await waiting_health.stop(None)


async def _serve_not_serving(address: str) -> grpc.aio.Server | None:
    """The plaintext health port, answering NOT_SERVING until the service takes it over
    (``None``: the port is taken, by what is left of the failed attempt or another process;
    the next attempt says which)."""
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        server, port = await create_health_server(address, servicer)
    except BindError as error:
        log.warning("not serving yet; %s", error)
        return None
    await server.start()
    log.info("not serving yet; health probes answered on port %d", port)
    return server
