"""Compact, readable lines for what the services answer (case views, audit trails), each
shown escaped (``shown``): what staff typed never moves or forges what a terminal shows."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from casetrail.audit.v1 import audit_pb2
from casetrail.planning.v1 import planning_pb2

Clock = Callable[[datetime], str]
"""How a moment is shown: an ISO minute by default, "day 3 14:00" in the demo's story."""


def iso_minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def moment_of(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


_CONTROLS = re.compile(
    r"[\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
"""What a terminal does not show as itself: the control characters (category Cc: C0, DEL, C1
with its CSI), the line and paragraph separators, and the bidirectional controls (category Cf:
the marks, embeddings, overrides and isolates, which reorder a line as shown); and the
backslash, so an escape shown cannot be typed. Other format characters (a zero-width joiner
in an emoji or a name) move nothing and are shown as they are."""
_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def shown(text: str) -> str:
    """``text`` as a terminal line may show it: every character of ``_CONTROLS`` escaped
    (``\\r``, ``\\n``, ``\\x1b``, ``\\u202e``). What the services answer holds what staff typed
    (a provider's name, a reason): raw, a carriage return overwrote a listing's time, actor and
    type with text of its own, a line feed forged a whole entry, an escape sequence or a
    right-to-left override rewrote what the terminal shows."""
    return _CONTROLS.sub(_escape, text)


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    point = ord(char)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def short(identifier: str) -> str:
    """Ids are long hex strings; eight characters are enough to tell them apart on screen."""
    return identifier[:8] if len(identifier) > 12 else identifier


_HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")
_INSTANT = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)")


def compact(text: str, clock: Clock = iso_minute) -> str:
    """Shorter ids and instants in a summary line, shown on the given clock."""
    text = _INSTANT.sub(lambda found: shown_instant(found.group(), clock), text)
    return _HEX_ID.sub(lambda found: found.group()[:8], text)


def shown_instant(text: str, clock: Clock = iso_minute) -> str:
    """An ISO instant on the given clock; ``text`` unchanged when it is none (a summary holds
    names people typed: a recipient "clinic 2024-02-30T10:00Z" crashed every timeline of the
    case) or lies beyond the clock's dates (0001-01-01T00:00+01:00 overflows UTC)."""
    try:
        return clock(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        return text


def case_status(value: audit_pb2.CaseStatus.ValueType) -> str:
    """A case's status as shown ("open"), or its number when this CLI does not know it (a
    newer audit's status)."""
    try:
        return audit_pb2.CaseStatus.Name(value).removeprefix("CASE_STATUS_").lower()
    except ValueError:
        return str(value)


def case_view_lines(view: planning_pb2.GetCaseViewResponse, clock: Clock = iso_minute) -> list[str]:
    closed = f" ({view.closure_reason})" if view.closure_reason else ""
    lines = [f"case {short(view.case_id)}  client {short(view.client_id)}"]
    lines.append(f"  status {view.status}{closed}, stage {view.stage}")
    if view.HasField("worker"):
        lines.append(f"  worker {view.worker.worker_id} ({view.worker.worker_role})")
    needs = ", ".join(
        f"{need.category}" + (f" ({need.urgency})" if need.urgency else "") for need in view.needs
    )
    lines.append(f"  needs  {needs}")
    if view.HasField("plan"):
        plan = view.plan
        lines.append(
            f"  plan   v{plan.version}, {plan.agreement_status} (agreed v{plan.agreed_version})"
            + (f", last evaluated {plan.last_evaluated_on}" if plan.last_evaluated_on else "")
        )
        for goal in plan.goals:
            rating = f" - {goal.latest_rating}" if goal.latest_rating else ""
            lines.append(
                f"    [{goal.status}] {goal.goal.term:<5} {goal.goal.need_category:<16} "
                f"{goal.goal.statement}{rating}"
            )
    if view.services:
        lines.append("  services")
    for service in sorted(view.services, key=lambda s: s.starts_at):
        starts = shown_instant(service.starts_at, clock)
        lines.append(
            f"    {starts:<14} {service.kind:<16} {service.provider_name:<30} {service.status}"
        )
    if view.referrals:
        lines.append("  referrals")
    for referral in view.referrals:
        lines.append(
            f"    {referral.need_category:<16} -> {referral.provider_name:<30} {referral.status}"
        )
    follow_up = f", next due {view.next_follow_up_due}" if view.next_follow_up_due else ""
    last = f", last on {view.last_contact_on}" if view.last_contact_on else ""
    lines.append(f"  contacts {view.contacts_logged}{last}{follow_up}")
    if view.HasField("discharge"):
        discharge = view.discharge
        lines.append(f"  discharge target {discharge.target_date}: {'; '.join(discharge.criteria)}")
    return [shown(line) for line in lines]


def activity_lines(
    activities: Iterable[audit_pb2.Activity], clock: Clock = iso_minute
) -> list[str]:
    return [
        shown(
            f"  {clock(moment_of(activity.occurred_at)):<16} {activity.actor.role:<15} "
            f"{activity.actor.user_id:<24} "
            f"{compact(activity.summary or activity.event_type, clock)}"
        )
        for activity in activities
    ]


def timeline_lines(
    entries: Iterable[audit_pb2.TimelineEntry], clock: Clock = iso_minute
) -> list[str]:
    return [
        shown(
            f"  {clock(moment_of(entry.occurred_at)):<16} {entry.source:<22} "
            f"{entry.actor.role}:{entry.actor.user_id:<24} {entry.event_type}  "
            f"{compact(entry.summary, clock)}"
        )
        for entry in entries
    ]


def case_state_lines(state: audit_pb2.CaseState, clock: Clock = iso_minute) -> list[str]:
    status = case_status(state.status)
    lines = [
        f"case {state.case_id}  client {state.client_id or '-'}",
        f"  status {status}" + (f" ({state.closure_reason})" if state.closure_reason else ""),
        f"  events folded {state.events_applied}"
        + (f", last at {clock(moment_of(state.last_event_at))}" if state.events_applied else ""),
    ]
    if state.events_applied:
        # The client's record then (their own events): what decisions on their age rested on.
        born = state.client_date_of_birth or ("[erased]" if state.client_erased else "")
        holds = ", ".join(state.client_retention_hold_ids) or "none"
        lines.append(f"  client {'born ' + born + '; ' if born else ''}holds {holds}")
    if state.presenting_needs or state.assessed_needs:
        needs = state.assessed_needs or state.presenting_needs
        lines.append(
            "  needs  "
            + ", ".join(n.category + (f" ({n.urgency})" if n.urgency else "") for n in needs)
        )
    if state.HasField("assignment"):
        lines.append(
            f"  worker {state.assignment.worker_id} ({state.assignment.worker_role}) since "
            f"{clock(moment_of(state.assignment.since))}"
        )
    if state.HasField("plan"):
        goals = ", ".join(f"{g.need_category}:{g.status}" for g in state.plan.goals)
        lines.append(f"  plan   agreed v{state.plan.agreed_version}; goals {goals}")
    for service in state.services:
        lines.append(
            f"  service {clock(moment_of(service.starts_at)):<16} {service.kind:<16} "
            f"{service.status}"
        )
    for referral in state.referrals:
        lines.append(f"  referral {referral.need_category:<16} {referral.status}")
    for name, listed, total in lists_cut(state):
        lines.append(f"  {listed} of {total} {name} listed (the timeline holds every one)")
    return [shown(line) for line in lines]


def lists_cut(state: audit_pb2.CaseState) -> list[tuple[str, int, int]]:
    """Each list of ``state`` audit cut short (``*_truncated``): its name, how many are listed
    and how many there are (the command line's and the console's "N of M listed")."""
    lists = (
        ("services", len(state.services), state.services_total, state.services_truncated),
        ("referrals", len(state.referrals), state.referrals_total, state.referrals_truncated),
        ("consents", len(state.consents), state.consents_total, state.consents_truncated),
        (
            "retention holds",
            len(state.client_retention_hold_ids),
            state.client_retention_holds_total,
            state.client_retention_holds_truncated,
        ),
    )
    return [(name, listed, total) for name, listed, total, truncated in lists if truncated]
