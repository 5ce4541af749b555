"""Serving the console over HTTP or HTTPS (uvicorn) inside a process's event loop: started by
``make run`` beside the services, or alone by ``casetrail console``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import grpc
import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from casetrail_platform import limits
from casetrail_platform.addresses import bracketed
from casetrail_platform.identity.keys import LOOPBACK
from casetrail_platform.shutdown import SERVER_STOP_GRACE_SECONDS
from services.console.app import create_app
from services.console.audit_client import AuditClient
from services.console.settings import (
    ConsoleSettings,
    development_sign_in_refusal,
    require_https_beyond_loopback,
)


class _BoundedRequests(H11Protocol):
    """uvicorn's HTTP/1.1 that closes a connection whose request has not arrived whole within
    ``limits.HTTP_REQUEST_SECONDS``. uvicorn times out only an idle connection after an answer,
    and not even that once a byte has come: a client sending nothing, or a byte now and then,
    held its connection for good, as many as it opened."""

    _request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_request()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._cancel_request_timer()  # the request has come whole

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:  # kept alive, the next request not yet come
            self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def _await_request(self) -> None:
        self._cancel_request_timer()
        self._request_timer = self.loop.call_later(
            limits.HTTP_REQUEST_SECONDS, self._request_too_slow
        )

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_too_slow(self) -> None:
        self._request_timer = None
        if self.conn.their_state is h11.IDLE or self.conn.their_state is h11.SEND_BODY:
            self.transport.close()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The hosting process owns SIGINT/SIGTERM and stops the console itself.
        yield


@dataclass
class RunningConsole:
    url: str
    port: int
    _server: _Server
    _task: asyncio.Task[None]

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._task


async def start_console(
    settings: ConsoleSettings,
    host: str,
    port: int,
    audit_client: Callable[[grpc.aio.Channel], AuditClient] = AuditClient,
) -> RunningConsole:
    """Serve the console on ``host:port`` (0: a free port) once it is ready to answer, over
    HTTPS with ``settings.https``; ``ValueError`` for the development sign-in on a host other
    than loopback, ``PlaintextRefused`` (a ``ValueError``) for plain HTTP there unless
    ``settings.plaintext_allowed``. Over HTTPS or beyond loopback the session cookie is always
    ``Secure``."""
    refusal = development_sign_in_refusal(host) if settings.development_signer else None
    if refusal is not None:
        raise ValueError(refusal)
    https = settings.https
    require_https_beyond_loopback(host, https, plaintext_allowed=settings.plaintext_allowed)
    if host not in LOOPBACK or https is not None:
        # Reached over the network, the session cookie must never travel in clear: browsers
        # then keep it only over HTTPS (ours, or a proxy's or ingress's in front).
        settings = replace(settings, secure_cookies=True)
    # The services' TLS, as the caseload views take it; made before the port is taken.
    context = None if https is None else https.ssl_context()
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((host, port))
    bound = listening.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings, audit_client=audit_client),
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ssl_context_factory=None if context is None else (lambda _config, _default: context),
        # Answers under way (an export streaming) get the gRPC servers' grace, then are
        # cancelled: uvicorn would otherwise wait for them for good.
        timeout_graceful_shutdown=int(SERVER_STOP_GRACE_SECONDS),
        http=_BoundedRequests,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[listening]))
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("the console stopped while starting")
        await asyncio.sleep(0.01)
    shown_host = bracketed(host)
    scheme = "http" if https is None else "https"
    return RunningConsole(f"{scheme}://{shown_host}:{bound}", bound, server, task)
