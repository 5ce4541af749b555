"""A case worker's command raced by the case's transfer to another worker (TransferCase): the
transfer commits right after the command's first look at the case (``carried_case``), or after
the decision read the case's stream, before the command records. The decision checks the worker
again on the case's stream as it records after it (the case's own append's expected version,
or the schedule's append guarded on the case's stream), so the previous worker is refused and
nothing is recorded, instead of acting once more on a case no longer theirs."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import pytest

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.assignment import CaseReassigned
from tests.unit.coordination.rpc import (
    AN_HOUR,
    HOME_CARE_CO,
    NEXT_WEEK,
    PT_CLINIC,
    assigned_case,
    case_commands,
    refused,
    usd,
)
from tests.unit.coordination.support import (
    IntakeFeed,
    TransferredOnceRead,
    command_context,
    timestamp,
    transferred,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

COMMANDS = (
    "MakeReferral",
    "ScheduleService",
    "RescheduleService",
    "CancelService",
    "RecordServiceDelivered",
    "DetermineEligibility",
    "FileInsuranceClaim",
    "RecordClaimDecision",
)


async def _carried_by_dana(stub: Stub, intake: IntakeFeed, claimed: bool) -> tuple[str, str, str]:
    """case-1 assigned to cm-dana, with a service already delivered (claimed when
    ``claimed``) and one still scheduled: their ids, and the claim's (empty when not
    ``claimed``)."""
    await assigned_case(stub, intake, "cm-dana", recipient=PT_CLINIC.provider_id)
    delivered, scheduled = [
        (
            await stub.ScheduleService(
                pb.ScheduleServiceRequest(
                    context=command_context("coordinator"),
                    case_id="case-1",
                    kind="home_care",
                    provider=HOME_CARE_CO,
                    starts_at=timestamp(NEXT_WEEK + days),
                    ends_at=timestamp(NEXT_WEEK + days + AN_HOUR),
                    location=pb.ServiceLocation(kind="client_home"),
                )
            )
        ).service_id
        for days in (timedelta(days=1), timedelta(days=2))
    ]
    took_place = NEXT_WEEK - timedelta(days=10)
    await stub.RecordServiceDelivered(
        pb.RecordServiceDeliveredRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            service_id=delivered,
            starts_at=timestamp(took_place),
            ends_at=timestamp(took_place + AN_HOUR),
        )
    )
    if not claimed:
        return delivered, scheduled, ""
    filed = await stub.FileInsuranceClaim(
        pb.FileInsuranceClaimRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            insurer=pb.Provider(provider_id="medicare", name="Medicare"),
            amount_claimed=usd(100),
            service_ids=[delivered],
        )
    )
    return delivered, scheduled, filed.claim_id


@pytest.mark.parametrize("reads", [0, 1, 2], ids=["no-race", "after-the-check", "after-the-read"])
@pytest.mark.parametrize("name", COMMANDS)
async def test_the_previous_worker_is_refused_once_the_case_is_transferred(
    stub: Stub,
    intake: IntakeFeed,
    store: SqliteEventStore,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    reads: int,
) -> None:
    delivered, scheduled, claim_id = await _carried_by_dana(
        stub, intake, claimed=name == "RecordClaimDecision"
    )
    service_id = delivered if name == "FileInsuranceClaim" else scheduled
    ask = case_commands(stub, service_id, claim_id)[name]
    before = await store.last_position()
    race = TransferredOnceRead(store, monkeypatch, "case-1", reads)

    call = ask(command_context("case_manager", user="cm-dana"), "case-1")

    if not reads:
        # The case's worker does it when nothing races (the command is a good one).
        assert await call
        return
    refusal = await refused(call)
    assert race.transferred
    assert (refusal.code, "not assigned to them" in refusal.message) == (
        grpc.StatusCode.PERMISSION_DENIED,
        True,
    )
    assert [r.event.event_type for r in await store.read_all(before)] == [CaseReassigned.event_type]


@pytest.mark.parametrize("name", COMMANDS)
async def test_a_retry_of_the_previous_worker_s_done_command_answers_as_the_first(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, name: str
) -> None:
    """cm-dana's command was done, then the case went to sw-lcsw: the same request retried
    under its key gets the first answer again (its answer may have been lost), not the
    refusal a new command of cm-dana's now gets; the key with another request is still
    refused as reused. The retry is looked up before the case's worker is checked."""
    delivered, scheduled, claim_id = await _carried_by_dana(
        stub, intake, claimed=name == "RecordClaimDecision"
    )
    service_id = delivered if name == "FileInsuranceClaim" else scheduled
    ask = case_commands(stub, service_id, claim_id)[name]

    def dana(key: str) -> common_pb2.CommandContext:
        return command_context("case_manager", key=key, user="cm-dana")

    first = await ask(dana(f"done-{name}"), "case-1")
    await transferred(store, "case-1")
    after = await store.last_position()

    assert await ask(dana(f"done-{name}"), "case-1") == first
    assert await store.read_all(after) == []  # nothing recorded again
    reused = await refused(ask(dana(f"done-{name}"), "case-2"))  # another request
    assert (reused.code, reused.rule) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "IDEMPOTENCY_KEY_REUSED",
    )
    refusal = await refused(ask(dana(f"new-{name}"), "case-1"))  # a new one is refused
    assert (refusal.code, "not assigned to them" in refusal.message) == (
        grpc.StatusCode.PERMISSION_DENIED,
        True,
    )
    assert await store.read_all(after) == []
