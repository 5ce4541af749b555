"""Work that does not conflict is never refused, however much of it arrives at once (issue 8).

Sixty calls at once, on each backend: contacts logged on one case (one stream: the store orders
them, every one is recorded), services booked at disjoint times for one client (one schedule
stream), and reads of one case's timeline (each records its own access, which no write may
abort). None may be answered ABORTED or refused in any other way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from cli.rpc import command, eventually, query
from cli.walk.story import AUDITOR, COORDINATOR
from tests.e2e.conftest import Casetrail
from tests.e2e.support import new_case, next_week, schedule
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")

AT_ONCE = 60


async def refusals(calls: list[Awaitable[Any]]) -> list[str]:
    """The status of every call that was not answered OK (empty when all were)."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    failed = []
    for outcome in outcomes:
        if isinstance(outcome, grpc.aio.AioRpcError):
            failed.append(f"{outcome.code().name}: {outcome.details()}")
        elif isinstance(outcome, BaseException):
            raise outcome
    return failed


async def test_sixty_contacts_logged_on_one_case_at_once_are_all_recorded(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "physical_therapy")
    view = pl.GetCaseViewRequest(context=query("coordination"), case_id=case.case_id)
    await eventually(
        lambda: stubs.as_(COORDINATOR).planning.GetCaseView(view),
        what="planning to learn the case",
        patience=casetrail.patience,
    )

    failed = await refusals(
        [
            stubs.as_(COORDINATOR).planning.LogContact(
                pl.LogContactRequest(
                    context=command(key()),
                    case_id=case.case_id,
                    kind="phone_call",
                    summary=f"call {number}",
                )
            )
            for number in range(AT_ONCE)
        ]
    )

    assert failed == []


async def test_sixty_disjoint_services_booked_for_one_client_at_once_are_all_booked(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "physical_therapy")
    monday = next_week(0)

    failed = await refusals(
        [
            stubs.as_(COORDINATOR).coordination.ScheduleService(
                schedule(case, "physical_therapy", monday + timedelta(hours=number))
            )
            for number in range(AT_ONCE)
        ]
    )

    assert failed == []


async def test_sixty_reads_of_one_timeline_at_once_are_all_answered(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "physical_therapy")
    request = audit_pb2.GetTimelineRequest(
        context=query("confidentiality_review"), case_id=case.case_id
    )
    await eventually(
        lambda: stubs.as_(AUDITOR).audit.GetTimeline(request),
        lambda page: len(page.entries) > 0,
        what="audit to learn the case",
        patience=casetrail.patience,
    )

    failed = await refusals([stubs.as_(AUDITOR).audit.GetTimeline(request) for _ in range(AT_ONCE)])

    assert failed == []
    log = await stubs.as_(AUDITOR).audit.GetAccessLog(
        audit_pb2.GetAccessLogRequest(context=query("confidentiality_review"), case_id=case.case_id)
    )
    assert len(log.records) >= AT_ONCE + 1
