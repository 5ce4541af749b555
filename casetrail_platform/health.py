"""Health of a service's storage: ``casetrail.<service>.database`` and the service itself.

While the database cannot be reached (a restart, a fail-over), every command and query of the
service is answered ``UNAVAILABLE``, so the service reports NOT_SERVING as a whole (its gRPC
service names and the server's ``""`` entry) besides the ``database`` entry: load balancers
and readiness probes send traffic elsewhere. Both go back to SERVING at the first probe that
reaches the database again; nothing needs restarting.

``LIVENESS_SERVICE`` is the one entry no dependency touches: SERVING from the moment the server
exists until it shuts down. grpc.aio answers health checks on the process's event loop, so an
answer means the process is alive and its loop responsive; that is all a liveness probe may
ask. Were it to follow the database too, a fail-over would make kubelet restart every replica
at once, for an outage a restart cannot cure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from grpc_health.v1 import health, health_pb2

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.bus.errors import is_outage
from casetrail_platform.identity.keys import IssuerKeys
from casetrail_platform.store.pg_connections import CONNECT_TIMEOUT_SECONDS

log = logging.getLogger(__name__)


def serving_status(healthy: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    """A health entry's status for ``healthy``."""
    return (
        health_pb2.HealthCheckResponse.SERVING
        if healthy
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )


LIVENESS_SERVICE = "casetrail.liveness"
"""The health entry of liveness probes (the chart's livenessProbe ``grpc.service``)."""

Probe = Callable[[], Awaitable[object]]
"""A cheap read that raises when the storage is away."""

STORAGE_PROBE_SECONDS = 1.0


async def storage_reachable(probes: Iterable[Probe]) -> str | None:
    """``None`` if every probe answers, else what went wrong (for the log)."""
    for probe in probes:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS + 1):
                await probe()
        except TimeoutError:
            return "no answer within the connect timeout"
        except Exception as error:
            if is_outage(error):
                # A connection's failure names hosts and states, never stored data.
                return f"{type(error).__name__}: {error}"
            log.error("storage probe failed: %s", failure_text(error))
            return failure_text(error)
    return None


async def watch_storage(
    probes: list[Probe],
    health_servicer: health.aio.HealthServicer,
    database_entry: str,
    service_names: Iterable[str],
    stop: asyncio.Event,
    *,
    every: float = STORAGE_PROBE_SECONDS,
) -> None:
    """Probe the storage every ``every`` seconds and report it (see the module's text)."""
    names = [database_entry, *service_names, ""]
    reported: bool | None = None
    while not stop.is_set():
        problem = await storage_reachable(probes)
        healthy = problem is None
        if healthy != reported:
            if healthy:
                if reported is not None:
                    log.warning("%s: database reachable again; serving", database_entry)
            else:
                log.warning("%s: database unavailable (%s); not serving", database_entry, problem)
            status = serving_status(healthy)
            for name in names:
                await health_servicer.set(name, status)
            reported = healthy
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


ISSUER_KEYS_PROBE_SECONDS = 30.0


async def watch_issuer_keys(
    keys: IssuerKeys,
    health_servicer: health.aio.HealthServicer,
    health_name: str,
    stop: asyncio.Event,
    *,
    every: float = ISSUER_KEYS_PROBE_SECONDS,
) -> None:
    """Report the issuer's signing keys as their own entry (``casetrail.<service>.issuer``):
    NOT_SERVING while they are older than their maximum age and no refresh succeeded (every
    token is refused ``ISSUER_KEYS_EXPIRED`` then). The service itself stays SERVING: every
    replica shares the issuer, so taking them all out of their Service would only turn a
    refusal that names its reason into a connection error. Each look also starts the keys'
    refresh when they are stale, so a quiet service finds out without waiting for a call."""
    reported: bool | None = None
    while not stop.is_set():
        keys.refresh_if_stale()
        healthy = not keys.expired
        if healthy != reported:
            if not healthy:
                log.error(
                    "%s: the issuer's signing keys are older than %g s and could not be"
                    " refreshed; every token is refused until they are",
                    health_name,
                    keys.keys_max_age,
                )
            elif reported is not None:
                log.warning("%s: the issuer's signing keys are fresh again", health_name)
            status = serving_status(healthy)
            await health_servicer.set(health_name, status)
            reported = healthy
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
