"""A client's schedule is a bounded answer (``SCHEDULE_LISTED``, ``truncated``), through the
real gRPC server: the services still scheduled come first, then the latest past ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.values import NeedCategory
from services.coordination.entrypoints import convert
from tests.unit.coordination.rpc import COUNSELING_CENTRE, booked_and_cancelled, schedule_request
from tests.unit.coordination.support import IntakeFeed, carried_by, query_context

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


async def test_the_schedule_lists_at_most_its_cap_and_says_so(
    stub: Stub, intake: IntakeFeed, monkeypatch: pytest.MonkeyPatch, store: SqliteEventStore
) -> None:
    ids = await booked_and_cancelled(stub, intake, store)
    monkeypatch.setattr(convert, "SCHEDULE_LISTED", 3)

    def schedule(include_past: bool) -> pb.GetClientScheduleRequest:
        return pb.GetClientScheduleRequest(
            context=query_context(), client_id="client-1", include_past=include_past
        )

    everything = await stub.GetClientSchedule(schedule(True))
    # Both still scheduled, then the latest cancelled one; in start order.
    assert [s.service_id for s in everything.services] == [ids[1], ids[2], ids[3]]
    assert everything.truncated

    upcoming = await stub.GetClientSchedule(schedule(False))
    assert [s.service_id for s in upcoming.services] == [ids[1], ids[3]]
    assert not upcoming.truncated

    monkeypatch.setattr(convert, "SCHEDULE_LISTED", 4)
    whole = await stub.GetClientSchedule(schedule(True))
    assert [s.service_id for s in whole.services] == ids
    assert not whole.truncated


async def test_the_schedule_is_cut_among_what_the_caller_may_read(
    stub: Stub, intake: IntakeFeed, monkeypatch: pytest.MonkeyPatch, store: SqliteEventStore
) -> None:
    """The cut ranked the special-data services too, which release then withheld from a
    caller not entitled to them: fewer services than the cap, said truncated, told that a
    service was withheld."""
    await intake.open_case("case-1", "client-1", [NeedCategory.SUBSTANCE_USE])
    await carried_by(store, "case-1")
    await stub.ScheduleService(
        schedule_request("case-1", "addiction_counseling", MONDAY_10, provider=COUNSELING_CENTRE)
    )
    for day in (1, 2):
        await stub.ScheduleService(
            schedule_request("case-1", "home_care", MONDAY_10 + timedelta(days=day))
        )
    monkeypatch.setattr(convert, "SCHEDULE_LISTED", 2)
    request = pb.GetClientScheduleRequest(context=query_context(), client_id="client-1")

    seen = await stub.GetClientSchedule(request)  # a coordinator: no addiction counseling
    assert [s.kind for s in seen.services] == ["home_care", "home_care"]
    assert not seen.truncated
    audited = await stub.GetClientSchedule(
        pb.GetClientScheduleRequest(
            context=query_context("auditor", "confidentiality_review"), client_id="client-1"
        )
    )
    assert [s.kind for s in audited.services] == ["addiction_counseling", "home_care"]
    assert audited.truncated


def _service(service_id: str, case_id: str, day: int, status: str) -> pb.ScheduledService:
    service = pb.ScheduledService(service_id=service_id, case_id=case_id, status=status)
    service.starts_at.FromDatetime(MONDAY_10 + timedelta(days=day))
    return service


def test_the_cut_ranks_services_across_the_cases_parts() -> None:
    first = pb.GetClientScheduleResponse(
        services=[_service("a", "case-1", 0, "delivered"), _service("b", "case-1", 9, "scheduled")]
    )
    second = pb.GetClientScheduleResponse(
        services=[_service("c", "case-2", 5, "cancelled"), _service("d", "case-2", 7, "scheduled")]
    )

    assert convert.cut_schedule([first, second], 3)

    assert [s.service_id for s in first.services] == ["b"]
    assert [s.service_id for s in second.services] == ["c", "d"]
    assert not convert.cut_schedule([first, second], 3)


def test_the_cut_keeps_the_schedule_within_its_bytes_too() -> None:
    """SCHEDULE_LISTED alone let 1,000 services with 500 four-byte characters in their
    provider's name and address take 4.4 MB, past gRPC's 4 MiB answer."""
    name = "\N{GRINNING FACE}" * 500
    services = []
    for day in range(1200):
        service = _service(f"s{day}", "case-1", day % 300, "delivered")
        service.provider.CopyFrom(pb.Provider(provider_id="p", name=name))
        service.location.CopyFrom(pb.ServiceLocation(kind="provider_site", address=name))
        services.append(service)
    part = pb.GetClientScheduleResponse(services=services)

    assert convert.cut_schedule([part])
    assert len(part.services) < convert.SCHEDULE_LISTED
    assert part.ByteSize() <= convert.CASE_SERVICES.size + 4 * len(part.services)
