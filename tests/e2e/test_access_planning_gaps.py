"""Planning's reads through the gRPC APIs, as audit records them: a list shows no more than it
records, its filters disclose nothing the answer withholds, every refusal of a list is on the
record, a refused role cannot tell which cases exist, and repeated goal ids are refused at the
edge naming the field, without the notes sent."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from cli.rpc import Person, command, eventually, not_known_yet, query, refused
from cli.walk.story import (
    AUDITOR,
    CASE_MANAGER_ID,
    COORDINATOR,
    INTAKE_WORKER,
    RECEPTIONIST,
    SOCIAL_WORKER,
)
from services.planning.app.queries import CASE_LIST
from tests.e2e.conftest import Casetrail
from tests.e2e.support import Case, new_case
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")

SUMMARY_SECTIONS = frozenset(
    {
        "identity",
        "assessment",
        "assignment",
        "contacts",
        "referrals",
        "services",
        "discharge",
    }
)


async def known_to_planning(casetrail: Casetrail, case: Case) -> None:
    view = pl.GetCaseViewRequest(context=query("confidentiality_review"), case_id=case.case_id)
    await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).planning.GetCaseView(view),
        what="planning to learn the case",
        patience=casetrail.patience,
        retry=not_known_yet,
    )


async def access_log(
    casetrail: Casetrail,
    case_id: str,
    ready: Callable[[audit_pb2.GetAccessLogResponse], bool],
    what: str,
) -> audit_pb2.GetAccessLogResponse:
    """The access log of ``case_id`` (a case, or the id a refused list is recorded under) once
    ``ready`` holds of it."""
    request = audit_pb2.GetAccessLogRequest(
        context=query("confidentiality_review"), case_id=case_id, page_size=1000
    )
    log: audit_pb2.GetAccessLogResponse = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetAccessLog(request),
        ready,
        what=what,
        patience=casetrail.patience,
    )
    return log


def since(moment: datetime, who: Person, entries: list[audit_pb2.AccessRefusal]) -> list[str]:
    """The rules of ``who``'s refusals from ``moment`` on."""
    return [
        entry.rule
        for entry in entries
        if entry.accessor.user_id == who.user_id
        and entry.occurred_at.ToDatetime(tzinfo=UTC) >= moment
    ]


async def test_a_sensitive_need_filter_is_refused_to_a_coordinator_and_recorded(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "substance_use", "housing")
    await known_to_planning(casetrail, case)
    started = datetime.now(UTC)

    refusal = await refused(
        casetrail.stubs.as_(COORDINATOR).planning.ListCases(
            pl.ListCasesRequest(context=query("coordination"), need="substance_use")
        )
    )

    assert refusal.code == grpc.StatusCode.PERMISSION_DENIED
    assert refusal.reason == "SENSITIVE_FILTER_NOT_PERMITTED"
    log = await access_log(
        casetrail,
        CASE_LIST,
        lambda answer: bool(since(started, COORDINATOR, list(answer.refusals))),
        "audit to learn of the refused list",
    )
    assert since(started, COORDINATOR, list(log.refusals)) == ["sensitive-filter-not-permitted"]


async def test_a_listed_case_is_recorded_with_every_section_its_summary_shows(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "housing")
    await known_to_planning(casetrail, case)
    await casetrail.stubs.as_(COORDINATOR).planning.LogContact(
        pl.LogContactRequest(
            context=command(key()),
            case_id=case.case_id,
            kind="phone_call",
            summary="Called about the flat",
            next_follow_up_due="2099-01-01",
        )
    )
    started = datetime.now(UTC)
    overdue = pl.ListCasesRequest(
        context=query("coordination"), overdue_before="2100-01-01", page_size=1000
    )

    answer = await eventually(
        lambda: casetrail.stubs.as_(COORDINATOR).planning.ListCases(overdue),
        lambda found: any(summary.case_id == case.case_id for summary in found.cases),
        what="planning to learn the follow-up",
        patience=casetrail.patience,
    )

    [summary] = [summary for summary in answer.cases if summary.case_id == case.case_id]
    assert summary.next_follow_up_due == "2099-01-01"

    def listed(log: audit_pb2.GetAccessLogResponse) -> list[audit_pb2.AccessRecord]:
        return [
            record
            for record in log.records
            if record.accessor.user_id == COORDINATOR.user_id
            and record.occurred_at.ToDatetime(tzinfo=UTC) >= started
        ]

    log = await access_log(
        casetrail, case.case_id, lambda found: bool(listed(found)), "audit to learn of the list"
    )
    assert {frozenset(record.sections) for record in listed(log)} == {SUMMARY_SECTIONS}


async def test_every_refused_list_is_recorded(casetrail: Casetrail) -> None:
    stubs = casetrail.stubs
    started = datetime.now(UTC)

    front_desk = await refused(
        stubs.as_(RECEPTIONIST).planning.ListCases(
            pl.ListCasesRequest(context=query("direct_care"))
        )
    )
    another_workers = await refused(
        stubs.as_(SOCIAL_WORKER).planning.ListCases(
            pl.ListCasesRequest(context=query("direct_care"), worker_id=CASE_MANAGER_ID)
        )
    )

    assert front_desk.code == another_workers.code == grpc.StatusCode.PERMISSION_DENIED
    assert (front_desk.reason, another_workers.reason) == ("ROLE_NOT_ALLOWED", "NO_RELATIONSHIP")
    log = await access_log(
        casetrail,
        CASE_LIST,
        lambda answer: bool(
            since(started, RECEPTIONIST, list(answer.refusals))
            and since(started, SOCIAL_WORKER, list(answer.refusals))
        ),
        "audit to learn of the refused lists",
    )
    assert since(started, RECEPTIONIST, list(log.refusals)) == ["role-not-allowed"]
    assert since(started, SOCIAL_WORKER, list(log.refusals)) == ["no-relationship"]
    # An intake worker lists as the policy lets them: the agency's cases, no sensitive needs.
    seen = await stubs.as_(INTAKE_WORKER).planning.ListCases(
        pl.ListCasesRequest(context=query("direct_care"), page_size=1000)
    )
    assert not {need for summary in seen.cases for need in summary.needs} & {
        "substance_use",
        "mental_health",
        "health",
        "domestic_violence",
    }


async def test_a_refused_role_gets_the_same_answer_for_a_real_and_an_unknown_case(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "housing")
    await known_to_planning(casetrail, case)
    front_desk = casetrail.stubs.as_(RECEPTIONIST).planning

    answers = [
        await refused(
            front_desk.GetCaseView(
                pl.GetCaseViewRequest(context=query("direct_care"), case_id=case_id)
            )
        )
        for case_id in (case.case_id, f"case-{uuid.uuid4().hex}")
    ]

    assert [(answer.code, answer.reason) for answer in answers] == [
        (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    ] * 2


async def test_goal_ids_repeated_but_for_whitespace_are_refused_naming_the_field(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "substance_use")
    note = "heroin relapse at the weekend"

    refusal = await refused(
        casetrail.stubs.as_(COORDINATOR).planning.EvaluateProgress(
            pl.EvaluateProgressRequest(
                context=command(key()),
                case_id=case.case_id,
                goal_progress=[
                    pl.GoalProgress(goal_id=goal_id, rating="on_track", note=note)
                    for goal_id in ("g1", "g1 ")
                ],
            )
        )
    )

    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal.message.startswith("goal_progress[1].goal_id: repeats goal_progress[0]")
    assert "heroin" not in refusal.message
