"""HTTP views of the caseload tables (Faust's web server, JSON).

======================================  ====================================================
``GET /caseload/[?limit=100]``          open cases per worker, and the unassigned open cases
``GET /caseload/{worker}/[?limit=100]`` one worker's open cases
``GET /overdue/[?today=YYYY-MM-DD]``    overdue follow-ups, oldest due date first
``GET /overdue/{worker}/[?today=...]``  one worker's overdue follow-ups
``GET /contacts/{worker}/[?days=7]``    contacts the worker logged per UTC day
``GET /caseload-status/``               what the processor has consumed, and whether it is
                                        ready (table recovery finished); always 200 while the
                                        process answers (liveness, startup)
``GET /caseload-status/ready/``         the same, 503 until the tables are recovered, at
                                        the start and from the start of each rebalance
                                        (readiness: no view answers from half a table)
``GET /caseload-parts/``                whether this process asked for the part of an
                                        all-worker view another process was asked for: 200,
                                        410 if it gave that view up, else 404
                                        (``gathering``; names nothing)
======================================  ====================================================

The lists of cases name at most ``?limit=`` (1 to 1,000, default 100) cases, in order (case id;
overdue: oldest due date first), with ``"truncated": true`` when more matched: only those named
are recorded.

Per-worker views are routed by Faust to the process that owns the worker's table partition,
over the views' HTTPS when they serve it (``routing``: 503 ``OWNER_UNAVAILABLE`` when that
process cannot be reached, or was forwarded the view by one that took it for the owner). The
all-worker views are gathered from the part of every process holding partitions of the tables
and merged (``gathering``: 503 ``OWNER_UNAVAILABLE`` unless every partition's part is had). A
view is a GET or HEAD without a body: 400 ``BODY_NOT_ALLOWED`` otherwise (405 for another
method).
``today`` defaults to the agency's date (``CASETRAIL_AGENCY_TIME_ZONE``, as the services' ages)
for the overdue follow-ups, and to the UTC date for contacts, which are counted per UTC day.

Every view but the status needs ``Authorization: Bearer <token>`` (``access.CaseloadGate``)
and is answered only once audit has decided and recorded the read (``recording``): one access
per case the answer names, with the caller's own token, for the purpose stated as
``?purpose=`` (default ``confidentiality_review``; auditors). Otherwise 401 (no or bad token),
403 (the policy refused; ``reason`` names the rule; the refusal is on record), 400 (unknown
purpose, bad query) or 503 (no issuer; audit not configured or unreachable: nothing is
disclosed that is not recorded; ``NOT_READY`` while the tables are being recovered: at the
start, and from the start of each rebalance until they hold the new assignment). The
contacts-per-day view names no case: decided, not recorded. A part of an all-worker view,
answered to the process that asked for it, is no read: that process records the view's. A part
request no process of the group made (a caller sending its marks) is refused 403
``PART_NOT_ASKED`` on the record as the other refusals, logged with the caller's subject and
agency: audit records it, with the caller's token, as refused by ``part-not-asked`` naming no
case, whatever the caller's role (auditors, whom the views are for, included).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from casetrail.audit.v1 import audit_pb2
from casetrail_platform.ages import agency_today
from casetrail_platform.limits import MOMENT_RANGE, within_moment_bounds
from casetrail_platform.typed_numbers import ascii_whole_number
from events.catalog.base import Identifier
from services.caseload import queries
from services.caseload.access import Caller, CaseloadGate, Refused
from services.caseload.domain import OverdueFollowUp
from services.caseload.gathering import CONFIRMATION_PATH, PART_MARK, Gathering, PartNotAsked
from services.caseload.nonces import Confirmation
from services.caseload.parts import (
    CaseloadsPart,
    OverduePart,
    Part,
    caseloads_part,
    merged_caseloads,
    merged_overdue,
    overdue_part,
    require_whole,
)
from services.caseload.processor import CaseloadApp
from services.caseload.recording import AccessRecorder, View
from services.caseload.routing import READ_METHODS, require_a_plain_read

log = logging.getLogger(__name__)

MAX_DAYS = 35
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
"""Cases one answer names at most (``?limit=``), as planning's ListCases: each is recorded in
audit (100 per call) before the answer goes out."""
ANSWER_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
"""On every answer, refusals included: the views name cases, which no cache may keep."""


class BadQuery(ValueError):
    pass


@dataclass(frozen=True)
class Answer:
    """A view's answer, and what audit records of it before it is sent."""

    body: dict[str, Any]
    view: View | None
    """``None``: no read to record, a part another process asked for (``gathering``)."""
    case_ids: tuple[str, ...] = ()
    refusal: Refused | None = None
    """Refused once audit has recorded it as this refusal (``AccessRecorder.refuse``, a read
    of ``view`` naming no case): a part no process asked."""


Handler = Callable[..., Awaitable[Answer]]
"""``handler(request, **match_info)``, called once the tables are ready, with no await in
between; raises ``BadQuery`` for a bad query."""
P = TypeVar("P", bound=Part)


def add_views(app: CaseloadApp) -> None:
    """Register the views (only called when the web server is enabled)."""
    table_route = app.table_route(table=app.held_cases, match_info="worker")
    issuer = app.settings.issuer
    gate = CaseloadGate(None if issuer is None else issuer.verifier())
    recorder = app.access_recorder = AccessRecorder(
        app.settings.audit_address,
        app.settings.audit_tls,
        app.settings.audit_plaintext_allowed,
    )
    gathering = Gathering(app)

    def guarded(handler: Handler) -> Any:
        # Per-worker views are routed to the owning process first (table_route, outside):
        # the process that answers is the one that admits, reads the tables and records.
        async def admitted(view: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                require_a_plain_read(request)
                caller = await gate.admit(request.headers, request.query)
                if not app.ready():
                    # Tables still being restored from their changelogs would answer with
                    # whatever part of them is back, as if it were all.
                    raise Refused(
                        503,
                        "the caseload tables are being recovered: ask again in a moment",
                        "NOT_READY",
                    )
                answer = await handler(request, *args, **kwargs)
                if answer.refusal is not None:
                    _log_refused(caller, answer.refusal)
                    assert answer.view is not None  # a refusal is of a view's read (Answer)
                    await recorder.refuse(caller, answer.view, answer.refusal)
                if answer.view is not None:
                    await recorder.record(caller, answer.view, answer.case_ids)
            except BadQuery as error:
                return view.json({"error": str(error)}, status=400, headers=ANSWER_HEADERS)
            except Refused as refused:
                return refusal(view, refused)
            return view.json(answer.body, headers=ANSWER_HEADERS)

        return admitted

    def gathered(
        kind: type[P],
        read: View,
        local: Callable[[Any, frozenset[int]], P],
        merged: Callable[[Any, list[P]], Answer],
    ) -> Handler:
        """An all-worker view (``read``): this process's part (``local``, its tables read at
        once) and every other process's (``gathering``), ``merged``; to a process asking for
        this one's part, that part, recorded by the asker with the view's answer."""

        async def handler(request: Any) -> Answer:
            here = local(request, gathering.partitions_here())  # a bad query: 400 here
            if gathering.is_part(request.headers):
                try:
                    await gathering.require_asked(request.headers)
                except PartNotAsked as refused:
                    return Answer({}, read, refusal=refused)
                return Answer(here.model_dump(mode="json"), None)
            every = [here, *await gathering.parts(request, here.pinned(), kind)]
            require_whole(every, app.settings.partitions)
            return merged(request, every)

        return handler

    def caseloads_here(request: Any, partitions: frozenset[int]) -> CaseloadsPart:
        return caseloads_part(app, partitions, _limit(request.query))

    def all_caseloads(request: Any, parts: list[CaseloadsPart]) -> Answer:
        workers, shown, truncated = merged_caseloads(parts, _limit(request.query))
        body = {"workers": workers, "unassigned": list(shown), "truncated": truncated}
        return Answer(body, audit_pb2.CASELOAD_VIEW_CASELOADS, shown)

    def overdue_here(request: Any, partitions: frozenset[int]) -> OverduePart:
        return overdue_part(app, partitions, _overdue_today(app, request), _limit(request.query))

    def all_overdue(request: Any, parts: list[OverduePart]) -> Answer:
        shown, truncated = merged_overdue(parts, _limit(request.query))
        return _overdue_answer(parts[0].today, shown, truncated)

    async def worker_caseload(request: Any, worker: str) -> Answer:
        held = queries.caseload(app, _worker(worker))
        limit = _limit(request.query)
        shown = held.case_ids[:limit]
        body = {**held.to_json(), "case_ids": list(shown), "truncated": len(held.case_ids) > limit}
        return Answer(body, audit_pb2.CASELOAD_VIEW_CASELOADS, shown)

    async def worker_overdue(request: Any, worker: str) -> Answer:
        return _worker_overdue(app, request, _worker(worker))

    async def worker_contacts(request: Any, worker: str) -> Answer:
        worker = _worker(worker)
        # Contacts are counted on UTC days (the windows of ``app.contacts``): so is today.
        today = _today(request.query, datetime.now(UTC).date())
        days = _days(request.query)
        span = [today - timedelta(days=back) for back in range(days - 1, -1, -1)]
        counts = queries.contacts_per_day(app, worker, span)
        body = {"worker_id": worker, "per_day": {day.isoformat(): n for day, n in counts.items()}}
        return Answer(body, audit_pb2.CASELOAD_VIEW_CONTACTS_PER_DAY)

    def routed(handler: Handler) -> Any:
        # Faust answers a request it routed to the owning process with that process's status
        # and body only: the headers every answer carries are set again on the way out.
        local = guarded(handler)
        route = table_route(local)

        async def answered(view: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            # Until this process has joined and recovered, Faust cannot route (its router
            # raised a TypeError: a 500), and during a rebalance the assignment it routes by
            # is being replaced; answered here then, NOT_READY.
            chosen = route if app.ready() else local
            try:
                # Before routing: the owner is sent no body (``routing.FORWARDED_HEADERS``).
                require_a_plain_read(request)
                response = await chosen(view, request, *args, **kwargs)
            except Refused as refused:  # a body, or the owner cannot be reached (``routing``)
                return refusal(view, refused)
            response.headers.update(ANSWER_HEADERS)
            if response.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response

        return answered

    async def confirmation(view: Any, request: Any) -> Any:
        # Asked by another process of the group (``gathering``): a yes or no, naming nothing.
        answer = gathering.confirm(request.headers.get(PART_MARK, ""))
        body = {"asked": answer is Confirmation.ASKED}
        return view.json(body, status=int(answer), headers=ANSWER_HEADERS)

    caseloads = gathered(
        CaseloadsPart, audit_pb2.CASELOAD_VIEW_CASELOADS, caseloads_here, all_caseloads
    )
    overdue = gathered(OverduePart, audit_pb2.CASELOAD_VIEW_OVERDUE, overdue_here, all_overdue)
    app.page("/caseload/")(guarded(caseloads))
    app.page("/caseload/{worker}/")(routed(worker_caseload))
    app.page("/overdue/")(guarded(overdue))
    app.page("/overdue/{worker}/")(routed(worker_overdue))
    app.page("/contacts/{worker}/")(routed(worker_contacts))
    # Operational counters only, no case: open like the services' health checks.
    app.page("/caseload-status/")(status_page(app, readiness=False))
    app.page("/caseload-status/ready/")(status_page(app, readiness=True))
    app.page(CONFIRMATION_PATH)(confirmation)


def _log_refused(caller: Caller, refused: Refused) -> None:
    """Who was refused, by subject and agency (never the token), in the processor's log beside
    audit's record of the refusal."""
    who = caller.principal
    log.warning(
        "caseload: %s refused to %s of agency %s: %s",
        refused.code,
        who.subject,
        who.agency,
        refused,
    )


def refusal(view: Any, refused: Refused) -> Any:
    """A refused view's answer: the words and the reason, with the answer headers."""
    headers = dict(ANSWER_HEADERS)
    if refused.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if refused.status == 405:
        headers["Allow"] = ", ".join(sorted(READ_METHODS))
    if refused.retry_after_seconds is not None:
        headers["Retry-After"] = str(refused.retry_after_seconds)
    return view.json(
        {"error": str(refused), "reason": refused.code}, status=refused.status, headers=headers
    )


def status_page(app: CaseloadApp, readiness: bool) -> Callable[[Any, Any], Awaitable[Any]]:
    """The status view; with ``readiness`` it is 503 until the tables are recovered, so a
    readinessProbe keeps the process out of the endpoints while a liveness probe (the plain
    view, always 200) restarts nothing during a long recovery."""

    async def page(view: Any, request: Any) -> Any:
        body = status_of(app)
        return view.json(body, status=503 if readiness and not body["ready"] else 200)

    return page


def status_of(app: CaseloadApp) -> dict[str, Any]:
    """What the processor has consumed, and whether its tables are recovered (``ready``)."""
    counters = app.counters
    return {
        "ready": app.ready(),
        "messages": counters.messages,
        "applied": counters.applied,
        "skipped": counters.skipped,
        "undecodable": counters.undecodable,
        "failed": counters.failed,
    }


def _worker_overdue(app: CaseloadApp, request: Any, worker: str) -> Answer:
    today = _overdue_today(app, request)
    limit = _limit(request.query)
    found = queries.overdue(app, today, worker)
    return _overdue_answer(today, found[:limit], len(found) > limit)


def _overdue_today(app: CaseloadApp, request: Any) -> date:
    # A follow-up is due on the agency's calendar: overdue from the agency's next day.
    return _today(request.query, agency_today(app.settings.time_zone))


def _overdue_answer(today: date, shown: Sequence[OverdueFollowUp], truncated: bool) -> Answer:
    body = {
        "today": today.isoformat(),
        "overdue": [o.to_json() for o in shown],
        "truncated": truncated,
    }
    return Answer(body, audit_pb2.CASELOAD_VIEW_OVERDUE, tuple(o.case_id for o in shown))


def _today(query: Any, default: date) -> date:
    text = query.get("today")
    if not text:
        return default
    try:
        today = date.fromisoformat(text)
    except ValueError:
        raise BadQuery(
            f"today must be a date (YYYY-MM-DD), got {text[:ECHOED_CHARACTERS]!r}"
        ) from None
    # The services' bounds: the contacts view counts back from today, and 0001-01-01 minus a
    # day overflowed (a 500).
    if not within_moment_bounds(today):
        raise BadQuery(f"today must be {MOMENT_RANGE}")
    return today


@cache
def _identifier() -> TypeAdapter[str]:
    return TypeAdapter(Identifier)


def _worker(text: str) -> str:
    """A worker's user id as the catalog keeps it (never repeated: it may be anything)."""
    try:
        return _identifier().validate_python(text)
    except ValidationError:
        raise BadQuery(
            "worker must be a user id: 1 to 64 letters, digits or . _ : -, starting with a"
            " letter or digit"
        ) from None


def _limit(query: Any) -> int:
    return _whole_number(query, "limit", DEFAULT_LIMIT, MAX_LIMIT)


def _days(query: Any) -> int:
    return _whole_number(query, "days", 7, MAX_DAYS)


ECHOED_CHARACTERS = 20
"""How much of a refused query value a 400 repeats: enough to recognise, never the kilobytes a
request line may hold."""


def _whole_number(query: Any, name: str, default: int, highest: int) -> int:
    """The query's ``name``, a whole number from 1 to ``highest``, read by the one rule for
    typed whole numbers (``ascii_whole_number``): "²" and 4,300 digits were each a 500."""
    text = query.get(name) or str(default)
    number = ascii_whole_number(text)
    if number is None or not 1 <= number <= highest:
        raise BadQuery(
            f"{name} must be a whole number from 1 to {highest}, got {text[:ECHOED_CHARACTERS]!r}"
        )
    return number
