"""HTTP views of the caseload tables (Faust's web server, JSON).

======================================  ====================================================
``GET /caseload/``                      open cases per worker, and the unassigned open cases
``GET /caseload/{worker}/``             one worker's open cases
``GET /overdue/[?today=YYYY-MM-DD]``    overdue follow-ups, oldest due date first
``GET /overdue/{worker}/[?today=...]``  one worker's overdue follow-ups
``GET /contacts/{worker}/[?days=7]``    contacts the worker logged per UTC day
``GET /caseload-status/``               what the processor has consumed, and whether it is
                                        ready (table recovery finished)
======================================  ====================================================

Per-worker views are routed by Faust to the process that owns the worker's table partition.
``today`` defaults to the server's local date.

Every view but the status names cases, so it needs ``Authorization: Bearer <token>`` of a
caller the access policy lets read the caseloads (``access.CaseloadGate``: auditors, purpose
``confidentiality_review``, stated as ``?purpose=``); otherwise 401 (no or bad token), 403
(the policy refused; ``reason`` names the rule), 400 (unknown purpose) or 503 (no issuer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

from services.caseload import queries
from services.caseload.access import CaseloadGate, Refused
from services.caseload.processor import CaseloadApp

MAX_DAYS = 35


class BadQuery(ValueError):
    pass


View = Callable[..., Awaitable[Any]]


def add_views(app: CaseloadApp) -> None:
    """Register the views (only called when the web server is enabled)."""
    table_route = app.table_route(table=app.caseloads, match_info="worker")
    issuer = app.settings.issuer
    gate = CaseloadGate(None if issuer is None else issuer.verifier())

    def guarded(handler: View) -> View:
        async def admitted(view: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                await gate.admit(request.headers, request.query)
            except Refused as refused:
                headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None
                return view.json(
                    {"error": str(refused), "reason": refused.code},
                    status=refused.status,
                    headers=headers,
                )
            return await handler(view, request, *args, **kwargs)

        return admitted

    async def all_caseloads(view: Any, request: Any) -> Any:
        return view.json(
            {"workers": queries.caseloads(app), "unassigned": list(queries.unassigned(app))}
        )

    async def worker_caseload(view: Any, request: Any, worker: str) -> Any:
        return view.json(queries.caseload(app, worker).to_json())

    async def all_overdue(view: Any, request: Any) -> Any:
        try:
            today = _today(request.query)
        except BadQuery as error:
            return view.error(400, str(error))
        found = queries.overdue(app, today)
        return view.json({"today": today.isoformat(), "overdue": [o.to_json() for o in found]})

    async def worker_overdue(view: Any, request: Any, worker: str) -> Any:
        try:
            today = _today(request.query)
        except BadQuery as error:
            return view.error(400, str(error))
        found = queries.overdue(app, today, worker)
        return view.json({"today": today.isoformat(), "overdue": [o.to_json() for o in found]})

    async def worker_contacts(view: Any, request: Any, worker: str) -> Any:
        try:
            today = _today(request.query)
            days = _days(request.query)
        except BadQuery as error:
            return view.error(400, str(error))
        span = [today - timedelta(days=back) for back in range(days - 1, -1, -1)]
        counts = queries.contacts_per_day(app, worker, span)
        return view.json(
            {"worker_id": worker, "per_day": {day.isoformat(): n for day, n in counts.items()}}
        )

    async def status(view: Any, request: Any) -> Any:
        counters = app.counters
        return view.json(
            {
                "ready": app.ready(),
                "messages": counters.messages,
                "applied": counters.applied,
                "skipped": counters.skipped,
                "undecodable": counters.undecodable,
            }
        )

    app.page("/caseload/")(guarded(all_caseloads))
    app.page("/caseload/{worker}/")(guarded(table_route(worker_caseload)))
    app.page("/overdue/")(guarded(all_overdue))
    app.page("/overdue/{worker}/")(guarded(table_route(worker_overdue)))
    app.page("/contacts/{worker}/")(guarded(table_route(worker_contacts)))
    # Operational counters only, no case: open like the services' health checks.
    app.page("/caseload-status/")(status)


def _today(query: Any) -> date:
    text = query.get("today")
    if not text:
        return date.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadQuery(f"today must be a date (YYYY-MM-DD), got {text!r}") from None


def _days(query: Any) -> int:
    text = query.get("days") or "7"
    if not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
        raise BadQuery(f"days must be a whole number from 1 to {MAX_DAYS}, got {text!r}")
    return int(text)
