"""Retries return the first result and write nothing; races keep every rule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.values import NeedCategory
from tests.unit.coordination.rpc import HOME_CARE_CO, assign, refused, schedule_request, usd
from tests.unit.coordination.support import IntakeFeed, carried_by, command_context

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

AT = datetime(2026, 3, 4, 14, 0, tzinfo=UTC)


async def test_a_retried_assignment_returns_the_first_result(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    first = await assign(stub, "case-1", "cm-dana", key="assign-1")
    position = await store.last_position()
    again = await assign(stub, "case-1", "cm-dana", key="assign-1")
    assert again == first
    # No second assignment; the answer's needs are shown again, so that showing is recorded.
    written = await store.read_all(after_position=position)
    assert [e.event_type for e in written] == ["casetrail.record.accessed"]


async def test_a_retried_schedule_is_not_taken_for_a_clash_with_itself(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.PHYSICAL_THERAPY])
    await carried_by(store, "case-1")
    request = schedule_request("case-1", "physical_therapy", AT, key="pt-tuesday")
    first = await stub.ScheduleService(request)
    position = await store.last_position()
    again = await stub.ScheduleService(request)
    assert (again.service_id, again.result) == (first.service_id, first.result)
    assert await store.last_position() == position
    # The same key from another user is another command, and this one clashes.
    other = schedule_request(
        "case-1", "physical_therapy", AT, key="pt-tuesday", user="u-2", role="coordinator"
    )
    assert (await refused(stub.ScheduleService(other))).rule == "SCHEDULE_CONFLICT"


async def test_a_retried_reservation_survives_a_line_that_filled_up(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1")
    care = await stub.ScheduleService(
        schedule_request("case-1", "home_care", AT, provider=HOME_CARE_CO)
    )

    def reserve(cents: int, key: str) -> pb.ReserveBudgetRequest:
        return pb.ReserveBudgetRequest(
            context=command_context("coordinator", key),
            case_id="case-1",
            budget_line="home-care-fy2026",
            amount=usd(cents),
            service_id=care.service_id,
        )

    first = await stub.ReserveBudget(reserve(60_000, "r-1"))
    await stub.ReserveBudget(reserve(40_000, "r-2"))
    again = await stub.ReserveBudget(reserve(60_000, "r-1"))
    assert (again.reservation_id, again.result) == (first.reservation_id, first.result)


async def test_a_stale_expected_version_is_aborted(stub: Stub, intake: IntakeFeed) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await assign(stub, "case-1", "cm-dana")
    context = command_context("coordinator")
    context.expected_version = 7
    refusal = await refused(
        stub.TransferCase(
            pb.TransferCaseRequest(
                context=context, case_id="case-1", worker_id="sw-lcsw", reason="leave"
            )
        )
    )
    assert refusal.code is grpc.StatusCode.ABORTED


async def test_concurrent_schedulers_never_double_book_the_client(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.PHYSICAL_THERAPY])
    await intake.open_case("case-2", "client-1", [NeedCategory.COUNSELING])
    await carried_by(store, "case-1")
    await carried_by(store, "case-2")
    calls = [
        stub.ScheduleService(schedule_request(f"case-{1 + i % 2}", "counseling", AT))
        for i in range(8)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    booked = [o for o in outcomes if isinstance(o, pb.ScheduleServiceResponse)]
    clashes = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(booked) == 1
    assert {e.code() for e in clashes} == {grpc.StatusCode.FAILED_PRECONDITION}


async def test_concurrent_assignments_never_overfill_a_caseload(
    stub: Stub, intake: IntakeFeed
) -> None:
    for case_id in ("case-1", "case-2", "case-3"):
        await intake.open_case(case_id, f"client-{case_id}", [NeedCategory.HOME_CARE])
    outcomes = await asyncio.gather(
        *(assign(stub, case_id, "cm-dana") for case_id in ("case-1", "case-2", "case-3")),
        return_exceptions=True,
    )
    assert sum(isinstance(o, pb.AssignCaseResponse) for o in outcomes) == 1
