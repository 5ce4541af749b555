"""Building and running a casetrail gRPC server: health, reflection, refusals, graceful stop."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from events.grpc_platform.errors import REFUSALS, abort_with
from events.grpc_platform.fingerprint import serving
from events.identity.grpc_auth import BearerAuthentication
from events.identity.tls import ServerTls
from events.identity.verifier import TokenVerifier

log = logging.getLogger(__name__)

Registration = Callable[[grpc.aio.Server], None]
"""Adds one servicer to a server, e.g. ``lambda s: add_IntakeServicer_to_server(servicer, s)``."""

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
"""The ``context`` parameter of every servicer method."""


async def create_server(
    address: str,
    registrations: Iterable[Registration],
    service_names: Iterable[str],
    *,
    verifier: TokenVerifier,
    tls: ServerTls | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A started-able server bound to ``address`` (use port 0 in tests) and the port it got.

    Every call but health and reflection needs a bearer token ``verifier`` accepts (see
    ``events.identity.grpc_auth``); with ``tls`` the port speaks TLS (mutual TLS when it names
    a client CA). Every server answers grpc.health.v1 (SERVING for each service) and server
    reflection.
    """
    server = grpc.aio.server(interceptors=[BearerAuthentication(verifier)])
    for register in registrations:
        register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    for name in [*names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = (
        server.add_secure_port(address, tls.credentials())
        if tls is not None
        else server.add_insecure_port(address)
    )
    if port == 0:
        raise OSError(f"could not bind gRPC server to {address}")
    return server, port, health_servicer


async def serve_until_signalled(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    grace_seconds: float = 10.0,
) -> None:
    """Serve until SIGTERM or SIGINT, then report NOT_SERVING and finish in-flight calls."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_seconds)


Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])
StreamingMethod = TypeVar("StreamingMethod", bound=Callable[..., AsyncIterator[Any]])


def refusals_as_status(method: Method) -> Method:
    """Decorate a unary servicer method so that command refusals become statuses with details,
    and the commands it reads know the request's fingerprint (``grpc_platform.fingerprint``)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> Any:
        try:
            with serving(request):
                return await method(self, request, context)
        except REFUSALS as error:
            await abort_with(context, error)

    return wrapper  # type: ignore[return-value]


def streamed_refusals_as_status(method: StreamingMethod) -> StreamingMethod:
    """``refusals_as_status`` for server-streaming methods (async generators): a refusal ends
    the stream with its status, whether it comes before the first message or later."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            async for message in method(self, request, context):
                yield message
        except REFUSALS as error:
            await abort_with(context, error)

    return wrapper  # type: ignore[return-value]
