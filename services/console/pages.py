"""What the pages show, as plain data: inputs read and checked, timeline rows, state rows and
their comparison. No web framework here, so it is tested without one."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from casetrail.audit.v1 import audit_pb2
from casetrail_platform.limits import (
    EARLIEST_MOMENT,
    MAX_TOKEN_CHARS,
    MOMENT_RANGE,
    within_moment_bounds,
)
from cli.present import lists_cut
from events.catalog_registry import all_event_types
from events.envelope import to_micros

CASE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
ACTOR_ID = CASE_ID
LATE_AFTER = timedelta(hours=24)
"""An event recorded more than this after it occurred is marked as recorded late."""
PAGE_SIZE = 50


class BadInput(Exception):
    """Inputs that break their rules: field name to problem (values are never repeated)."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__(", ".join(problems))
        self.problems = dict(problems)


def case_id(text: str) -> str:
    if not CASE_ID.fullmatch(text):
        raise BadInput({"case id": "1 to 64 characters of letters, digits and . _ : -"})
    return text


def client_id(text: str) -> str:
    if not CASE_ID.fullmatch(text):
        raise BadInput({"client id": "1 to 64 characters of letters, digits and . _ : -"})
    return text


DISCLOSURE_YEARS = 6
"""How far back an accounting of disclosures reaches (HIPAA 164.528: six years)."""


def disclosure_period(form: Mapping[str, object]) -> tuple[datetime, datetime | None]:
    """The period asked (from, to; UTC), by default the six years up to "to" or now, but not
    before the earliest moment any request may name (``limits.EARLIEST_MOMENT``)."""
    problems: dict[str, str] = {}
    found: dict[str, datetime | None] = {}
    for name in ("from", "to"):
        try:
            found[name] = moment(str(form.get(name, "") or ""), name)
        except BadInput as bad:
            problems.update(bad.problems)
    if problems:
        raise BadInput(problems)
    until = found["to"]
    since = found["from"] or (until or datetime.now(UTC)) - timedelta(days=365 * DISCLOSURE_YEARS)
    if until is not None and since > until:
        raise BadInput({"from": "must not be after to"})
    # Six years before an early "to" can fall before any moment audit accepts, which it would
    # refuse naming its own period_start, a field the reader never filled in.
    return max(since, EARLIEST_MOMENT), until


def basis(text: str | None) -> str:
    if text in (None, "", "occurred"):
        return "occurred"
    if text == "recorded":
        return "recorded"
    raise BadInput({"clock": "occurred or recorded"})


def moment(text: str | None, field_name: str, *, required: bool = False) -> datetime | None:
    """An ISO 8601 moment (a browser's date-time field sends 2026-12-01T14:30); UTC unless an
    offset is given."""
    if not text:
        if required:
            raise BadInput({field_name: "required"})
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput({field_name: "not a date and time (YYYY-MM-DDTHH:MM, UTC)"}) from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if not within_moment_bounds(parsed):
        raise BadInput({field_name: MOMENT_RANGE})
    return parsed.astimezone(UTC)


def audit_moment(moment: datetime) -> datetime | None:
    """A replay's moment as asked of audit: ``None`` (audit's own now) for one not before the
    console's now. Audit refuses a moment still to come (it would be today's state under a
    later date) by its own clock, which the console's may run ahead of, so "now" is left to
    audit, and the page shows the moment audit used."""
    return None if moment >= datetime.now(UTC) else moment


def page_token(text: str | None) -> str:
    # Audit's own bound on a page token (it issues them): a longer one is no page of this view.
    if text and (len(text) > MAX_TOKEN_CHARS or not text.isprintable()):
        raise BadInput({"page": "not a page of this view"})
    return text or ""


@dataclass(frozen=True)
class TimelineFilter:
    event_type: str = ""
    actor: str = ""
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def read(cls, params: Mapping[str, str]) -> TimelineFilter:
        problems: dict[str, str] = {}
        event_type = params.get("type", "").strip()
        if event_type and event_type not in event_types():
            problems["event type"] = "one of the catalog's event types"
        actor = params.get("actor", "").strip()
        if actor and not ACTOR_ID.fullmatch(actor):
            problems["actor"] = "a user id: 1 to 64 characters of letters, digits and . _ : -"
        since = until = None
        for name, label in (("from", "from"), ("to", "to")):
            try:
                value = moment(params.get(name), label)
            except BadInput as bad:
                problems.update(bad.problems)
                continue
            if name == "from":
                since = value
            else:
                until = value
        if since and until and since > until:
            problems["from"] = "must not be after to"
        if problems:
            raise BadInput(problems)
        return cls(event_type, actor, since, until)

    @property
    def active(self) -> bool:
        return bool(self.event_type or self.actor or self.since or self.until)


def event_types() -> tuple[str, ...]:
    """The catalog's event types, the timeline's type filter choices."""
    return all_event_types()


@dataclass(frozen=True)
class TimelineRow:
    event_id: str
    event_type: str
    actor_id: str
    actor_role: str
    occurred_at: datetime
    recorded_at: datetime
    summary: str
    source: str
    ledger_leaf: str = ""
    """The event's canonical bytes (base64): the browser hashes them into its ledger leaf."""
    shown_in_part: bool = False
    """Part of the event is withheld from the reader: no leaf, nothing for the browser to prove."""

    @property
    def occurred_micros(self) -> int:
        """As the event's canonical bytes hold it: the browser compares the two."""
        return to_micros(self.occurred_at)

    @property
    def recorded_micros(self) -> int:
        return to_micros(self.recorded_at)

    @property
    def late_by(self) -> timedelta | None:
        gap = self.recorded_at - self.occurred_at
        return gap if gap > LATE_AFTER else None

    @classmethod
    def of(cls, entry: audit_pb2.TimelineEntry) -> TimelineRow:
        return cls(
            entry.event_id,
            entry.event_type,
            entry.actor.user_id,
            entry.actor.role,
            entry.occurred_at.ToDatetime(tzinfo=UTC),
            entry.recorded_at.ToDatetime(tzinfo=UTC),
            entry.summary,
            entry.source,
            base64.b64encode(entry.ledger_leaf).decode("ascii"),
            entry.shown_in_part,
        )


def shown(moment_value: datetime) -> str:
    return moment_value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def field_value(moment_value: datetime) -> str:
    """A moment as a browser's date-time field shows it."""
    return moment_value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def duration(gap: timedelta) -> str:
    days, seconds = gap.days, gap.seconds
    if days:
        return f"{days} day{'s' if days != 1 else ''} {seconds // 3600} h"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@dataclass(frozen=True)
class StateRow:
    key: str
    label: str
    value: str


def state_rows(state: audit_pb2.CaseState) -> list[StateRow]:
    """The case state as labelled rows; ``key`` identifies a row across two moments."""
    status = audit_pb2.CaseStatus.Name(state.status).removeprefix("CASE_STATUS_").lower()
    rows = [
        StateRow("status", "Status", "no event yet" if status == "unspecified" else status),
        StateRow("client", "Client", state.client_id or "-"),
        StateRow("events", "Events folded", str(state.events_applied)),
    ]
    if state.events_applied:
        # The client's own record then (their events, not the case's): what eligibility
        # decisions on the case rested on.
        born = state.client_date_of_birth or ("[erased]" if state.client_erased else "not given")
        holds = ", ".join(state.client_retention_hold_ids) or "none"
        rows.append(StateRow("born", "Client's date of birth", born))
        rows.append(StateRow("holds", "Retention holds on the client", holds))
    if state.closure_reason:
        rows.append(StateRow("closure", "Closure reason", state.closure_reason))
    for key, label, needs in (
        ("presenting", "Presenting needs", state.presenting_needs),
        ("assessed", "Assessed needs", state.assessed_needs),
    ):
        text = ", ".join(n.category + (f" ({n.urgency})" if n.urgency else "") for n in needs)
        rows.append(StateRow(key, label, text or "-"))
    if state.HasField("assignment"):
        a = state.assignment
        rows.append(
            StateRow(
                "worker",
                "Worker",
                f"{a.worker_id} ({a.worker_role}) since {shown(a.since.ToDatetime(tzinfo=UTC))}",
            )
        )
    else:
        rows.append(StateRow("worker", "Worker", "nobody assigned"))
    if state.HasField("plan"):
        plan = state.plan
        agreed = f"agreed version {plan.agreed_version}" if plan.agreed_version else "drafted"
        signed = ", signed by the client" if plan.signed_by_client else ""
        rows.append(StateRow("plan", "Plan", agreed + signed))
        for goal in plan.goals:
            rows.append(
                StateRow(
                    f"goal:{goal.goal_id}",
                    f"Goal {goal.goal_id[:8]}",
                    f"{goal.term} term, {goal.need_category}: {goal.status}",
                )
            )
    for service in state.services:
        starts = shown(service.starts_at.ToDatetime(tzinfo=UTC))
        rows.append(
            StateRow(
                f"service:{service.service_id}",
                f"Service {service.service_id[:8]}",
                f"{service.kind} by {service.provider_id}, {starts}: {service.status}",
            )
        )
    for referral in state.referrals:
        rows.append(
            StateRow(
                f"referral:{referral.referral_id}",
                f"Referral {referral.referral_id[:8]}",
                f"{referral.need_category} to {referral.provider_id}: {referral.status}",
            )
        )
    for consent in state.consents:
        active = "active" if consent.active else "not active"
        rows.append(
            StateRow(
                f"consent:{consent.consent_id}",
                f"Consent {consent.consent_id[:8]}",
                f"to {consent.recipient_agency_id} ({', '.join(consent.scope)}): "
                f"{consent.status}, {active}",
            )
        )
    for name, listed, total in lists_cut(state):
        note = f"{listed} of {total} (the timeline holds every one)"
        rows.append(StateRow(f"listed:{name}", f"{name.capitalize()} listed", note))
    return rows


@dataclass(frozen=True)
class ComparedRow:
    label: str
    first: str
    second: str

    @property
    def changed(self) -> bool:
        return self.first != self.second


@dataclass
class Comparison:
    rows: list[ComparedRow] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return sum(row.changed for row in self.rows)


def compare(first: list[StateRow], second: list[StateRow]) -> Comparison:
    """Rows of both states side by side, in the order they first appear."""
    by_key_first = {row.key: row for row in first}
    by_key_second = {row.key: row for row in second}
    keys = list(by_key_first) + [key for key in by_key_second if key not in by_key_first]
    comparison = Comparison()
    for key in keys:
        a, b = by_key_first.get(key), by_key_second.get(key)
        label = a.label if a else b.label if b else key
        comparison.rows.append(ComparedRow(label, a.value if a else "—", b.value if b else "—"))
    return comparison
