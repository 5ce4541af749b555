"""A command's stated moment (``context.occurred_at``) is not before the event it follows:
audit's state of the case as it happened folds by the moments stated, and a referral accepted
before it was made, a service cancelled before it was booked, a case transferred before its
assignment would read there as never having happened. The same moment is in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.cases import CaseReopened
from events.catalog.values import NeedCategory
from tests.unit.coordination.rpc import (
    AN_HOUR,
    COUNSELING_CENTRE,
    NEXT_WEEK,
    PT_CLINIC,
    assign,
    refer,
    refused,
    schedule_request,
    usd,
)
from tests.unit.coordination.support import (
    OPENED,
    TODAY,
    IntakeFeed,
    command_context,
    timestamp,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

EARLIER = TODAY - timedelta(seconds=1)
"""A moment after the case's opening, just before the commands under test follow (TODAY)."""


def _dated(request: Any, at: datetime) -> Any:
    request.context.occurred_at.CopyFrom(timestamp(at))
    return request


async def _refused_as_dated_before(
    store: SqliteEventStore, call: Any, stream: str, what: str
) -> None:
    """``call`` is refused naming ``context.occurred_at`` and ``what`` it came before, and
    writes nothing to ``stream``."""
    before = await store.read_stream(stream)
    refusal = await refused(call)
    assert (refusal.code, refusal.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["context.occurred_at"],
    )
    assert f"{what} ({TODAY.isoformat()})" in refusal.message
    assert await store.read_stream(stream) == before


def _answer(kind: str, referral_id: str, at: datetime, **fields: str) -> Any:
    request_type = {
        "accept": pb.AcceptReferralRequest,
        "decline": pb.DeclineReferralRequest,
        "complete": pb.CompleteReferralRequest,
    }[kind]
    return request_type(
        context=command_context("partner_agency", at=at, agency=COUNSELING_CENTRE.provider_id),
        case_id="case-1",
        referral_id=referral_id,
        provider_id=COUNSELING_CENTRE.provider_id,
        **fields,
    )


def _withdrawal(referral_id: str, at: datetime) -> pb.WithdrawReferralRequest:
    return pb.WithdrawReferralRequest(
        context=command_context("coordinator", at=at),
        case_id="case-1",
        referral_id=referral_id,
        reason="client moved in with her daughter",
    )


async def test_a_referral_is_answered_and_withdrawn_not_before_its_last_event(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING], at=OPENED)
    await intake.consent("case-1", "client-1")
    made = (await refer(stub, "case-1", "counseling")).referral_id  # at TODAY
    stream = "case-case-1"
    for early in (
        stub.AcceptReferral(_answer("accept", made, EARLIER)),
        stub.DeclineReferral(_answer("decline", made, EARLIER, reason="no capacity")),
        stub.WithdrawReferral(_withdrawal(made, EARLIER)),
    ):
        await _refused_as_dated_before(store, early, stream, f"referral {made} was made")
    await stub.AcceptReferral(_answer("accept", made, TODAY))

    complete = _answer("complete", made, EARLIER, outcome="two sessions")
    await _refused_as_dated_before(
        store, stub.CompleteReferral(complete), stream, f"referral {made} was accepted"
    )
    await _refused_as_dated_before(
        store,
        stub.WithdrawReferral(_withdrawal(made, EARLIER)),
        stream,
        f"referral {made} was accepted",
    )
    await stub.WithdrawReferral(_withdrawal(made, TODAY))


async def test_a_service_is_booked_from_a_referral_not_before_it_was_made(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """Dated before the referral, the history by the moments stated would hold a service
    booked from a referral not yet made, for its provider to give."""
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING], at=OPENED)
    await intake.consent("case-1", "client-1")
    made = (await refer(stub, "case-1", "counseling")).referral_id  # at TODAY

    def booking(at: datetime) -> pb.ScheduleServiceRequest:
        request = schedule_request(
            "case-1",
            "counseling",
            NEXT_WEEK,
            provider=COUNSELING_CENTRE,
            role="coordinator",
            referral_id=made,
        )
        return _dated(request, at)  # type: ignore[no-any-return]

    await _refused_as_dated_before(
        store,
        stub.ScheduleService(booking(EARLIER)),
        "schedule-client-1",
        f"referral {made} was made",
    )
    await stub.ScheduleService(booking(TODAY))


async def test_a_pending_referral_is_declined_at_the_moment_it_was_made(
    stub: Stub, intake: IntakeFeed
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING], at=OPENED)
    await intake.consent("case-1", "client-1")
    made = (await refer(stub, "case-1", "counseling")).referral_id
    await stub.DeclineReferral(_answer("decline", made, TODAY, reason="no capacity"))


def _move(service_id: str, to: datetime, at: datetime) -> pb.RescheduleServiceRequest:
    return pb.RescheduleServiceRequest(
        context=command_context("coordinator", at=at),
        case_id="case-1",
        service_id=service_id,
        starts_at=timestamp(to),
        ends_at=timestamp(to + timedelta(hours=1)),
        reason="therapist unavailable",
    )


def _cancel(service_id: str, at: datetime) -> pb.CancelServiceRequest:
    return pb.CancelServiceRequest(
        context=command_context("coordinator", at=at),
        case_id="case-1",
        service_id=service_id,
        cancelled_by="agency",
        reason="no longer needed",
    )


def _delivered(service_id: str, starts_at: datetime, at: datetime) -> Any:
    return pb.RecordServiceDeliveredRequest(
        context=command_context("partner_agency", at=at, agency=PT_CLINIC.provider_id),
        case_id="case-1",
        service_id=service_id,
        starts_at=timestamp(starts_at),
        ends_at=timestamp(starts_at + timedelta(minutes=50)),
    )


async def test_a_service_changes_not_before_it_was_scheduled_or_last_moved(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.PHYSICAL_THERAPY], at=OPENED)
    slot = OPENED + timedelta(hours=2)
    booked = await stub.ScheduleService(
        _dated(schedule_request("case-1", "physical_therapy", slot, role="coordinator"), TODAY)
    )
    service = booked.service_id
    stream = "schedule-client-1"
    scheduled = f"service {service} was scheduled"
    moved = slot + timedelta(hours=2)
    for early in (
        stub.RescheduleService(_move(service, moved, EARLIER)),
        stub.CancelService(_cancel(service, EARLIER)),
        stub.RecordServiceDelivered(_delivered(service, slot, EARLIER)),
    ):
        await _refused_as_dated_before(store, early, stream, scheduled)
    await stub.RescheduleService(_move(service, moved, TODAY))

    last_moved = f"service {service} was last moved"
    await _refused_as_dated_before(
        store, stub.CancelService(_cancel(service, EARLIER)), stream, last_moved
    )
    await _refused_as_dated_before(
        store, stub.RecordServiceDelivered(_delivered(service, moved, EARLIER)), stream, last_moved
    )
    await stub.RecordServiceDelivered(_delivered(service, moved, TODAY))


async def test_a_service_is_cancelled_at_the_moment_it_was_scheduled(
    stub: Stub, intake: IntakeFeed
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.PHYSICAL_THERAPY], at=OPENED)
    slot = OPENED + timedelta(hours=2)
    booked = await stub.ScheduleService(
        schedule_request("case-1", "physical_therapy", slot, role="coordinator")
    )
    await stub.CancelService(_cancel(booked.service_id, TODAY))


def _transfer(worker_id: str, at: datetime) -> pb.TransferCaseRequest:
    return pb.TransferCaseRequest(
        context=command_context("coordinator", at=at),
        case_id="case-1",
        worker_id=worker_id,
        reason="caseload balancing",
    )


async def test_a_case_is_transferred_not_before_its_current_assignment(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE], at=OPENED)
    await assign(stub, "case-1", "cm-dana", at=TODAY)
    given = "case case-1 was given to its current worker"
    await _refused_as_dated_before(
        store, stub.TransferCase(_transfer("sw-lcsw", EARLIER)), "case-case-1", given
    )
    transferred = await stub.TransferCase(_transfer("sw-lcsw", TODAY))
    assert transferred.previous_worker_id == "cm-dana"
    # The transfer is now the assignment a next one follows.
    await _refused_as_dated_before(
        store, stub.TransferCase(_transfer("cm-dana", EARLIER)), "case-case-1", given
    )


def _claim_decision(claim_id: str, at: datetime) -> pb.RecordClaimDecisionRequest:
    return pb.RecordClaimDecisionRequest(
        context=command_context("coordinator", at=at),
        case_id="case-1",
        claim_id=claim_id,
        insurer_id="medicare",
        decision="approved",
        amount_approved=usd(10_000),
    )


async def test_a_claim_is_decided_not_before_it_was_filed_nor_the_case_opened(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.PHYSICAL_THERAPY], at=OPENED)
    slot = OPENED + timedelta(hours=2)
    booked = await stub.ScheduleService(
        schedule_request("case-1", "physical_therapy", slot, role="coordinator")
    )
    await stub.RecordServiceDelivered(_delivered(booked.service_id, slot, TODAY))
    filed = await stub.FileInsuranceClaim(
        pb.FileInsuranceClaimRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            insurer=pb.Provider(provider_id="medicare", name="Medicare"),
            amount_claimed=usd(10_000),
            service_ids=[booked.service_id],
        )
    )
    stream = "case-case-1"
    await _refused_as_dated_before(
        store,
        stub.RecordClaimDecision(_claim_decision(filed.claim_id, EARLIER)),
        stream,
        f"claim {filed.claim_id} was filed",
    )
    before_the_case = await refused(
        stub.RecordClaimDecision(_claim_decision(filed.claim_id, datetime(1975, 1, 1, tzinfo=UTC)))
    )
    assert before_the_case.fields == ["context.occurred_at"]
    assert "case case-1 was opened" in before_the_case.message
    await stub.RecordClaimDecision(_claim_decision(filed.claim_id, TODAY))


def _claim(service_id: str, at: datetime) -> pb.FileInsuranceClaimRequest:
    return pb.FileInsuranceClaimRequest(
        context=command_context("coordinator", at=at),
        case_id="case-1",
        insurer=pb.Provider(provider_id="medicare", name="Medicare"),
        amount_claimed=usd(10_000),
        service_ids=[service_id],
    )


async def test_a_claim_is_filed_not_before_the_delivery_it_claims(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """Insurers pay for care given: a claim dated before the delivery it claims was recorded
    would show, as of that moment, a claim for a service still only scheduled."""
    await intake.open_case("case-1", "client-1", [NeedCategory.PHYSICAL_THERAPY], at=OPENED)
    slot = OPENED + timedelta(hours=2)
    booked = await stub.ScheduleService(
        _dated(schedule_request("case-1", "physical_therapy", slot, role="coordinator"), slot)
    )
    service = booked.service_id
    await stub.RecordServiceDelivered(_delivered(service, slot, TODAY))
    await _refused_as_dated_before(
        store,
        stub.FileInsuranceClaim(_claim(service, EARLIER)),
        "case-case-1",
        f"service {service} was delivered",
    )
    await stub.FileInsuranceClaim(_claim(service, TODAY))


async def test_a_claim_is_filed_not_before_the_denial_that_freed_its_service(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """A denied claim frees its services for another claim from its denial on: dated before,
    the history by the moments stated would hold two claims covering one service at once,
    which SERVICE_ALREADY_CLAIMED refuses."""
    await intake.open_case("case-1", "client-1", [NeedCategory.PHYSICAL_THERAPY], at=OPENED)
    slot = OPENED + timedelta(hours=2)
    booked = await stub.ScheduleService(
        _dated(schedule_request("case-1", "physical_therapy", slot, role="coordinator"), slot)
    )
    service = booked.service_id
    await stub.RecordServiceDelivered(_delivered(service, slot, slot + AN_HOUR))
    first = await stub.FileInsuranceClaim(_claim(service, slot + 2 * AN_HOUR))
    denial = _claim_decision(first.claim_id, TODAY)
    denial.decision, denial.reason = "denied", "not covered by the policy"
    denial.amount_approved.CopyFrom(usd(0))
    await stub.RecordClaimDecision(denial)
    await _refused_as_dated_before(
        store,
        stub.FileInsuranceClaim(_claim(service, EARLIER)),
        "case-case-1",
        f"claim {first.claim_id} was denied",
    )
    await stub.FileInsuranceClaim(_claim(service, TODAY))


def _release(reservation_id: str, at: datetime) -> pb.ReleaseBudgetRequest:
    return pb.ReleaseBudgetRequest(
        context=command_context("coordinator", at=at),
        case_id="case-1",
        budget_line="flex",
        reservation_id=reservation_id,
        reason="not needed",
    )


async def test_a_reservation_is_released_not_before_it_was_made_nor_the_case_opened(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE], at=OPENED)
    reserved = await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="flex",
            amount=usd(1_000),
        )
    )
    made = reserved.reservation_id
    stream = "budget-flex"
    await _refused_as_dated_before(
        store, stub.ReleaseBudget(_release(made, EARLIER)), stream, f"reservation {made} was made"
    )
    before_the_case = await refused(
        stub.ReleaseBudget(_release(made, datetime(1975, 1, 1, tzinfo=UTC)))
    )
    assert before_the_case.fields == ["context.occurred_at"]
    assert "case case-1 was opened" in before_the_case.message
    await stub.ReleaseBudget(_release(made, TODAY))


async def test_a_reservation_for_a_service_is_made_not_before_it_was_booked(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """Money reserved for a service dated before the service was booked would show, as of
    that moment, a service funded that no one had booked. A move since does not count."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE], at=OPENED)
    slot = OPENED + timedelta(hours=2)
    booked = await stub.ScheduleService(
        _dated(schedule_request("case-1", "home_care", slot, role="coordinator"), TODAY)
    )
    service = booked.service_id

    def reservation(at: datetime) -> pb.ReserveBudgetRequest:
        request = _reservation(at)
        request.service_id = service
        return request

    await _refused_as_dated_before(
        store,
        stub.ReserveBudget(reservation(EARLIER)),
        "budget-flex",
        f"service {service} was scheduled",
    )
    await stub.ReserveBudget(reservation(TODAY))


BOOKED = OPENED + timedelta(hours=1)
"""When the work the tests of a reopened case find was booked, before the case closed."""
CLOSED, WHILE_CLOSED, REOPENED = (OPENED + timedelta(hours=hours) for hours in (6, 8, 10))


def _referral(at: datetime) -> pb.MakeReferralRequest:
    return pb.MakeReferralRequest(
        context=command_context("coordinator", at=at),
        case_id="case-1",
        provider=COUNSELING_CENTRE,
        need_category="counseling",
        service="counseling sessions",
        urgency="soon",
        reason="adjusting to her new situation",
    )


def _reservation(at: datetime) -> pb.ReserveBudgetRequest:
    return pb.ReserveBudgetRequest(
        context=command_context("coordinator", at=at),
        case_id="case-1",
        budget_line="flex",
        amount=usd(1_000),
    )


async def _closed_and_reopened(intake: IntakeFeed) -> None:
    await intake.close_case("case-1", at=CLOSED)
    await intake.deliver(
        CaseReopened(case_id="case-1", reason="fell again"), "case-case-1", occurred_at=REOPENED
    )


async def test_new_work_on_a_reopened_case_is_not_dated_before_its_last_reopening(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """As planning refuses: the reopened case's new work (every command refused
    ``CASE_CLOSED`` on a closed case) follows its closure and its reopening, or audit's state
    as it happened would show it done on the closed case. Dated between the two, a referral
    was recorded at a moment coordination itself refuses it ``CASE_CLOSED``."""
    await intake.open_case(
        "case-1", "client-1", [NeedCategory.COUNSELING, NeedCategory.PHYSICAL_THERAPY], at=OPENED
    )
    await intake.consent("case-1", "client-1")
    await assign(stub, "case-1", "sw-lcsw", at=BOOKED)
    pending = (await stub.MakeReferral(_referral(BOOKED))).referral_id
    booked = await stub.ScheduleService(
        _dated(
            schedule_request("case-1", "physical_therapy", NEXT_WEEK, role="coordinator"), BOOKED
        )
    )
    await _closed_and_reopened(intake)
    streams = ["case-case-1", "schedule-client-1", "budget-flex"]
    before = [await store.read_stream(stream) for stream in streams]
    early = await refused(stub.MakeReferral(_referral(CLOSED - timedelta(hours=1))))
    assert (early.code, early.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["context.occurred_at"])
    assert f"case case-1 was last closed ({CLOSED.isoformat()})" in early.message
    later = NEXT_WEEK + timedelta(days=1)
    new_work = {
        "AssignCase": stub.AssignCase(
            pb.AssignCaseRequest(
                context=command_context("coordinator", at=WHILE_CLOSED),
                case_id="case-1",
                worker_id="sw-lcsw",
            )
        ),
        "TransferCase": stub.TransferCase(_transfer("cm-dana", WHILE_CLOSED)),
        "MakeReferral": stub.MakeReferral(_referral(WHILE_CLOSED)),
        "AcceptReferral": stub.AcceptReferral(_answer("accept", pending, WHILE_CLOSED)),
        "ScheduleService": stub.ScheduleService(
            _dated(
                schedule_request("case-1", "physical_therapy", later, role="coordinator"),
                WHILE_CLOSED,
            )
        ),
        "RescheduleService": stub.RescheduleService(_move(booked.service_id, later, WHILE_CLOSED)),
        "DetermineEligibility": stub.DetermineEligibility(
            pb.DetermineEligibilityRequest(
                context=command_context("coordinator", at=WHILE_CLOSED),
                case_id="case-1",
                program_id="open-door",
            )
        ),
        "ReserveBudget": stub.ReserveBudget(_reservation(WHILE_CLOSED)),
    }
    for command, call in new_work.items():
        refusal = await refused(call)
        assert (command, refusal.code, refusal.fields) == (
            command,
            grpc.StatusCode.INVALID_ARGUMENT,
            ["context.occurred_at"],
        )
        assert f"case case-1 was last reopened ({REOPENED.isoformat()})" in refusal.message
    assert [await store.read_stream(stream) for stream in streams] == before
    await stub.MakeReferral(_referral(REOPENED))


async def test_wrap_up_entered_after_a_reopening_keeps_the_moment_it_happened_at(
    stub: Stub, intake: IntakeFeed
) -> None:
    """The wrap-up of what happened before a closure (README, "Closure") is taken on a closed
    case dated when it happened; entered after the case was reopened, the same command at the
    same moment is taken too, checked only against what it follows. Refused as dated before
    the reopening (or the closure), an insurer's decision made while the case was closed and
    entered late could only be recorded misdated."""
    await intake.open_case(
        "case-1", "client-1", [NeedCategory.COUNSELING, NeedCategory.PHYSICAL_THERAPY], at=OPENED
    )
    await intake.consent("case-1", "client-1")
    slot = OPENED + timedelta(hours=2)
    given = await stub.ScheduleService(
        _dated(schedule_request("case-1", "physical_therapy", slot, role="coordinator"), BOOKED)
    )
    called_off = await stub.ScheduleService(
        _dated(
            schedule_request("case-1", "physical_therapy", NEXT_WEEK, role="coordinator"), BOOKED
        )
    )
    reserved = await stub.ReserveBudget(_reservation(BOOKED))
    declined, completed, withdrawn = [
        (await stub.MakeReferral(_referral(BOOKED))).referral_id for _ in range(3)
    ]
    await stub.AcceptReferral(_answer("accept", completed, BOOKED))
    await _closed_and_reopened(intake)

    # Given before the closure, written up now: dated before the closure.
    await stub.RecordServiceDelivered(_delivered(given.service_id, slot, CLOSED - AN_HOUR))
    filed = await stub.FileInsuranceClaim(
        pb.FileInsuranceClaimRequest(
            context=command_context("coordinator", at=WHILE_CLOSED),
            case_id="case-1",
            insurer=pb.Provider(provider_id="medicare", name="Medicare"),
            amount_claimed=usd(10_000),
            service_ids=[given.service_id],
        )
    )
    await stub.RecordClaimDecision(_claim_decision(filed.claim_id, WHILE_CLOSED))
    await stub.ReleaseBudget(_release(reserved.reservation_id, WHILE_CLOSED))
    await stub.CancelService(_cancel(called_off.service_id, WHILE_CLOSED))
    await stub.DeclineReferral(_answer("decline", declined, WHILE_CLOSED, reason="no capacity"))
    await stub.CompleteReferral(
        _answer("complete", completed, WHILE_CLOSED, outcome="two sessions")
    )
    await stub.WithdrawReferral(_withdrawal(withdrawn, WHILE_CLOSED))


async def test_a_command_stating_no_moment_is_checked_as_happening_now(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """A command stating no moment happens now (its events carry the server's moment), and is
    checked so: any moment may be stated a few minutes ahead, and an acceptance sent then
    stating none was recorded before the referral it accepts."""
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING], at=OPENED)
    await intake.consent("case-1", "client-1")
    ahead = datetime.now(UTC) + timedelta(minutes=4)
    made = await stub.MakeReferral(
        pb.MakeReferralRequest(
            context=command_context("coordinator", at=ahead),
            case_id="case-1",
            provider=COUNSELING_CENTRE,
            need_category="counseling",
            service="counseling sessions",
            urgency="soon",
            reason="adjusting to reduced mobility after hip surgery",
        )
    )
    unstated = _answer("accept", made.referral_id, ahead)
    unstated.context.ClearField("occurred_at")
    before = await store.read_stream("case-case-1")

    refusal = await refused(stub.AcceptReferral(unstated))

    assert (refusal.code, refusal.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["context.occurred_at"],
    )
    assert f"referral {made.referral_id} was made ({ahead.isoformat()})" in refusal.message
    assert f"state a moment at or after {ahead.isoformat()}" in refusal.message
    assert await store.read_stream("case-case-1") == before
    await stub.AcceptReferral(_answer("accept", made.referral_id, ahead))
