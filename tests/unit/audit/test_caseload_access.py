"""RecordCaseloadAccess through a real grpc.aio server: audit decides the caseload views' reads
for the verified caller and records them (or their refusal) in its own store."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail_platform.identity.grpc_auth import CLIENT_HEADER, bearer_metadata
from casetrail_platform.policy.vocabulary import Action
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.access import RecordAccessDenied, RecordAccessed
from events.envelope import RecordedEvent
from services.audit.adapters.timeline import TimelineProjection
from tests.support.grpc import details, refusal, violated_fields
from tests.support.identity import TestIssuer, acting, caller_of

AUDITOR = Person("james.liu", "auditor")
CASELOADS = audit_pb2.CASELOAD_VIEW_CASELOADS
OVERDUE = audit_pb2.CASELOAD_VIEW_OVERDUE
CONTACTS = audit_pb2.CASELOAD_VIEW_CONTACTS_PER_DAY


def asked(
    view: Any,
    case_ids: list[str],
    who: Person = AUDITOR,
    purpose: str = "confidentiality_review",
    refused_by: str = "",
) -> audit_pb2.RecordCaseloadAccessRequest:
    context = acting(who, common_pb2.QueryContext(purpose=purpose))
    return audit_pb2.RecordCaseloadAccessRequest(
        context=context, view=view, case_ids=case_ids, refused_by=refused_by
    )


async def written(store: SqliteEventStore) -> list[RecordedEvent]:
    return await store.read_all()


async def test_an_allowed_read_is_recorded_once_per_case_before_the_answer(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore, issuer: TestIssuer
) -> None:
    request = asked(CASELOADS, ["case-a", "case-b", "case-a"])
    token = bearer_metadata(issuer.token_for(caller_of(request)))
    answer = await audit.RecordCaseloadAccess(
        request, metadata=(*token, (CLIENT_HEADER, "casetrail-caseload"))
    )
    assert (answer.rule, answer.recorded) == ("auditor-review", 2)
    assert answer.policy_version

    overdue = await audit.RecordCaseloadAccess(asked(OVERDUE, ["case-c"]))
    assert overdue.recorded == 1

    accesses = [e for e in await written(store) if isinstance(e.event, RecordAccessed)]
    seen = [
        (
            a.event.case_id,
            a.event.accessor_id,
            a.event.accessor_role.value,
            a.event.purpose.value,
            [s.value for s in a.event.sections],
            a.event.rule,
            a.event.client_application,
        )
        for a in accesses
        if isinstance(a.event, RecordAccessed)
    ]
    assert seen == [
        ("case-a", "james.liu", "auditor", "confidentiality_review", ["assignment"],
         "auditor-review", "casetrail-caseload"),
        ("case-b", "james.liu", "auditor", "confidentiality_review", ["assignment"],
         "auditor-review", "casetrail-caseload"),
        ("case-c", "james.liu", "auditor", "confidentiality_review", ["assignment", "contacts"],
         "auditor-review", None),
    ]  # fmt: skip
    assert {a.metadata.source for a in accesses} == {"casetrail/audit"}


async def test_a_view_that_names_no_case_is_decided_and_records_nothing(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore
) -> None:
    for view in (CASELOADS, CONTACTS):
        answer = await audit.RecordCaseloadAccess(asked(view, []))
        assert (answer.rule, answer.recorded) == ("auditor-review", 0)
    assert await written(store) == []


@pytest.mark.parametrize(
    ("who", "purpose", "reason"),
    [
        (Person("maria", "coordinator"), "coordination", "ROLE_NOT_ALLOWED"),
        (Person("sw-ana", "social_worker"), "direct_care", "ROLE_NOT_ALLOWED"),
        (AUDITOR, "supervision", "PURPOSE_NOT_PERMITTED"),
        (Person("kim", "auditor", agency="elsewhere"), "confidentiality_review", "NO_RELATIONSHIP"),
    ],
)
async def test_a_refusal_is_recorded_per_case_named_and_nothing_is_allowed(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    store: SqliteEventStore,
    issuer: TestIssuer,
    who: Person,
    purpose: str,
    reason: str,
) -> None:
    request = asked(OVERDUE, ["case-a", "case-b"], who, purpose)
    token = bearer_metadata(issuer.token_for(caller_of(request)))
    code, status = await refusal(
        audit.RecordCaseloadAccess(
            request, metadata=(*token, (CLIENT_HEADER, "casetrail-caseload"))
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert [i.reason for i in details(status, error_details_pb2.ErrorInfo)] == [reason]

    code, _ = await refusal(audit.RecordCaseloadAccess(asked(CONTACTS, [], who, purpose)))
    assert code is grpc.StatusCode.PERMISSION_DENIED

    events = await written(store)
    assert not [e for e in events if isinstance(e.event, RecordAccessed)]
    refusals = [e.event for e in events if isinstance(e.event, RecordAccessDenied)]
    rule = reason.lower().replace("_", "-")
    assert [
        (r.case_id, r.accessor_id, r.action, r.rule, r.client_application) for r in refusals
    ] == [
        ("case-a", who.user_id, Action.READ_CASELOADS.value, rule, "casetrail-caseload"),
        ("case-b", who.user_id, Action.READ_CASELOADS.value, rule, "casetrail-caseload"),
        ("caseloads", who.user_id, Action.READ_CASELOADS.value, rule, None),
    ]


async def test_bad_requests_name_the_field_and_write_nothing(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore
) -> None:
    cases = [
        (asked(audit_pb2.CASELOAD_VIEW_UNSPECIFIED, ["case-a"]), ["view"]),
        (asked(CASELOADS, ["case-a", "not an id"]), ["case_ids[1]"]),
        (asked(CASELOADS, [f"case-{n}" for n in range(101)]), ["case_ids"]),
        (asked(CONTACTS, ["case-a"]), ["case_ids"]),
        (asked(CASELOADS, ["case-a"], purpose="gossip"), ["context.purpose"]),
    ]
    for request, fields in cases:
        code, status = await refusal(audit.RecordCaseloadAccess(request))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, fields
        assert violated_fields(status) == fields
    assert await written(store) == []


@pytest.mark.parametrize(
    "who", [AUDITOR, Person("maria", "coordinator"), Person("mallory.k", "receptionist")]
)
async def test_a_refusal_the_processor_states_is_recorded_whatever_the_callers_role(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    store: SqliteEventStore,
    read_models: SqliteReadModelStore,
    issuer: TestIssuer,
    who: Person,
) -> None:
    """A part no process asked for (PART_NOT_ASKED, refused by the processor) is recorded
    refused by part-not-asked under caseloads and answered PERMISSION_DENIED, for an auditor
    too, whom the policy allows the views: audit recorded nothing for them (an allowed read
    naming no case), so a forged part request of theirs left no trace."""
    request = asked(CASELOADS, [], who, refused_by="PART_NOT_ASKED")
    token = bearer_metadata(issuer.token_for(caller_of(request)))
    code, status = await refusal(
        audit.RecordCaseloadAccess(
            request, metadata=(*token, (CLIENT_HEADER, "casetrail-caseload"))
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert [i.reason for i in details(status, error_details_pb2.ErrorInfo)] == ["PART_NOT_ASKED"]

    events = await written(store)
    assert [
        (e.case_id, e.accessor_id, e.accessor_role.value, e.action, e.rule, e.client_application)
        for e in (recorded.event for recorded in events)
        if isinstance(e, RecordAccessDenied)
    ] == [
        ("caseloads", who.user_id, who.role, Action.READ_CASELOADS.value, "part-not-asked",
         "casetrail-caseload"),
    ]  # fmt: skip
    assert not [e for e in events if isinstance(e.event, RecordAccessed)]
    # Audit's timeline takes its own records from the bus: as it does, they are on the log.
    timeline = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for recorded in events:
        await timeline(recorded)
    log = await audit.GetAccessLog(
        audit_pb2.GetAccessLogRequest(
            context=acting(AUDITOR, common_pb2.QueryContext(purpose="confidentiality_review")),
            case_id="caseloads",
        )
    )
    assert [(r.accessor.user_id, r.action, r.rule) for r in log.refusals] == [
        (who.user_id, Action.READ_CASELOADS.value, "part-not-asked")
    ]


async def test_only_a_refusal_the_processor_states_is_taken_naming_no_case(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore
) -> None:
    cases = [
        (asked(CASELOADS, [], refused_by="ROLE_NOT_ALLOWED"), ["refused_by"]),
        (asked(CASELOADS, [], refused_by="part-not-asked"), ["refused_by"]),
        (asked(OVERDUE, [], refused_by="PART_NOT_ASKED " * 1000), ["refused_by"]),
        (asked(OVERDUE, ["case-a"], refused_by="PART_NOT_ASKED"), ["case_ids"]),
    ]
    for request, fields in cases:
        code, status = await refusal(audit.RecordCaseloadAccess(request))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, fields
        assert violated_fields(status) == fields
    assert await written(store) == []
