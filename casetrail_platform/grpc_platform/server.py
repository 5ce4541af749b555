"""Building and running a casetrail gRPC server: health, reflection, refusals, graceful stop."""

from __future__ import annotations

import asyncio
import functools
import inspect
import ipaddress
import logging
import signal
import socket
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from casetrail_platform.addresses import BindError as BindError
from casetrail_platform.addresses import host_port, unbracketed
from casetrail_platform.commands import InvalidCommand
from casetrail_platform.grpc_platform.capacity import Capacity, CapacityInterceptor
from casetrail_platform.grpc_platform.edge import request_problems
from casetrail_platform.grpc_platform.errors import REFUSALS, abort_internal, abort_with
from casetrail_platform.grpc_platform.fingerprint import serving
from casetrail_platform.grpc_platform.wire import invalid_utf8_field
from casetrail_platform.health import LIVENESS_SERVICE
from casetrail_platform.identity.grpc_auth import BearerAuthentication
from casetrail_platform.identity.keys import LOOPBACK
from casetrail_platform.identity.tls import ALLOW_PLAINTEXT as ALLOW_PLAINTEXT
from casetrail_platform.identity.tls import PlaintextRefused as PlaintextRefused
from casetrail_platform.identity.tls import ServerTls
from casetrail_platform.identity.tls import allow_plaintext as allow_plaintext
from casetrail_platform.identity.verifier import TokenVerifier
from casetrail_platform.telemetry.grpc_server import TelemetryInterceptor
from events.errors import FieldProblem

log = logging.getLogger(__name__)

Registration = Callable[[grpc.aio.Server], None]
"""Adds one servicer to a server,
e.g. ``lambda s: add_IntakeServiceServicer_to_server(servicer, s)``."""

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
"""The ``context`` parameter of every servicer method."""


UNREQUESTED_CALL_OPTION = "grpc.server_max_unrequested_time_in_server"
UNREQUESTED_CALL_SECONDS = 300
"""How long a call may wait in gRPC core for the server's event loop to take it. Core's default,
30 s, cancels the call with a bare ``CANCELLED`` that no code of ours sees (100 exports at once
on a busy machine); longer, the caller's own deadline decides, and once taken a call over the
server's capacity is refused ``RESOURCE_EXHAUSTED`` at once (``capacity``)."""

EXCLUSIVE_PORT = ("grpc.so_reuseport", 0)
"""Every server's option: gRPC sets SO_REUSEPORT on Linux by default, so a second casetrail
process bound the port of a running one, both reported serving and the kernel split the calls
(acknowledged writes) between their two stores; without it the taken port is refused
(``BindError``)."""


def require_tls_beyond_loopback(
    host: str,
    tls: ServerTls | None,
    *,
    plaintext_allowed: bool,
    listener: str = "gRPC",
    setting: str = ALLOW_PLAINTEXT,
    terminated_by: str = "a service mesh's sidecar terminates mutual TLS in front of the service",
    certificate_from: str = "--tls-cert/--tls-key, CASETRAIL_TLS_CERT/_KEY",
) -> None:
    """``PlaintextRefused`` when ``host`` (``[::]`` as well as ``::``) is not a loopback one,
    ``tls`` is ``None`` and plaintext was not allowed: every call carries a bearer token, and
    in plain text anyone on the way could read it and act as its owner until it expires.
    ``listener``, ``setting``, ``terminated_by`` and ``certificate_from`` name what listens,
    the setting that allows it, who would then serve TLS in front and where that listener
    takes its certificate (the console and the caseload views pass their own: neither takes
    ``--tls-cert`` of its own).
    """
    if tls is None and not plaintext_allowed and host.strip("[]").lower() not in LOOPBACK:
        raise PlaintextRefused(
            f"{listener} on {host} without TLS would carry bearer tokens in plain text beyond"
            f" this machine; give a certificate ({certificate_from}),"
            f" listen on 127.0.0.1, or set {setting}=1 when {terminated_by}"
        )


async def create_server(
    address: str,
    registrations: Iterable[Registration],
    service_names: Iterable[str],
    *,
    verifier: TokenVerifier,
    tls: ServerTls | None = None,
    capacity: Capacity | None = None,
    plaintext_allowed: bool = False,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A started-able server bound to ``address`` (use port 0 in tests) and the port it got.

    Every call but health and reflection needs a bearer token ``verifier`` accepts (see
    ``casetrail_platform.identity.grpc_auth``); with ``tls`` the port speaks TLS (mutual TLS when it
    names a client CA). Every server answers grpc.health.v1 (SERVING for each service, ``""``
    and ``LIVENESS_SERVICE``) and server reflection. Every casetrail method sits behind
    ``EdgeInterceptor``, inside authentication (an unauthenticated caller learns nothing about
    its request). Outermost, every call is
    counted, timed and traced (``casetrail_platform.telemetry.grpc_server``); then the calls
    over ``capacity`` (default ``Capacity()``) are refused ``RESOURCE_EXHAUSTED``, before any
    token is verified (``casetrail_platform.grpc_platform.capacity``). Without ``tls`` it
    listens on loopback only, unless ``plaintext_allowed`` (``require_tls_beyond_loopback``).
    """
    require_tls_beyond_loopback(
        address.rpartition(":")[0], tls, plaintext_allowed=plaintext_allowed
    )
    server = grpc.aio.server(
        options=[(UNREQUESTED_CALL_OPTION, UNREQUESTED_CALL_SECONDS), EXCLUSIVE_PORT],
        interceptors=[
            TelemetryInterceptor(),
            CapacityInterceptor(capacity or Capacity()),
            BearerAuthentication(verifier),
            EdgeInterceptor(),
        ],
    )
    for register in registrations:
        register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    for name in [*names, "", LIVENESS_SERVICE]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    credentials = tls.credentials() if tls is not None else None
    port = await bind_each_address(server, address, credentials, "gRPC server")
    return server, port, health_servicer


async def create_health_server(
    address: str, health_servicer: health.aio.HealthServicer
) -> tuple[grpc.aio.Server, int]:
    """A plaintext server answering only grpc.health.v1 from ``health_servicer``, bound to
    ``address``: kubelet's gRPC probes cannot speak TLS, so a TLS service also answers them
    here. It discloses nothing but the health statuses, and needs no token."""
    server = grpc.aio.server(options=[EXCLUSIVE_PORT])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = await bind_each_address(server, address, None, "the health server")
    return server, port


async def bind_each_address(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    what: str,
) -> int:
    """Add ``address`` to ``server``, every address its host name resolves to as a port of its
    own, and return the port it got (``:0``: the first address's, the others then on it);
    ``BindError`` naming ``what`` when any of them cannot be bound. gRPC binds a name's
    addresses itself but counts the port added when one of them binds, only warning of the
    others: ``--host localhost`` bound [::1]:7303 beside another process holding
    127.0.0.1:7303, and both served, each with its own store."""
    port = 0
    for listening in await _listening_addresses(address, what):
        wanted = listening if port == 0 else host_port(listening.rpartition(":")[0], port)
        try:
            port = (
                server.add_secure_port(wanted, credentials)
                if credentials is not None
                else server.add_insecure_port(wanted)
            )
        except RuntimeError:  # how grpcio 1.5x says it (older ones answered port 0)
            port = 0
        if port == 0:
            named = "" if wanted == address else f" ({wanted})"
            raise BindError(f"could not bind {what} to {address}{named}")
    return port


async def _listening_addresses(address: str, what: str) -> list[str]:
    """``address`` as it is when its host is an address (``[::]``, ``0.0.0.0``, ``[::1]``) or
    none is given, else one ``host:port`` per address the name resolves to that this machine
    has: a container without IPv6 resolves ``localhost`` to ``::1`` too, which gRPC skipped."""
    host, colon, port = address.rpartition(":")
    name = unbracketed(host)
    if not colon or not name or not port.isdigit() or _is_ip_address(name):
        return [address]
    try:
        resolved = await asyncio.get_running_loop().getaddrinfo(
            name, int(port), type=socket.SOCK_STREAM
        )
    except socket.gaierror as error:
        raise BindError(f"could not bind {what} to {address}: {error.strerror}") from None
    found = [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in resolved]
    present = [ip for family, ip in found if _assignable(family, ip)] or [ip for _, ip in found]
    return [host_port(ip, int(port)) for ip in dict.fromkeys(present)]


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _assignable(family: int, host: str) -> bool:
    """Whether a socket can be bound to ``host`` here (on a free port: taken ones are told by
    gRPC's bind)."""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True


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


_OWN_METHODS = "/casetrail."


class EdgeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """What every casetrail method gets before and after its handler.

    Before: a request that is not valid protobuf (invalid UTF-8 in a string, say) or breaks the
    bounds every request keeps (``casetrail_platform.grpc_platform.edge``) is refused
    INVALID_ARGUMENT naming the field; gRPC alone would answer UNKNOWN with the parser's exception
    text. After: an exception no handler turned into a status is logged with a reference (its type
    and where it was raised, never its message, which may quote the request) and answered
    INTERNAL with that reference only.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(_OWN_METHODS):
            return handler
        wrapped = self._handlers.get(method)
        if wrapped is None:
            wrapped = self._handlers[method] = _guarded(method, handler)
        return wrapped


class _Undecodable:
    """What a request that protobuf could not parse is handed to the handler as."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _guarded(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary(request: Any, context: Context) -> Any:
            await _refuse_bad_request(method, request, context)
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _answer_internal(method, error, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        streaming = handler.unary_stream

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            await _refuse_bad_request(method, request, context)
            try:
                async for message in streaming(request, context):
                    yield message
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _answer_internal(method, error, context)

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    return handler


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def tolerant(data: bytes) -> Any:
        assert deserialize is not None
        try:
            return deserialize(data)
        except DecodeError:
            return _Undecodable(data)

    return tolerant


async def _refuse_bad_request(method: str, request: Any, context: Context) -> None:
    if isinstance(request, _Undecodable):
        field = invalid_utf8_field(_request_type(method), request.data)
        if field is None:
            problem = FieldProblem("request", "is not a valid protobuf message of this method")
        else:
            problem = FieldProblem(field, "is not valid UTF-8")
        await abort_with(context, InvalidCommand([problem]))
    elif isinstance(request, Message):
        problems = request_problems(request)
        if problems:
            await abort_with(context, InvalidCommand(problems))


@functools.cache
def _request_type(method: str) -> Descriptor:
    service, name = method.lstrip("/").rsplit("/", 1)
    found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    request_type: Descriptor = found.input_type
    return request_type


async def _answer_internal(method: str, error: Exception, context: Context) -> None:
    reference = uuid.uuid4().hex[:12]
    # File, line and function only: a source line may spell out a value from the request.
    where = "\n".join(
        f"  {frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(error.__traceback__, limit=-4)
    )
    log.error(
        "%s failed with an unexpected %s (reference %s), answered INTERNAL; raised at:\n%s",
        method,
        type(error).__name__,
        reference,
        where,
    )
    await abort_internal(context, reference)
