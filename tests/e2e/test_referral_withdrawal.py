"""A referral nobody answers no longer holds a case open for ever: the agency withdraws it, the
partner's access ends, planning closes the case, audit keeps the withdrawal and the disclosure.
And a closure that beat the bus to a referral withdraws it when it reaches coordination."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.planning.v1 import planning_pb2 as pl
from cli.rpc import (
    Refusal,
    command,
    eventually,
    not_known_yet,
    query,
    refusal_of,
    refused,
    timestamp,
)
from cli.walk.story import AUDITOR, COORDINATOR, HOME_CARE
from tests.e2e.conftest import Casetrail
from tests.e2e.support import (
    PARTNER,
    Case,
    consent,
    home_care_referral,
    learning,
    new_case,
    referred_and_accepted,
)
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")

REVIEW = "confidentiality_review"


async def _timeline(
    casetrail: Casetrail, case: Case, ready: Callable[[audit_pb2.TimelineEntry], bool]
) -> audit_pb2.GetTimelineResponse:
    request = audit_pb2.GetTimelineRequest(context=query(REVIEW), case_id=case.case_id)
    answer: audit_pb2.GetTimelineResponse = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetTimeline(request),
        lambda found: any(ready(e) for e in found.entries),
        what="audit to learn of the withdrawal",
        patience=casetrail.patience,
    )
    return answer


def _withdrawal(by: str) -> Callable[[audit_pb2.TimelineEntry], bool]:
    return lambda e: e.event_type == "casetrail.referral.withdrawn" and e.actor.role == by


async def _refused_eventually(
    casetrail: Casetrail, call: Callable[[], Awaitable[object]]
) -> Refusal:
    """The refusal ``call`` meets once a fact that travels over the bus has arrived."""
    deadline = time.monotonic() + casetrail.patience
    while True:
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            return refusal_of(error)
        assert time.monotonic() < deadline, "still answered"
        await asyncio.sleep(0.05)


async def test_a_withdrawn_referral_ends_the_partners_access_and_frees_the_closure(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    started = datetime.now(UTC) - timedelta(minutes=1)
    case = await new_case(casetrail, "home_care")
    await consent(casetrail, case, PARTNER)
    referral_id = await referred_and_accepted(casetrail, case)
    partner_read = co.GetCaseCoordinationRequest(
        context=query("coordination"), case_id=case.case_id
    )
    await eventually(
        lambda: stubs.as_(HOME_CARE).coordination.GetCaseCoordination(partner_read),
        what="the partner's referral to be known",
        patience=casetrail.patience,
        retry=learning,
    )
    view = pl.GetCaseViewRequest(context=query("coordination"), case_id=case.case_id)
    await eventually(
        lambda: stubs.as_(COORDINATOR).planning.GetCaseView(view),
        lambda found: [r.status for r in found.referrals] == ["accepted"],
        what="planning to learn of the referral",
        patience=casetrail.patience,
    )
    close = pl.CloseCaseRequest(context=command(key()), case_id=case.case_id, reason="other")
    held = await refused(stubs.as_(COORDINATOR).planning.CloseCase(close))
    assert (held.code, held.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REFERRALS_STILL_RUNNING",
    )

    # The partner may not withdraw what it was sent; the agency's coordinator does.
    withdraw = co.WithdrawReferralRequest(
        context=command(key()),
        case_id=case.case_id,
        referral_id=referral_id,
        reason="Her daughter moved in and helps her in the mornings",
    )
    denied = await refused(stubs.as_(HOME_CARE).coordination.WithdrawReferral(withdraw))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    # The reason is sealed: the erasure marker is no reason (it would read as erased).
    marker = co.WithdrawReferralRequest()
    marker.CopyFrom(withdraw)
    marker.context.idempotency_key = key()
    marker.reason = "[erased]"
    erased = await refused(stubs.as_(COORDINATOR).coordination.WithdrawReferral(marker))
    assert erased.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in erased.details(error_details_pb2.BadRequest)[0].field_violations] == [
        "reason"
    ]
    withdrawn = await stubs.as_(COORDINATOR).coordination.WithdrawReferral(withdraw)
    assert len(withdrawn.result.event_ids) == 1
    again = await stubs.as_(COORDINATOR).coordination.WithdrawReferral(withdraw)
    assert again.result == withdrawn.result, "a retry returns the first result"

    # The partner's part in the case has ended.
    ended = await _refused_eventually(
        casetrail, lambda: stubs.as_(HOME_CARE).coordination.GetCaseCoordination(partner_read)
    )
    assert ended.code == grpc.StatusCode.PERMISSION_DENIED

    await eventually(
        lambda: stubs.as_(COORDINATOR).planning.GetCaseView(view),
        lambda found: [r.status for r in found.referrals] == ["withdrawn"],
        what="planning to learn of the withdrawal",
        patience=casetrail.patience,
    )
    close.context.idempotency_key = key()
    closed = await stubs.as_(COORDINATOR).planning.CloseCase(close)
    assert closed.result.case_id == case.case_id

    timeline = await _timeline(casetrail, case, _withdrawal("coordinator"))
    (entry,) = [e for e in timeline.entries if e.event_type == "casetrail.referral.withdrawn"]
    assert (entry.actor.user_id, entry.actor.role) == (COORDINATOR.user_id, "coordinator")
    assert referral_id in entry.summary
    assert "daughter" not in str(entry), "the reason is sealed, never summarised"
    # The disclosure the referral made stays in the accounting.
    accounting = await stubs.as_(AUDITOR).audit.ListDisclosures(
        audit_pb2.ListDisclosuresRequest(
            context=query(REVIEW), client_id=case.client_id, period_start=timestamp(started)
        )
    )
    made = [d for d in accounting.disclosures if d.event_type == "casetrail.referral.made"]
    assert [d.recipient.recipient_id for d in made] == [PARTNER]


async def test_a_closure_that_beat_the_bus_to_a_referral_withdraws_it(
    casetrail: Casetrail,
) -> None:
    # A referral made right after planning closed the case: coordination may accept it before
    # the closure reaches it over the bus. Whichever way they cross, no referral runs on the
    # closed case once the closure has reached coordination.
    for _ in range(3):
        await _referral_after_closure(casetrail)


async def _referral_after_closure(casetrail: Casetrail) -> None:
    stubs = casetrail.stubs
    coordinator = stubs.as_(COORDINATOR).coordination
    case = await new_case(casetrail, "home_care")
    await consent(casetrail, case, PARTNER)
    # A first referral, once coordination knows the consent; withdrawn, so that planning
    # (once it knows) has nothing running to hold the closure.
    first = await eventually(
        lambda: coordinator.MakeReferral(home_care_referral(case)),
        what="coordination to learn the case",
        patience=casetrail.patience,
        retry=not_known_yet,
    )
    await coordinator.WithdrawReferral(
        co.WithdrawReferralRequest(
            context=command(key()),
            case_id=case.case_id,
            referral_id=first.referral_id,
            reason="Made to the wrong service",
        )
    )
    view = pl.GetCaseViewRequest(context=query("coordination"), case_id=case.case_id)
    await eventually(
        lambda: stubs.as_(COORDINATOR).planning.GetCaseView(view),
        lambda found: [r.status for r in found.referrals] == ["withdrawn"],
        what="planning to learn of the withdrawal",
        patience=casetrail.patience,
    )
    close = pl.CloseCaseRequest(context=command(key()), case_id=case.case_id, reason="other")
    await stubs.as_(COORDINATOR).planning.CloseCase(close)
    try:
        late = await coordinator.MakeReferral(home_care_referral(case))
    except grpc.aio.AioRpcError as error:
        refusal = refusal_of(error)
        if (refusal.code, refusal.reason) != (
            grpc.StatusCode.FAILED_PRECONDITION,
            "CASE_CLOSED",
        ):
            raise
        return  # coordination already knew of the closure
    everything = co.GetCaseCoordinationRequest(context=query(REVIEW), case_id=case.case_id)
    seen = await eventually(
        lambda: stubs.as_(AUDITOR).coordination.GetCaseCoordination(everything),
        lambda found: all(r.status == "withdrawn" for r in found.referrals),
        what="the closure to withdraw the late referral",
        patience=casetrail.patience,
    )
    assert seen.closed
    assert late.referral_id in {r.referral_id for r in seen.referrals}
    timeline = await _timeline(casetrail, case, _withdrawal("system"))
    closure = next(e for e in timeline.entries if e.event_type == "casetrail.case.closed")
    (by_closure,) = [e for e in timeline.entries if _withdrawal("system")(e)]
    assert by_closure.causation_id == closure.event_id
    assert late.referral_id in by_closure.summary
