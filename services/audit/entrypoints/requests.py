"""Reading audit requests: every field problem of a request is reported at once."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime, timedelta
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from casetrail.audit.v1 import audit_pb2
from casetrail.common.v1 import common_pb2
from casetrail_platform.commands import InvalidCommand, id_problem
from casetrail_platform.grpc_platform.context import query_context_problems
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.vocabulary import Decision
from casetrail_platform.queries import QueryContext
from events.catalog.access import AccessPurpose
from events.catalog.base import Role
from events.envelope import Actor
from events.errors import FieldProblem
from services.audit.app.caseloads import PROCESSOR_REFUSALS, CaseloadView, processor_refusal
from services.audit.domain.history import PageCursor, TimeBasis, TimelineQuery

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_EVENT_TYPES = 64
_SUFFIX = re.compile(r"\d{20}\|\d{20}\|[A-Za-z0-9_./:-]{1,200}\|[A-Za-z0-9_.:-]{1,200}\|\d{20}")
"""A timeline index sort key (``adapters.timeline.sort_suffix``): what a page token carries."""

_STAND_IN = QueryContext(Actor("stand-in", Role.SYSTEM), AccessPurpose.CONFIDENTIALITY_REVIEW)

_BASES = {
    audit_pb2.TIME_BASIS_OCCURRED: TimeBasis.OCCURRED,
    audit_pb2.TIME_BASIS_RECORDED: TimeBasis.RECORDED,
}

_CASELOAD_VIEWS = {
    audit_pb2.CASELOAD_VIEW_CASELOADS: CaseloadView.CASELOADS,
    audit_pb2.CASELOAD_VIEW_OVERDUE: CaseloadView.OVERDUE,
    audit_pb2.CASELOAD_VIEW_CONTACTS_PER_DAY: CaseloadView.CONTACTS_PER_DAY,
}


_WithAsOf = (
    audit_pb2.GetTimelineRequest
    | audit_pb2.GetCaseStateAsOfRequest
    | audit_pb2.GetCaseAsSeenRequest
)


class RequestReader:
    """Collects problems while fields are read; ``done()`` raises them together."""

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []

    def done(self) -> None:
        if self.problems:
            raise InvalidCommand(self.problems)

    def missing(self, field: str) -> None:
        self.problems.append(FieldProblem(field, "required"))

    def as_of(self, request: _WithAsOf, now: datetime, *, required: bool) -> datetime | None:
        """The request's ``as_of``; a moment beyond ``now`` (the server's clock) is refused: a
        replay as of a future moment would be today's answer labelled as another, and would
        change each time it is asked. No clock skew is allowed here (it let a moment up to 5
        minutes ahead through): a caller that means "now" leaves ``as_of`` unset."""
        if not request.HasField("as_of"):
            if required:
                self.missing("as_of")
            return None
        as_of = moment(request.as_of)
        if as_of > now:
            self.problems.append(FieldProblem("as_of", "is in the future"))
        return as_of

    def viewer(self, principal: Principal, message: common_pb2.QueryContext) -> QueryContext:
        context, problems = query_context_problems(principal, message)
        self.problems.extend(problems)
        # The stand-in never escapes: done() raises whenever the context was refused.
        return context or _STAND_IN

    def uuid(self, value: str, field: str) -> UUID | None:
        try:
            return UUID(value)
        except ValueError:
            self.problems.append(FieldProblem(field, "required" if not value else "not a UUID"))
            return None

    def case_id(self, value: str, field: str = "case_id") -> str:
        return self.identifier(value, field) or ""

    def identifier(self, value: str, field: str) -> str | None:
        problem = id_problem(field, value)
        if problem is not None:
            self.problems.append(problem)
            return None
        return value

    def basis(
        self, value: audit_pb2.TimeBasis.ValueType, field: str = "basis", *, required: bool = False
    ) -> TimeBasis:
        if value in _BASES:
            return _BASES[value]
        if value == audit_pb2.TIME_BASIS_UNSPECIFIED and not required:
            return TimeBasis.OCCURRED
        self.problems.append(
            FieldProblem(field, "must be TIME_BASIS_OCCURRED or TIME_BASIS_RECORDED")
        )
        return TimeBasis.OCCURRED

    def caseload_view(self, value: audit_pb2.CaseloadView.ValueType) -> CaseloadView:
        if value in _CASELOAD_VIEWS:
            return _CASELOAD_VIEWS[value]
        self.problems.append(FieldProblem("view", "required: a CASELOAD_VIEW_* value"))
        return CaseloadView.CASELOADS

    def caseload_refusal(self, reason: str) -> Decision | None:
        """The processor's own refusal of a caseload read (``refused_by``), if it states one."""
        if not reason:
            return None
        refused = processor_refusal(reason)
        if refused is None:
            known = ", ".join(PROCESSOR_REFUSALS)
            self.problems.append(FieldProblem("refused_by", f"must be empty or one of {known}"))
        return refused

    def page_size(
        self, value: int, field: str = "page_size", *, default: int = DEFAULT_PAGE_SIZE
    ) -> int:
        if value == 0:
            return default
        if not 1 <= value <= MAX_PAGE_SIZE:
            self.problems.append(FieldProblem(field, f"must be between 1 and {MAX_PAGE_SIZE}"))
        return max(1, min(value, MAX_PAGE_SIZE))

    def page_token(
        self, token: str, case_id: str, basis: TimeBasis, field: str = "page_token"
    ) -> PageCursor | None:
        if not token:
            return None
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
            token_case, token_basis, direction, suffix = decoded
            valid = direction in ("after", "before") and _SUFFIX.fullmatch(suffix) is not None
        except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
            valid = False
        if not valid:
            self.problems.append(FieldProblem(field, "is not a token this service issued"))
            return None
        if token_case != case_id or token_basis != basis.value:
            self.problems.append(FieldProblem(field, "was issued for another case_id or basis"))
            return None
        return PageCursor(suffix, backward=direction == "before")

    def forward_page_token(
        self, token: str, case_id: str, basis: TimeBasis, field: str = "page_token"
    ) -> PageCursor | None:
        """``page_token`` of a view read forward only (a next page, never a previous one)."""
        cursor = self.page_token(token, case_id, basis, field)
        if cursor is not None and cursor.backward:
            self.problems.append(FieldProblem(field, "goes backward; this view pages forward"))
            return None
        return cursor

    def timeline_query(
        self,
        request: audit_pb2.GetTimelineRequest,
        basis: TimeBasis,
        types: frozenset[str],
        now: datetime,
    ) -> TimelineQuery:
        """The view's filters; event types must be catalog types (``types``)."""
        chosen = frozenset(request.event_types)
        if len(request.event_types) > MAX_EVENT_TYPES:
            self.problems.append(FieldProblem("event_types", f"at most {MAX_EVENT_TYPES}"))
        elif unknown := sorted(chosen - types):
            self.problems.append(
                FieldProblem("event_types", f"not a catalog event type: {unknown[0][:80]!r}")
            )
        actor_id = self.identifier(request.actor_id, "actor_id") if request.actor_id else None
        since = moment(request.since, lower_bound=True) if request.HasField("since") else None
        until = moment(request.until) if request.HasField("until") else None
        # Compared as given: two bounds within one microsecond hold no event, not a mistake.
        if since is not None and until is not None and before(request.until, request.since):
            self.problems.append(FieldProblem("until", "must not be before since"))
        return TimelineQuery(
            basis,
            as_of=self.as_of(request, now, required=False),
            since=since,
            until=until,
            event_types=chosen,
            actor_id=actor_id,
            without_accesses=request.exclude_access_events,
        )


def page_token(case_id: str, basis: TimeBasis, cursor: PageCursor) -> str:
    direction = "before" if cursor.backward else "after"
    payload = json.dumps([case_id, basis.value, direction, cursor.suffix], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode("ascii")


def moment(timestamp: Timestamp, *, lower_bound: bool = False) -> datetime:
    """The instant to the trail's microsecond: an instant or an upper bound given between two
    microseconds is taken down (an event at the earlier one is before it), a lower bound up (an
    event at the earlier one is before it too: it must not be counted in)."""
    instant = timestamp.ToDatetime(tzinfo=UTC)
    if lower_bound and timestamp.nanos % 1000:
        instant += timedelta(microseconds=1)
    return instant


def before(first: Timestamp, second: Timestamp) -> bool:
    """``first`` earlier than ``second``, to the nanosecond given."""
    return (first.seconds, first.nanos) < (second.seconds, second.nanos)
