"""The documented bounds of every input (README, "Limits"), in one place.

The edge (``casetrail_platform.grpc_platform.edge``) refuses a request outside them before any
handler runs, and the event store (``casetrail_platform.store.guard``) refuses an event outside them
before anything is written, so whatever the store accepts can be published (Kafka refuses records
over 1 MiB by default), projected (PostgreSQL jsonb cannot hold NUL) and exported on both backends.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

MAX_ID_CHARS = 128
"""Any id-like field (``*_id``, ``*_ids``, ``user_id``, ``page_token``, ...). Ids the catalog
keeps are narrower still: 1-64 characters of ``[A-Za-z0-9_.:-]``."""

MAX_KEY_CHARS = 200
"""An idempotency key."""

MAX_TOKEN_CHARS = 512
"""A page token (issued by the service itself)."""

MAX_TEXT_CHARS = 20_000
"""Any other string field: names, codes and free text (the catalog bounds names and short texts
to 500 characters, notes and narratives to 20,000)."""

MAX_LIST_ITEMS = 100
"""Any repeated field."""

MAX_EVENT_BYTES = 256 * 1024
"""One event as it is stored and published: its data with sensitive values sealed, plus its
CloudEvents headers and key (``store.guard.require_publishable``, measured after sealing). A
quarter of Kafka's default 1 MiB record limit, so an older-version event republished beside
its stored form still fits."""

HTTP_REQUEST_SECONDS = 10.0
"""How long an HTTP request to the console or the caseload views may take to arrive whole (its
line and headers; a body of at most 64 KiB), from the connection or from the previous answer on
it. A browser or a probe sends a request at once, so 10 s leaves a slow link ample room, while a
client sending nothing, or a byte now and then, holds each connection it opens only that long
(without it, for good on the console and an hour on the views)."""

EARLIEST_MOMENT = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_MOMENT = datetime(2200, 1, 1, tzinfo=UTC)
"""Any timestamp or date in a request lies in [EARLIEST_MOMENT, LATEST_MOMENT)."""
MOMENT_RANGE = (
    f"between {EARLIEST_MOMENT:%Y-%m-%d} and {LATEST_MOMENT - timedelta(days=1):%Y-%m-%d}"
)
"""The bounds as a refusal tells them: both days included, UTC."""

MAX_VALID_FOR_DAYS = (LATEST_MOMENT.date() - date(2100, 1, 1)).days
"""How long a programme's positive eligibility decision may hold (``valid_for_days`` in the
agency file, a century): decided on any day before 2100, its ``valid_until`` lies within the
dates above."""

MAX_AMOUNT_MINOR_UNITS = 2**63 - 1
"""An amount in minor units as the APIs carry it (protobuf ``int64``): the agency file's
amounts are held to it, so that what a budget line has left always fits an answer."""

EARLIEST_OCCURRED_AT = datetime(1970, 1, 1, tzinfo=UTC)
OCCURRED_AT_CLOCK_SKEW = timedelta(minutes=5)
"""A command's occurred-at lies in [1970-01-01, now + 5 minutes]: it says when something
happened, which cannot be in the future beyond a clock's drift."""

MAX_SERVICE_DURATION = timedelta(hours=24)
SERVICE_WINDOW_REACH = timedelta(days=5 * 366)
"""A scheduled or delivered service lasts at most 24 hours and starts within 5 years of the
command's moment (either way); longer care is several services."""


MAX_RESERVATIONS_PER_SERVICE = 10
MAX_RESERVATIONS_PER_CASE = 100
"""Reservations one budget line holds for one service (its first and its top-ups, when its cost
grows), and for one case naming no service; released ones count too. Top-ups are legitimate,
but every reservation stays in the line's stream, which every reservation and release on the
line reads again (``ReleaseBudget`` gives money back; nothing else makes room)."""

MAX_GOALS_PER_PLAN = 100
MAX_PLAN_GOALS_BYTES = 1024 * 1024
"""Goals one intervention plan holds (dropped and achieved ones too), and their size as the
catalog's JSON. The case view answers the plan whole, and the 4 MiB a gRPC answer may be
must also hold earlier cycles' plans, services and referrals."""


def within_moment_bounds(moment: date) -> bool:
    """Whether a moment (timezone-aware) or a day lies in [EARLIEST_MOMENT, LATEST_MOMENT)."""
    if isinstance(moment, datetime):
        return EARLIEST_MOMENT <= moment < LATEST_MOMENT
    return EARLIEST_MOMENT.date() <= moment < LATEST_MOMENT.date()


def id_like(field_name: str) -> bool:
    """Whether a request field holds an id or key (no whitespace or control characters)."""
    return field_name.endswith(("_id", "_ids", "_key", "_token")) or field_name in {
        "budget_line",
        "program_id",
    }
