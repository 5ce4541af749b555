"""The console's pages. Each page that shows case data makes one or more audit calls with the
signed-in user's token, so audit records the page as an access before answering it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import urlencode, urlsplit

import grpc
import jwt
from google.rpc import error_details_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.templating import Jinja2Templates

from casetrail_platform.identity.errors import InvalidCredential, IssuerUnavailable
from events.catalog.access import AccessPurpose
from events.catalog.base import Role
from services.console import integrity, pages
from services.console.audit_client import AuditClient, AuditRefused, Caller
from services.console.sessions import (
    ANONYMOUS_COOKIE,
    COOKIE,
    Session,
    SessionStore,
    csrf_matches,
)
from services.console.settings import ConsoleSettings

log = logging.getLogger(__name__)

ROLES_ALLOWED = (Role.AUDITOR, Role.SUPERVISOR)
PURPOSES = (
    AccessPurpose.CONFIDENTIALITY_REVIEW,
    AccessPurpose.SUPERVISION,
    AccessPurpose.LEGAL_OBLIGATION,
    AccessPurpose.CLIENT_REQUEST,
)
VIEW_FIELDS = {
    "timeline": ("type", "actor", "from", "to", "clock"),
    "state": ("at", "clock"),
    "compare": ("first", "second", "clock"),
}


class SignInNeeded(Exception):
    def __init__(self, ended: bool) -> None:
        super().__init__("sign in")
        self.ended = ended


class Problem(Exception):
    """A page explaining why the request could not be answered (nothing else disclosed)."""

    def __init__(
        self,
        status: int,
        title: str,
        message: str,
        problems: Mapping[str, str] | None = None,
        continue_to: str | None = None,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.message = message
        self.problems = dict(problems or {})
        self.continue_to = continue_to
        """A path of the console the reader may open from this page, by their own click."""


@dataclass
class Console:
    settings: ConsoleSettings
    sessions: SessionStore
    templates: Jinja2Templates
    audit: AuditClient | None = None

    def client(self) -> AuditClient:
        assert self.audit is not None, "the console's lifespan opens the audit channel"
        return self.audit


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def render(
    request: Request, template: str, session: Session | None, status: int = 200, **values: Any
) -> Response:
    """``session`` None: a visitor without one, on a page with no form (a problem page); only
    the sign-in page starts one for them, its form's CSRF token."""
    console = console_of(request)
    response = console.templates.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "csrf": "" if session is None else session.csrf,
            "shown": pages.shown,
            **values,
        },
        status_code=status,
    )
    if session is not None:
        set_cookie(request, response, session)
    return response


def set_cookie(request: Request, response: Response, session: Session) -> None:
    console = console_of(request)
    response.set_cookie(
        COOKIE if session.signed_in else ANONYMOUS_COOKIE,
        console.sessions.cookie_value(session),
        max_age=max(1, int(session.expires_at - console.sessions.now())),
        path="/",
        secure=console.settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def delete_cookie(request: Request, response: Response, name: str) -> None:
    # With the flags it was set with: deleted without them, it was sent SameSite=lax, neither
    # HttpOnly nor Secure.
    response.delete_cookie(
        name,
        path="/",
        secure=console_of(request).settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def current(request: Request) -> Session | None:
    """The signed-in session the request's cookie names, else its session before sign-in."""
    sessions = console_of(request).sessions
    signed = sessions.find(request.cookies.get(COOKIE))
    if signed is not None and signed.signed_in:
        return signed
    return sessions.find_anonymous(request.cookies.get(ANONYMOUS_COOKIE))


def signed_in(request: Request) -> Session:
    session = current(request)
    if session is None or not session.signed_in:
        raise SignInNeeded(ended=COOKIE in request.cookies)
    return session


async def checked_form(request: Request) -> tuple[Session | None, FormData]:
    form = await request.form(max_files=0, max_fields=20, max_part_size=16 * 1024)
    session = current(request)
    if session is None or not csrf_matches(session, form.get("csrf")):
        raise Problem(
            403,
            "Form refused",
            "This form was not sent from this console's own page, or your session has "
            "ended. Open the page again and resend it.",
        )
    return session, form


def caller(session: Session) -> Caller:
    return Caller(session.token, session.purpose)


OWN_SITES = ("same-origin", "none")
"""``Sec-Fetch-Site`` of a request the auditor made: from the console's own page, or typed in,
bookmarked or opened from another application."""


PAGE = ("document",)
DOWNLOAD = ("document", "empty")
"""An ``<a download>`` link's request is a navigation Chromium sends as ``Sec-Fetch-Dest:
empty``; typed in, the same address is a ``document``."""
FETCHED = ("empty",)


def opened_here(request: Request, destinations: tuple[str, ...] = PAGE) -> None:
    """``Problem`` 403 unless the browser says the request comes from the console's own page (or
    the auditor's own action) and is for one of ``destinations``: a page read as a page
    (``document``), the export as a download, the proofs as the timeline's fetch (``empty``).
    Each case page makes audit record an access under the signed-in auditor, and its
    ``SameSite=Strict`` cookie is sent by every page of the same site, another port or a sibling
    host of the agency's domain among them: such a page's ``<img src=".../export">`` wrote
    access records in the auditor's name.

    Browsers since 2023 send Fetch Metadata (``Sec-Fetch-*``) to HTTPS and loopback, which is
    everywhere the console is served. Without it (curl, an older browser) a request passes
    unless it carries an ``Origin`` or ``Referer`` of another host: a request of neither kind
    is no subresource of a page of ours to worry about, or comes from a browser that cannot
    tell us (the console sends no ``Referer`` itself, so a page elsewhere can withhold its own
    too)."""
    headers = request.headers
    site = headers.get("sec-fetch-site")
    if site is not None:
        own = site in OWN_SITES and headers.get("sec-fetch-dest") in destinations
    else:
        own = all(
            _same_host(request, headers[name]) for name in ("origin", "referer") if name in headers
        )
    if not own:
        # A link followed from elsewhere (a ticket, an e-mail) is a page asked for as a page:
        # the reader's own click on this page then opens it (same-origin), which no page
        # elsewhere can do for them (the console is never framed).
        navigated = "document" in destinations and headers.get("sec-fetch-dest") == "document"
        raise Problem(
            403,
            "Open this page from the console",
            "This request did not come from the console's own pages, so nothing was read or"
            " recorded in your name. Open the case from the console, or type its address.",
            continue_to=_path_asked(request) if navigated else None,
        )


def _path_asked(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _same_host(request: Request, address: str) -> bool:
    return urlsplit(address).netloc.lower() == request.headers.get("host", "").lower()


# --- sign-in -------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    session = signed_in(request)
    return render(request, "find.html", session)


async def find(request: Request) -> Response:
    session, form = await checked_form(request)
    if session is None or not session.signed_in:
        raise SignInNeeded(ended=True)
    case_id = pages.case_id(str(form.get("case_id", "")).strip())
    return RedirectResponse(f"/cases/{case_id}", status_code=303)


async def find_client(request: Request) -> Response:
    """The cases of a client, answered on the page itself: the client id never goes into an
    address."""
    session, form = await checked_form(request)
    if session is None or not session.signed_in:
        raise SignInNeeded(ended=True)
    client_id = pages.client_id(str(form.get("client_id", "")).strip())
    found = await console_of(request).client().cases_of_client(caller(session), client_id)
    return render(request, "find.html", session, client_id=client_id, client_cases=found)


async def signin_page(request: Request, notice: str = "", status: int = 200) -> Response:
    console = console_of(request)
    session = current(request) or console.sessions.start_anonymous()
    if notice == "" and request.query_params.get("ended"):
        notice = "Your session has ended. Sign in again."
    return render(
        request,
        "signin.html",
        session,
        status,
        notice=notice,
        development=console.settings.development_signer is not None,
        roles=ROLES_ALLOWED,
        purposes=PURPOSES,
    )


async def signin(request: Request) -> Response:
    console = console_of(request)
    session, form = await checked_form(request)
    purpose = str(form.get("purpose", ""))
    if purpose not in {p.value for p in PURPOSES}:
        return await signin_page(request, "Choose the purpose of your review.", 400)
    signer = console.settings.development_signer
    if form.get("method") == "development" and signer is not None:
        role = str(form.get("role", ""))
        if role not in {r.value for r in ROLES_ALLOWED}:
            return await signin_page(request, "Choose auditor or supervisor.", 400)
        token = signer.mint(
            str(form.get("user", "")).strip(),
            role,
            lifetime_seconds=console.settings.session_seconds,
        )
    else:
        token = str(form.get("token", "")).strip().removeprefix("Bearer ").strip()
    try:
        principal = await console.settings.verifier.verify(token)
    except InvalidCredential as refused:
        return await signin_page(request, f"Not signed in: {refused}.", 401)
    except IssuerUnavailable:
        return await signin_page(
            request, "Not signed in: the identity provider cannot be reached. Try again.", 503
        )
    if principal.certificate_thumbprint is not None:
        # The services take such a token only on a call that comes with its certificate
        # (cnf, RFC 8705); the browser presents none here, and the console would call audit
        # with it over its own certificate, so one bound to that worked for whoever pasted it.
        return await signin_page(
            request,
            "Not signed in: the token is bound to a client certificate (cnf), which the console"
            " cannot present for it. Use a token not bound to a certificate.",
            401,
        )
    if principal.role not in ROLES_ALLOWED:
        return await signin_page(
            request, "Not signed in: the console is for auditors and supervisors only.", 403
        )
    expires = float(jwt.decode(token, options={"verify_signature": False})["exp"])
    if expires <= console.sessions.now():
        # The verifier allows a little clock skew past exp; a session would end at exp, so
        # it began ended, and the next page said only that the session had ended.
        return await signin_page(request, "Not signed in: the token has expired.", 401)
    new = console.sessions.sign_in(session, principal, token, purpose, expires)
    response = RedirectResponse("/", status_code=303)
    set_cookie(request, response, new)
    delete_cookie(request, response, ANONYMOUS_COOKIE)
    return response


async def signout(request: Request) -> Response:
    session, _ = await checked_form(request)
    if session is not None:
        console_of(request).sessions.end(session)
    response = RedirectResponse("/signin", status_code=303)
    delete_cookie(request, response, COOKIE)
    return response


# --- case pages ------------------------------------------------------------------------------


async def go(request: Request) -> Response:
    """Every case form posts here (CSRF-checked), then the browser is sent to the page's
    address, which holds only the case id, the filters and the moments asked for."""
    session, form = await checked_form(request)
    if session is None or not session.signed_in:
        raise SignInNeeded(ended=True)
    case_id = pages.case_id(request.path_params["case_id"])
    view = str(form.get("view", ""))
    if view not in VIEW_FIELDS:
        raise Problem(400, "Unknown view", "This console has no such view of a case.")
    params = {name: str(form.get(name, "")).strip() for name in VIEW_FIELDS[view]}
    query = urlencode({name: value for name, value in params.items() if value})
    path = f"/cases/{case_id}" if view == "timeline" else f"/cases/{case_id}/{view}"
    return RedirectResponse(path + (f"?{query}" if query else ""), status_code=303)


async def timeline(request: Request) -> Response:
    opened_here(request)
    session = signed_in(request)
    case_id = pages.case_id(request.path_params["case_id"])
    params = request.query_params
    basis = pages.basis(params.get("clock"))
    chosen = pages.TimelineFilter.read(params)
    token = pages.page_token(params.get("page"))
    page = (
        await console_of(request)
        .client()
        .timeline(
            caller(session), case_id, basis, chosen, page_size=pages.PAGE_SIZE, page_token=token
        )
    )
    kept = {name: params.get(name, "") for name in VIEW_FIELDS["timeline"]}
    kept = {name: value for name, value in kept.items() if value}

    def link(to: str) -> str:
        return f"/cases/{case_id}?" + urlencode({**kept, **({"page": to} if to else {})})

    return render(
        request,
        "timeline.html",
        session,
        case_id=case_id,
        view="timeline",
        rows=[pages.TimelineRow.of(entry) for entry in page.entries],
        total=page.total_events,
        basis=basis,
        chosen=chosen,
        event_types=pages.event_types(),
        params=params,
        first_link=link("") if token else "",
        previous_link=link(page.previous_page_token) if page.previous_page_token else "",
        next_link=link(page.next_page_token) if page.next_page_token else "",
        duration=pages.duration,
        field_value=pages.field_value,
    )


async def ledger_proofs(request: Request) -> Response:
    """The proofs the timeline page's script checks (hashes and signed checkpoints only)."""
    opened_here(request, FETCHED)
    session = signed_in(request)
    return await integrity.endpoint(request, console_of(request).client(), caller(session))


async def state(request: Request) -> Response:
    opened_here(request)
    session = signed_in(request)
    case_id = pages.case_id(request.path_params["case_id"])
    params = request.query_params
    basis = pages.basis(params.get("clock"))
    at = pages.moment(params.get("at"), "moment")
    rows: list[pages.StateRow] = []
    if at is not None:
        found, at = (
            await console_of(request)
            .client()
            .state_as_of(caller(session), case_id, pages.audit_moment(at), basis)
        )
        rows = pages.state_rows(found)
        before = found.events_applied == 0
    else:
        before = False
    return render(
        request,
        "state.html",
        session,
        case_id=case_id,
        view="state",
        basis=basis,
        at=at,
        rows=rows,
        before=before,
        field_value=pages.field_value,
    )


async def compare(request: Request) -> Response:
    opened_here(request)
    session = signed_in(request)
    case_id = pages.case_id(request.path_params["case_id"])
    params = request.query_params
    basis = pages.basis(params.get("clock"))
    problems: dict[str, str] = {}
    moments = {}
    for name in ("first", "second"):
        try:
            moments[name] = pages.moment(params.get(name), f"{name} moment")
        except pages.BadInput as bad:
            problems.update(bad.problems)
    if problems:
        raise pages.BadInput(problems)
    first, second = moments["first"], moments["second"]
    comparison = None
    empty: list[str] = []
    if first is not None and second is not None:
        client = console_of(request).client()
        a, first = await client.state_as_of(
            caller(session), case_id, pages.audit_moment(first), basis
        )
        b, second = await client.state_as_of(
            caller(session), case_id, pages.audit_moment(second), basis
        )
        comparison = pages.compare(pages.state_rows(a), pages.state_rows(b))
        empty = [
            pages.shown(moment)
            for moment, found in ((first, a), (second, b))
            if found.events_applied == 0
        ]
    return render(
        request,
        "compare.html",
        session,
        case_id=case_id,
        view="compare",
        basis=basis,
        first=first,
        second=second,
        comparison=comparison,
        empty=empty,
        field_value=pages.field_value,
    )


async def access(request: Request) -> Response:
    opened_here(request)
    session = signed_in(request)
    case_id = pages.case_id(request.path_params["case_id"])
    token = pages.page_token(request.query_params.get("page"))
    log = (
        await console_of(request)
        .client()
        .access_log(caller(session), case_id, page_size=pages.PAGE_SIZE, page_token=token)
    )

    def link(to: str) -> str:
        return f"/cases/{case_id}/access" + (f"?{urlencode({'page': to})}" if to else "")

    return render(
        request,
        "access.html",
        session,
        case_id=case_id,
        view="access",
        records=log.records,
        refusals=log.refusals,
        first_link=link("") if token else "",
        next_link=link(log.next_page_token) if log.next_page_token else "",
        moment_of=lambda value: pages.shown(value.ToDatetime(tzinfo=UTC)),
    )


async def disclosures(request: Request) -> Response:
    """The client's accounting of disclosures, answered on the page itself (posted: the client
    id never goes into an address)."""
    session, form = await checked_form(request)
    if session is None or not session.signed_in:
        raise SignInNeeded(ended=True)
    case_id = pages.case_id(request.path_params["case_id"])
    client_id = pages.client_id(str(form.get("client_id", "")).strip())
    since, until = pages.disclosure_period(form)
    try:
        found = (
            await console_of(request).client().disclosures(caller(session), client_id, since, until)
        )
    except AuditRefused as refused:
        # Not the case the page came from: audit knows neither a case nor the client.
        found_not = refused.refusal.details(error_details_pb2.ResourceInfo)
        if any(resource.resource_type == "client" for resource in found_not):
            raise Problem(
                404,
                "Client not found",
                "Audit holds neither a case nor the registration of this client.",
            ) from None
        raise
    return render(
        request,
        "disclosures.html",
        session,
        case_id=case_id,
        view="access",
        client_id=client_id,
        found=found,
        moment_of=lambda value: pages.shown(value.ToDatetime(tzinfo=UTC)),
    )


async def export(request: Request) -> Response:
    opened_here(request, DOWNLOAD)
    session = signed_in(request)
    case_id = pages.case_id(request.path_params["case_id"])
    chunks = console_of(request).client().export(caller(session), case_id)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(
        body(),
        media_type="application/x-ndjson",
        headers={"content-disposition": f'attachment; filename="case-{case_id}.jsonl"'},
    )


# --- refusals ------------------------------------------------------------------------------

REFUSAL_PAGES = {
    grpc.StatusCode.NOT_FOUND: (404, "Case not found", "Audit holds no event of this case."),
    grpc.StatusCode.PERMISSION_DENIED: (
        403,
        "Not allowed",
        "Your role may not see this part of the record.",
    ),
    grpc.StatusCode.UNAVAILABLE: (
        503,
        "Audit unavailable",
        "The audit service cannot be reached right now. Try again in a moment.",
    ),
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        504,
        "Audit did not answer",
        "The audit service did not answer in time. Try again in a moment.",
    ),
}


def refusal_page(request: Request, refused: AuditRefused) -> Response:
    refusal = refused.refusal
    if refusal.code == grpc.StatusCode.UNAUTHENTICATED:
        session = current(request)
        if session is not None:
            console_of(request).sessions.end(session)
        return RedirectResponse("/signin?ended=1", status_code=303)
    if refusal.code == grpc.StatusCode.INVALID_ARGUMENT:
        return problem_page(
            request,
            Problem(
                400,
                "Request refused",
                "Audit refused the request:",
                # Field names and rules only: audit never repeats a value in them.
                refusal.field_violations,
            ),
        )
    status, title, message = REFUSAL_PAGES.get(
        refusal.code, (502, "Audit refused", "Audit could not answer this request.")
    )
    return problem_page(request, Problem(status, title, message))


def problem_page(request: Request, problem: Problem) -> Response:
    session = current(request)
    return render(
        request,
        "problem.html",
        session,
        problem.status,
        problem=problem,
        case_id=None,
    )
