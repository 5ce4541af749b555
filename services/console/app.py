"""The console as an ASGI application: routes, security headers, and the pages shown for bad
input, refusals and faults (never a stack trace)."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from casetrail_platform.identity.keys import LOOPBACK
from casetrail_platform.identity.tls import channel
from cli.rpc import UnaryDeadline
from services.console import pages, views
from services.console.audit_client import AuditClient, AuditRefused
from services.console.sessions import SessionStore
from services.console.settings import ConsoleSettings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


MAX_BODY_BYTES = 64 * 1024
"""The console's forms are a few short fields: a larger body is refused before it is read
(parsing megabytes of ``&`` before the session check cost seconds of CPU per request)."""


class BodyLimit:
    """Refuses a request body over ``MAX_BODY_BYTES`` with 413: at once when its
    Content-Length says so, else as soon as the bytes received pass it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            await _too_large(send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise HTTPException(413, "Request body too large")
            return message

        await self.app(scope, bounded, send)


async def _too_large(send: Send) -> None:
    body = b"Request body too large"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class LoopbackHosts:
    """Answers only requests addressed to a loopback name (``Host``: 127.0.0.1, localhost or
    [::1], any port). Served on loopback is not enough for the development sign-in, which mints
    a token for any name: a web page whose own host name is made to resolve to 127.0.0.1 (DNS
    rebinding) is then same-origin with the console for its visitor's browser, and could sign
    in and read its answers; its requests carry its own host name, refused here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _host_name(scope) in LOOPBACK:
            await self.app(scope, receive, send)
            return
        body = b"Unknown host: the console answers only at 127.0.0.1, localhost or [::1]"
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _host_name(scope: Scope) -> str:
    """The name the request's ``Host`` header gives, without port or IPv6 brackets."""
    raw: bytes = dict(scope.get("headers", [])).get(b"host", b"")
    host = raw.decode("latin-1").lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.partition(":")[0]


STRICT_TRANSPORT = (b"strict-transport-security", b"max-age=31536000")
"""Behind HTTPS (secure cookies): a browser that has seen the console never asks for it over
plain HTTP again (browsers ignore the header on an answer over HTTP)."""


class Faults:
    """A fault of ours: answered with a page showing only a reference, logged with the
    reference and where it was raised, never its message (it may quote a request, a token or
    case data), and not raised further. An ``Exception`` handler would not do: Starlette
    raises the exception again once its handler has answered, and uvicorn logged it whole.
    An answer already under way (an export streaming) is cut short: the client sees it end
    without its last chunk."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:
            reference = uuid.uuid4().hex[:12]
            frames = traceback.extract_tb(error.__traceback__)
            where = " <- ".join(
                f"{frame.filename}:{frame.lineno}" for frame in reversed(frames[-5:])
            )
            log.error("console fault %s: %s at %s", reference, type(error).__name__, where)
            if not started:
                await _fault_page(Request(scope), reference)(scope, receive, send)


def _fault_page(request: Request, reference: str) -> Response:
    try:
        return views.problem_page(
            request,
            views.Problem(
                500, "Something went wrong", f"The console could not answer. Reference {reference}."
            ),
        )
    except Exception:  # the page itself failed: a bare answer, still without details
        return Response(f"Internal error, reference {reference}", 500, media_type="text/plain")


class SecurityHeaders:
    """Adds the console's headers to every response (pages, files and errors alike);
    ``https``: Strict-Transport-Security too."""

    def __init__(self, app: ASGIApp, https: bool = False) -> None:
        self.app = app
        self.headers = SECURITY_HEADERS + ((STRICT_TRANSPORT,) if https else ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in self.headers}
                kept = [(n, v) for n, v in message.get("headers", []) if n not in names]
                message["headers"] = kept + list(self.headers)
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    settings: ConsoleSettings,
    sessions: SessionStore | None = None,
    audit_client: Callable[[grpc.aio.Channel], AuditClient] = AuditClient,
) -> Starlette:
    """``audit_client`` makes the console's audit client from the channel (tests pass a
    subclass of ``AuditClient`` that alters audit's answers)."""
    console = views.Console(
        settings,
        sessions or SessionStore(lifetime=settings.session_seconds, idle=settings.idle_seconds),
        Jinja2Templates(directory=HERE / "templates"),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Every unary call with a deadline: a stalled audit must not hold a page (and its
        # connection) open for good.
        opened = channel(
            settings.audit_address,
            settings.tls,
            [UnaryDeadline(settings.audit_seconds)],
            plaintext_allowed=settings.audit_plaintext_allowed,
        )
        console.audit = audit_client(opened)
        try:
            yield
        finally:
            console.audit = None
            await opened.close()

    app = Starlette(
        routes=[
            Route("/", views.home),
            Route("/find", views.find, methods=["POST"]),
            Route("/find-client", views.find_client, methods=["POST"]),
            Route("/signin", views.signin_page, methods=["GET"]),
            Route("/signin", views.signin, methods=["POST"]),
            Route("/signout", views.signout, methods=["POST"]),
            Route("/cases/{case_id}", views.timeline),
            Route("/cases/{case_id}/go", views.go, methods=["POST"]),
            Route("/cases/{case_id}/state", views.state),
            Route("/cases/{case_id}/compare", views.compare),
            Route("/cases/{case_id}/access", views.access),
            Route("/cases/{case_id}/disclosures", views.disclosures, methods=["POST"]),
            Route("/cases/{case_id}/export", views.export),
            Route("/ledger/proofs", views.ledger_proofs),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders, https=settings.secure_cookies),
            Middleware(Faults),
            # The development sign-in is served on loopback only: it answers loopback names only.
            *([Middleware(LoopbackHosts)] if settings.development_signer is not None else []),
            Middleware(BodyLimit),
        ],
        exception_handlers={
            views.SignInNeeded: _sign_in_needed,
            views.Problem: _problem,
            pages.BadInput: _bad_input,
            AuditRefused: _refused,
            HTTPException: _http_problem,
        },
        lifespan=lifespan,
    )
    app.state.console = console
    return app


async def _sign_in_needed(request: Request, error: Exception) -> Response:
    assert isinstance(error, views.SignInNeeded)
    return RedirectResponse("/signin?ended=1" if error.ended else "/signin", status_code=303)


async def _problem(request: Request, error: Exception) -> Response:
    assert isinstance(error, views.Problem)
    return views.problem_page(request, error)


async def _bad_input(request: Request, error: Exception) -> Response:
    assert isinstance(error, pages.BadInput)
    return views.problem_page(
        request,
        views.Problem(400, "Check what you entered", "Please correct:", error.problems),
    )


async def _refused(request: Request, error: Exception) -> Response:
    assert isinstance(error, AuditRefused)
    return views.refusal_page(request, error)


async def _http_problem(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    titles = {404: "Page not found", 405: "Not allowed here"}
    # Starlette's reason otherwise (a form's fields or parts beyond our limits, multipart it
    # cannot read, a body too large): fixed sentences and our limits, never the request's data.
    reason = "This console has no such page." if error.status_code == 404 else error.detail
    return views.problem_page(
        request,
        views.Problem(error.status_code, titles.get(error.status_code, "Request refused"), reason),
    )
