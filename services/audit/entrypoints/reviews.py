"""Requests and answers of the need-to-know reviews: ListDisclosures and GetCaseAsSeen."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from google.protobuf.message import Message

from casetrail.audit.v1 import audit_pb2
from casetrail_platform.limits import EARLIEST_MOMENT, LATEST_MOMENT
from events.catalog.access import AccessPurpose, RecordSection
from events.catalog.base import Role
from events.envelope import from_micros, to_micros
from events.errors import FieldProblem
from services.audit.app.as_seen import AsSeen, StateRendering, UserClaims
from services.audit.app.disclosures import DisclosurePage, Period
from services.audit.domain.case_state import CaseState
from services.audit.domain.disclosures import Disclosure, DisclosureKey
from services.audit.entrypoints import responses
from services.audit.entrypoints.requests import RequestReader, before, moment

Choice = TypeVar("Choice", Role, AccessPurpose)

STATE_SECTION_PATHS = {
    RecordSection.IDENTITY: ("client_id",),
    RecordSection.ASSESSMENT: ("presenting_needs", "assessed_needs"),
    RecordSection.ASSIGNMENT: ("assignment",),
    RecordSection.PLAN: ("plan",),
    RecordSection.REFERRALS: ("referrals",),
    RecordSection.SERVICES: ("services",),
    RecordSection.CONSENTS: ("consents",),
    RecordSection.DISCHARGE: ("closure_reason",),
}
"""Where each record section sits in a ``CaseState``."""

STATE_REVEALING_PATHS = {
    "status": (RecordSection.ASSIGNMENT, RecordSection.PLAN, RecordSection.DISCHARGE),
}
"""Fields of a ``CaseState`` in no section that tell of sections: the status says the case is
assigned, planned, closed or reopened (planning shows status and stage under discharge)."""

STATE_ACTIVITY_PATHS = ("events_applied", "last_event_at")
"""Fields of a ``CaseState`` that tell of its whole history, withheld parts included."""

STATE_SENSITIVE_PATHS = (
    "presenting_needs.category",
    "assessed_needs.category",
    "plan.goals.need_category",
    "referrals.need_category",
    "services.kind",
)
"""Where the catalog's sensitive fields (need categories, service kinds) show in a CaseState."""

STATE_SPECIAL_LINKS = {"services.referral_id": ("referrals.need_category", "referral_id")}
"""A service names the referral it was booked from: not one withheld whole as special data."""

STATE_SPECIAL_LISTS = {"plan.agreed_goal_ids": ("plan.goals.need_category", "goal_id")}
"""The plan lists the goals the client agreed to: not one withheld whole as special data."""


def state_rendering(as_of: datetime) -> StateRendering:
    def render(state: CaseState, sensitive: bool) -> audit_pb2.CaseState:
        return responses.state(state, as_of, sensitive=sensitive)

    return StateRendering(
        render,
        STATE_SECTION_PATHS,
        STATE_SENSITIVE_PATHS,
        "state",
        referral_paths={"referrals": "referral_id", "services": "referral_id"},
        revealing_paths=STATE_REVEALING_PATHS,
        activity_paths=STATE_ACTIVITY_PATHS,
        special_links=STATE_SPECIAL_LINKS,
        special_lists=STATE_SPECIAL_LISTS,
        bound_lists=_cut_state,
    )


def _cut_state(message: Message) -> None:
    assert isinstance(message, audit_pb2.CaseState)
    responses.cut_state(message)


# --- ListDisclosures

_EARLIEST_MICROS = to_micros(EARLIEST_MOMENT)
_LATEST_MICROS = to_micros(LATEST_MOMENT)
_UUID_TEXT = 36
"""An event id's canonical text: 32 hex digits and 4 hyphens."""


def disclosure_request(
    read: RequestReader, request: audit_pb2.ListDisclosuresRequest, client_id: str, now: datetime
) -> tuple[datetime, datetime, DisclosureKey | None]:
    """The period asked and the page's cursor. A token keeps the period it was issued for:
    without period_end ("until now") the next pages still end where the first did."""
    if not request.HasField("period_start"):
        read.missing("period_start")
    start = moment(request.period_start, lower_bound=True)
    end = moment(request.period_end) if request.HasField("period_end") else None
    if end is not None and end < start and not before(request.period_end, request.period_start):
        # Both within one microsecond: a period the trail's microseconds cannot tell apart.
        read.problems.append(
            FieldProblem("period_end", "must be at least a microsecond after period_start")
        )
    if not request.page_token:
        if end is None and start > now:
            # Without period_end the period ends now: a refusal naming period_end, which the
            # caller did not send, told them nothing.
            read.problems.append(
                FieldProblem(
                    "period_start", "is in the future (without period_end, the period ends now)"
                )
            )
        return start, end or now, None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(request.page_token.encode("ascii")))
        token_client, token_start, token_end, at, event_id = decoded
        cursor: DisclosureKey = (_moment_micros(at), _event_id(event_id))
        issued_for = (str(token_client), int(token_start), int(token_end))
        # A number no moment has (10**30, or 1e400, which JSON reads as infinity) is no token
        # of ours either: it overflowed here, answered INTERNAL.
        end = end or from_micros(issued_for[2])
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError, OverflowError):
        read.problems.append(FieldProblem("page_token", "is not a token this service issued"))
        return start, end or now, None
    if issued_for != (client_id, to_micros(start), to_micros(end)):
        read.problems.append(
            FieldProblem("page_token", "was issued for another client_id or period")
        )
        return start, end, None
    return start, end, cursor


def _moment_micros(value: object) -> int:
    """A cursor's time as this service writes it: a whole number of microseconds of a moment
    a request may name."""
    if type(value) is not int or not _EARLIEST_MICROS <= value < _LATEST_MICROS:
        raise ValueError("not a moment's microseconds")
    return value


def _event_id(value: object) -> str:
    """A cursor's event id as this service writes it: an event id's canonical text. Any other
    text reached the index's key range as it came: a lone surrogate failed to encode
    (INTERNAL), and a NUL was a key on SQLite but refused by PostgreSQL (INTERNAL there)."""
    if not isinstance(value, str) or len(value) != _UUID_TEXT or str(UUID(value)) != value:
        raise ValueError("not an event id")
    return value


def disclosures_response(
    client_id: str, asked: Period, page: DisclosurePage
) -> audit_pb2.ListDisclosuresResponse:
    token = ""
    if page.next_cursor is not None:
        at, event_id = page.next_cursor
        payload = [client_id, to_micros(asked.start), to_micros(asked.end), at, event_id]
        token = base64.urlsafe_b64encode(
            json.dumps(payload, separators=(",", ":")).encode()
        ).decode("ascii")
    return audit_pb2.ListDisclosuresResponse(
        disclosures=[disclosure(item) for item in page.disclosures],
        next_page_token=token,
        total_disclosures=page.total,
        case_ids=page.case_ids,
        period_start=responses.timestamp(asked.start),
        period_end=responses.timestamp(asked.end),
    )


def disclosure(item: Disclosure) -> audit_pb2.Disclosure:
    recorded = item.recorded
    return audit_pb2.Disclosure(
        event_id=str(recorded.event_id),
        event_type=recorded.event_type,
        case_id=item.case_id,
        disclosed_at=responses.timestamp(item.disclosed_at),
        recorded_at=responses.timestamp(recorded.recorded_at),
        recipient=audit_pb2.DisclosureRecipient(
            kind=item.recipient.kind.value,
            recipient_id=item.recipient.recipient_id,
            agency_id=item.recipient.agency_id,
            name=item.recipient.name,
        ),
        disclosed_by=responses.actor(item.disclosed_by),
        sections=[section.value for section in item.sections],
        fields=list(item.fields),
        description=item.description,
        purpose="" if item.purpose is None else item.purpose.value,
        basis="" if item.basis is None else item.basis.value,
        consent_id=next(iter(item.consent_ids), ""),
        consent_ids=item.consent_ids,
        emergency_access_id=item.emergency_access_id or "",
        rule=item.rule,
        source=recorded.metadata.source,
        occurred_at=responses.timestamp(recorded.metadata.occurred_at),
    )


# --- GetCaseAsSeen


def user_claims(read: RequestReader, request: audit_pb2.GetCaseAsSeenRequest) -> UserClaims:
    user_id = read.identifier(request.user_id, "user_id") or ""
    role = _choice(read, Role, request.user_role, "user_role")
    purpose = _choice(read, AccessPurpose, request.user_purpose, "user_purpose")
    agency = (
        read.identifier(request.user_agency_id, "user_agency_id")
        if request.user_agency_id
        else None
    )
    team = read.identifier(request.user_team, "user_team") if request.user_team else None
    return UserClaims(user_id, role, agency, team, purpose)


def as_seen_response(seen: AsSeen, as_of: datetime) -> audit_pb2.GetCaseAsSeenResponse:
    user, decision = seen.user, seen.entitlement
    assert isinstance(seen.state, audit_pb2.CaseState)
    return audit_pb2.GetCaseAsSeenResponse(
        state=seen.state,
        entitlement=audit_pb2.Entitlement(
            allowed=decision.allowed,
            rule=decision.rule,
            policy_version=decision.policy_version,
            sections=[
                section.value for section in STATE_SECTION_PATHS if decision.discloses(section)
            ],
            sensitive_disclosed=decision.allowed and decision.sensitive,
            consent_id=next(iter(decision.consent_ids), ""),
            consent_ids=decision.consent_ids,
            emergency_access_id=decision.emergency_access_id or "",
            withheld_sections=seen.withheld_sections,
            withheld_fields=seen.withheld_fields,
            reason=decision.reason,
        ),
        user=audit_pb2.UserAtTime(
            user_id=user.principal.subject,
            role=user.principal.role.value,
            agency_id=user.principal.agency,
            team=user.principal.team or "",
            purpose=user.purpose.value,
            derived_from=", ".join(f"{k}={v}" for k, v in user.derived_from.items()),
        ),
        reads=[responses.access_record(recorded) for recorded in seen.reads],
        as_of=responses.timestamp(as_of),
        reads_truncated=seen.reads_total > len(seen.reads),
        reads_total=seen.reads_total,
    )


def _choice(read: RequestReader, kind: type[Choice], value: str, field: str) -> Choice | None:
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        read.problems.append(FieldProblem(field, f"must be one of {allowed}"))
        return None
