"""The audit API through a real grpc.aio server on port 0 and a real channel."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail_platform.identity.grpc_auth import CLIENT_HEADER, bearer_metadata
from casetrail_platform.policy.guard import RULE_KEY, AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.access import RecordAccessDenied
from events.cloudevents import from_json_lines, from_structured
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from services.audit.adapters.timeline import TimelineProjection
from services.audit.app import queries
from services.audit.entrypoints import responses
from services.audit.entrypoints.grpc_server import AuditServicer
from services.audit.entrypoints.requests import RequestReader
from tests.support.grpc import details, mentions, refusal, violated_fields
from tests.support.identity import TestIssuer, acting, caller_of
from tests.unit.audit.serving import audit_server
from tests.unit.audit.support import CASE, CLIENT, DAY, T0, TEAM, late_recorded_case, viewer

OCCURRED = audit_pb2.TIME_BASIS_OCCURRED
RECORDED = audit_pb2.TIME_BASIS_RECORDED


@pytest.fixture
async def received(read_models: SqliteReadModelStore) -> list[RecordedEvent]:
    events = late_recorded_case()
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for recorded in events:
        await handler(recorded)
    return events


def stamp(moment: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(moment)
    return message


async def export(stub: audit_pb2_grpc.AuditServiceAsyncStub, **fields: Any) -> list[bytes]:
    request = audit_pb2.ExportCaseRequest(context=viewer(), case_id=CASE, **fields)
    return [chunk.json_lines async for chunk in stub.ExportCase(request)]


@pytest.mark.usefixtures("received")
async def test_state_as_of_differs_by_clock_for_a_late_recorded_event(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    def asking(basis: Any) -> audit_pb2.GetCaseStateAsOfRequest:
        return audit_pb2.GetCaseStateAsOfRequest(
            context=viewer(), case_id=CASE, as_of=stamp(T0 + 2 * DAY), basis=basis
        )

    was = await audit.GetCaseStateAsOf(asking(OCCURRED))
    known = await audit.GetCaseStateAsOf(asking(RECORDED))

    assert was.state.status == audit_pb2.CASE_STATUS_ASSIGNED
    assert was.state.assignment.worker_id == "worker-ana"
    assert was.state.client_id == "client-7f3a"
    assert [(n.category, n.urgency) for n in was.state.assessed_needs] == [
        ("home_care", "immediate")
    ]
    assert known.state.status == audit_pb2.CASE_STATUS_OPENED
    assert not known.state.HasField("assignment")
    assert (was.basis, known.basis) == (OCCURRED, RECORDED)


async def test_the_timeline_pages_through_the_whole_history(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    received: list[RecordedEvent],
    registry: EventRegistry,
) -> None:
    entries: list[audit_pb2.TimelineEntry] = []
    token = ""
    while True:
        page = await audit.GetTimeline(
            audit_pb2.GetTimelineRequest(
                context=viewer(), case_id=CASE, basis=RECORDED, page_size=3, page_token=token
            )
        )
        entries.extend(page.entries)
        assert page.total_events == len(received)
        token = page.next_page_token
        if not token:
            break

    assert [e.event_id for e in entries] == [str(e.event_id) for e in received]
    back = await audit.GetTimeline(
        audit_pb2.GetTimelineRequest(
            context=viewer(),
            case_id=CASE,
            basis=RECORDED,
            page_size=3,
            page_token=page.previous_page_token,
        )
    )
    assert [e.event_id for e in back.entries] == [
        e.event_id for e in entries[-len(page.entries) - 3 : -len(page.entries)]
    ]
    assert entries[2].actor.role == "coordinator"
    assert entries[2].summary == "assigned the case to worker-ana (social_worker)"
    decoded = [from_structured(json.loads(e.cloudevent_json), registry) for e in entries]
    assert decoded == received


async def test_export_streams_json_lines_that_round_trip(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    received: list[RecordedEvent],
    registry: EventRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(responses, "EXPORT_CHUNK_EVENTS", 3)
    chunks = await export(audit)

    assert len(chunks) == 2
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert from_json_lines(b"".join(chunks).decode(), registry) == received


async def test_every_read_is_in_the_access_log(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, received: list[RecordedEvent]
) -> None:
    await export(audit)
    await audit.WhoDidWhat(
        audit_pb2.WhoDidWhatRequest(
            context=viewer("supervisor", "supervision", team=TEAM), case_id=CASE
        )
    )
    log = await audit.GetAccessLog(audit_pb2.GetAccessLogRequest(context=viewer(), case_id=CASE))

    assert [(r.accessor.user_id, r.purpose) for r in log.records] == [
        ("user-auditor", "confidentiality_review"),
        ("user-supervisor", "supervision"),
        ("user-auditor", "confidentiality_review"),
    ]
    assert list(log.records[0].sections) == ["identity", "assessment", "assignment", "discharge"]
    assert list(log.records[2].sections) == ["access_log"]
    assert {r.source for r in log.records} == {"casetrail/audit"}


@pytest.mark.usefixtures("received")
async def test_an_access_log_past_the_unindexed_bound_is_unavailable_retryable(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeline of audit's own records far behind: UNAVAILABLE with the reason, the case
    and a retry delay, never a page leaving accesses out."""
    monkeypatch.setattr(queries, "OWN_UNINDEXED", 1, raising=False)
    request = audit_pb2.GetAccessLogRequest(context=viewer(), case_id=CASE)
    for _ in range(2):
        await audit.GetAccessLog(request)
    code, status = await refusal(audit.GetAccessLog(request))
    assert code == grpc.StatusCode.UNAVAILABLE
    (info,) = details(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["subject"]) == ("FACTS_NOT_CAUGHT_UP", CASE)
    (retry,) = details(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 1


class OneClient:
    """Audit's client index (``queries.ClientCases``): ``CLIENT`` has ``CASE``."""

    async def cases_of(self, client_id: str) -> list[str]:
        return [CASE] if client_id == CLIENT else []


@pytest.mark.usefixtures("received")
async def test_a_client_s_cases_whose_facts_trail_name_the_client_not_a_case(
    deps: queries.AuditDeps, issuer: TestIssuer, store: SqliteEventStore
) -> None:
    """FindCasesOfClient looks the client's cases up, then a supervisor waits for each one's
    facts before it is decided: a refusal naming the trailing case would tell the caller the
    client has it, with nothing recorded. It names the client the request asked about."""
    asked: list[str] = []

    async def behind(case_id: str) -> bool:
        asked.append(case_id)
        return False

    waiting = replace(
        deps,
        access=AccessControl(
            store,
            None,
            "casetrail/audit",
            home_agency=DEFAULT_HOME_AGENCY,
            case_facts_caught_up=behind,
        ),
    )
    request = audit_pb2.FindCasesOfClientRequest(
        context=viewer("supervisor", "supervision", team=TEAM), client_id=CLIENT
    )
    async with audit_server(AuditServicer(waiting, client_cases=OneClient()), issuer) as audit:
        code, status = await refusal(audit.FindCasesOfClient(request))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert asked == [CASE]
    assert not mentions(status, CASE), status
    (info,) = details(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["subject"]) == ("FACTS_NOT_CAUGHT_UP", CLIENT)
    (retry,) = details(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 1
    assert await store.read_all(0) == [], "nothing decided, nothing recorded"


@pytest.mark.usefixtures("received")
async def test_the_access_log_pages_with_tokens_of_its_own_case_going_forward(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    for _ in range(4):
        await audit.WhoDidWhat(audit_pb2.WhoDidWhatRequest(context=viewer(), case_id=CASE))
    request = audit_pb2.GetAccessLogRequest(context=viewer(), case_id=CASE, page_size=2)
    first = await audit.GetAccessLog(request)
    assert len(first.records) == 2
    assert first.next_page_token
    request.page_token = first.next_page_token
    second = await audit.GetAccessLog(request)
    assert not {r.event_id for r in first.records} & {r.event_id for r in second.records}
    assert second.records[0].occurred_at.ToDatetime() >= first.records[1].occurred_at.ToDatetime()

    timeline = await audit.GetTimeline(
        audit_pb2.GetTimelineRequest(context=viewer(), case_id=CASE, page_size=1)
    )
    later = await audit.GetTimeline(
        audit_pb2.GetTimelineRequest(
            context=viewer(), case_id=CASE, page_size=1, page_token=timeline.next_page_token
        )
    )
    elsewhere = audit_pb2.GetAccessLogRequest(
        context=viewer(), case_id="case-other", page_token=first.next_page_token
    )
    for bad, problem in [
        (elsewhere, "was issued for another case_id or basis"),
        (
            audit_pb2.GetAccessLogRequest(
                context=viewer(), case_id=CASE, page_token=later.previous_page_token
            ),
            "goes backward; this view pages forward",
        ),
        (
            audit_pb2.GetAccessLogRequest(context=viewer(), case_id=CASE, page_size=1001),
            "must be between 1 and 1000",
        ),
    ]:
        code, status = await refusal(audit.GetAccessLog(bad))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        (bad_request,) = details(status, error_details_pb2.BadRequest)
        violations = bad_request.field_violations
        assert [v.description for v in violations] == [problem]


async def test_who_did_what_pages_forward_without_repeating_an_activity(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, received: list[RecordedEvent]
) -> None:
    whole = await audit.WhoDidWhat(audit_pb2.WhoDidWhatRequest(context=viewer(), case_id=CASE))
    assert not whole.next_page_token
    request = audit_pb2.WhoDidWhatRequest(context=viewer(), case_id=CASE, page_size=2)
    paged: list[str] = []
    while True:
        page = await audit.WhoDidWhat(request)
        assert len(page.activities) <= 2
        paged.extend(a.event_id for a in page.activities)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    own = [a.event_id for a in whole.activities]
    # The pages hold the case's events in the same order; each call added its own read.
    assert paged[: len(own)] == own
    assert len(paged) == len(set(paged))
    assert {str(r.event_id) for r in received} <= set(paged)

    code, status = await refusal(
        audit.WhoDidWhat(
            audit_pb2.WhoDidWhatRequest(
                context=viewer(), case_id=CASE, actor_id="not an id", page_size=1001
            )
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["actor_id", "page_size"]


@pytest.mark.usefixtures("received")
async def test_every_answer_names_the_rule_that_decided(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    as_of = stamp(T0 + 3 * DAY)
    supervising = viewer("supervisor", "supervision", team=TEAM)
    calls = {
        "auditor-review": [
            audit.GetTimeline(audit_pb2.GetTimelineRequest(context=viewer(), case_id=CASE)),
            audit.GetCaseStateAsOf(
                audit_pb2.GetCaseStateAsOfRequest(
                    context=viewer(), case_id=CASE, as_of=as_of, basis=RECORDED
                )
            ),
            audit.WhoDidWhat(audit_pb2.WhoDidWhatRequest(context=viewer(), case_id=CASE)),
            audit.GetAccessLog(audit_pb2.GetAccessLogRequest(context=viewer(), case_id=CASE)),
        ],
        "team-supervisor": [
            audit.GetTimeline(audit_pb2.GetTimelineRequest(context=supervising, case_id=CASE)),
        ],
    }
    for rule, answered in calls.items():
        for call in answered:
            await call
            assert dict(await call.trailing_metadata())[RULE_KEY] == rule

    streamed = audit.ExportCase(audit_pb2.ExportCaseRequest(context=viewer(), case_id=CASE))
    assert [chunk async for chunk in streamed]
    assert dict(await streamed.trailing_metadata())[RULE_KEY] == "auditor-review"


@pytest.mark.usefixtures("received")
async def test_who_did_what_for_one_actor(audit: audit_pb2_grpc.AuditServiceAsyncStub) -> None:
    answer = await audit.WhoDidWhat(
        audit_pb2.WhoDidWhatRequest(context=viewer(), case_id=CASE, actor_id="coord-carla")
    )
    assert [(a.event_type, a.summary) for a in answer.activities] == [
        ("casetrail.case.assigned", "assigned the case to worker-ana (social_worker)"),
        ("casetrail.case.closed", "closed the case (goals_achieved)"),
    ]


@pytest.mark.usefixtures("received")
@pytest.mark.parametrize("role", ["coordinator", "case_manager", "social_worker", "client"])
async def test_roles_without_oversight_are_denied(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, role: str
) -> None:
    code, status = await refusal(
        audit.GetTimeline(
            audit_pb2.GetTimelineRequest(context=viewer(role, "direct_care"), case_id=CASE)
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert [i.reason for i in details(status, error_details_pb2.ErrorInfo)] == ["ROLE_NOT_ALLOWED"]

    streamed = audit.ExportCase(
        audit_pb2.ExportCaseRequest(context=viewer(role, "direct_care"), case_id=CASE)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in streamed:
            pass
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.usefixtures("received")
async def test_bad_requests_name_every_field(audit: audit_pb2_grpc.AuditServiceAsyncStub) -> None:
    code, status = await refusal(
        audit.GetTimeline(
            audit_pb2.GetTimelineRequest(
                context=acting(
                    Person("kim", "auditor"), common_pb2.QueryContext(purpose="curiosity")
                ),
                case_id="no spaces allowed",
                page_size=5000,
                page_token="not-a-token",
            )
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["context.purpose", "case_id", "page_size", "page_token"]

    code, status = await refusal(
        audit.WhoDidWhat(audit_pb2.WhoDidWhatRequest(context=viewer(purpose=""), case_id=CASE))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["context.purpose"]

    code, status = await refusal(
        audit.GetTimeline(
            audit_pb2.GetTimelineRequest(
                context=viewer(),
                case_id=CASE,
                event_types=["casetrail.no.such"],
                actor_id="not an id",
                since=Timestamp(seconds=2_000_000_000),
                until=Timestamp(seconds=1_000_000_000),
            )
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["event_types", "actor_id", "until"]

    code, status = await refusal(
        audit.GetCaseStateAsOf(audit_pb2.GetCaseStateAsOfRequest(context=viewer(), case_id=CASE))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    # as_of unset is the server's now (test_a_state_without_as_of_is_as_of_the_server_s_now).
    assert violated_fields(status) == ["basis"]


@pytest.mark.usefixtures("received")
async def test_a_page_token_only_fits_its_own_view(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    page = await audit.GetTimeline(
        audit_pb2.GetTimelineRequest(context=viewer(), case_id=CASE, page_size=1)
    )
    code, status = await refusal(
        audit.GetTimeline(
            audit_pb2.GetTimelineRequest(
                context=viewer(), case_id=CASE, basis=RECORDED, page_token=page.next_page_token
            )
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["page_token"]


async def test_an_unknown_case_is_not_found(audit: audit_pb2_grpc.AuditServiceAsyncStub) -> None:
    code, status = await refusal(
        audit.GetAccessLog(audit_pb2.GetAccessLogRequest(context=viewer(), case_id="case-nope"))
    )
    assert code is grpc.StatusCode.NOT_FOUND
    assert [r.resource_name for r in details(status, error_details_pb2.ResourceInfo)] == [
        "case-nope"
    ]


@pytest.mark.usefixtures("received")
async def test_another_teams_supervisor_gets_one_recorded_refusal_for_real_and_unknown_ids(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore
) -> None:
    """The answer to an id audit has no event of told it apart from a real case: NOT_FOUND,
    unrecorded, against a recorded PERMISSION_DENIED."""
    west = viewer("supervisor", "supervision", team="team-west")
    answers = [
        await refusal(audit.GetTimeline(audit_pb2.GetTimelineRequest(context=west, case_id=asked)))
        for asked in (CASE, "case-nope")
    ]
    (real_code, real), (unknown_code, unknown) = answers
    assert real_code is unknown_code is grpc.StatusCode.PERMISSION_DENIED
    assert unknown == real
    assert [i.reason for i in details(real, error_details_pb2.ErrorInfo)] == ["NO_RELATIONSHIP"]

    recorded = [r.event for r in await store.read_all(0)]
    assert [(type(e), e.subject) for e in recorded] == [
        (RecordAccessDenied, CASE),
        (RecordAccessDenied, "case-nope"),
    ]


@pytest.mark.usefixtures("received")
async def test_accesses_name_the_client_application_the_caller_declares(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, issuer: TestIssuer
) -> None:
    request = audit_pb2.GetAccessLogRequest(context=viewer(), case_id=CASE)
    token = bearer_metadata(issuer.token_for(caller_of(request)))
    log = await audit.GetAccessLog(request, metadata=(*token, (CLIENT_HEADER, "casetrail-console")))
    assert [record.client_application for record in log.records] == ["casetrail-console"]
    unnamed = await audit.GetAccessLog(request, metadata=token)
    assert unnamed.records[-1].client_application == ""

    for bad in ("Console With Spaces", "x" * 65, ""):
        code, status = await refusal(
            audit.GetAccessLog(request, metadata=(*token, (CLIENT_HEADER, bad)))
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(status) == [CLIENT_HEADER]


@pytest.mark.usefixtures("received")
async def test_a_replay_is_refused_as_of_a_moment_to_come_and_empty_before_the_case(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    # A replay as of a moment to come would be today's answer under another date, different
    # each time it is asked; one before the case folds nothing, and says so.
    to_come = stamp(datetime.now(UTC) + timedelta(days=365))
    for call in (
        audit.GetCaseStateAsOf(
            audit_pb2.GetCaseStateAsOfRequest(
                context=viewer(), case_id=CASE, as_of=to_come, basis=RECORDED
            )
        ),
        audit.GetTimeline(
            audit_pb2.GetTimelineRequest(context=viewer(), case_id=CASE, as_of=to_come)
        ),
    ):
        code, status = await refusal(call)
        assert (code, violated_fields(status)) == (grpc.StatusCode.INVALID_ARGUMENT, ["as_of"])

    for basis in (OCCURRED, RECORDED):
        before = await audit.GetCaseStateAsOf(
            audit_pb2.GetCaseStateAsOfRequest(
                context=viewer(), case_id=CASE, as_of=stamp(T0 - DAY), basis=basis
            )
        )
        assert before.state.events_applied == 0


@pytest.mark.parametrize("ahead", [timedelta(seconds=1), timedelta(minutes=4)])
def test_as_of_is_refused_past_the_server_s_now_with_no_skew(ahead: timedelta) -> None:
    """Within the clock skew allowed for an event's occurred_at (5 minutes), a moment to come
    was answered with today's state under its date; only the server's now or before is a
    replay."""
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    for request in (
        audit_pb2.GetCaseStateAsOfRequest(as_of=stamp(now + ahead)),
        audit_pb2.GetTimelineRequest(as_of=stamp(now + ahead)),
        audit_pb2.GetCaseAsSeenRequest(as_of=stamp(now + ahead)),
    ):
        read = RequestReader()
        read.as_of(request, now, required=True)
        assert [problem.field for problem in read.problems] == ["as_of"]
        at_now = RequestReader()
        assert at_now.as_of(type(request)(as_of=stamp(now)), now, required=True) == now
        assert not at_now.problems


@pytest.mark.usefixtures("received")
async def test_a_state_without_as_of_is_as_of_the_server_s_now(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    """A caller meaning "now" leaves as_of unset rather than sending its own clock's now,
    which may be ahead of the server's (and refused); the answer says which moment it used."""
    before = datetime.now(UTC)
    answer = await audit.GetCaseStateAsOf(
        audit_pb2.GetCaseStateAsOfRequest(context=viewer(), case_id=CASE, basis=RECORDED)
    )
    used = answer.as_of.ToDatetime(tzinfo=UTC)
    assert before <= used <= datetime.now(UTC)
    assert answer.state.status == audit_pb2.CASE_STATUS_CLOSED
