"""Gaps found in review of coordination's reads and answers: need categories reaching callers
and records that may not hold them, refusals not on the record, answers telling an unknown case
from a refused one, and an age no event may hold."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.policy.guard import REDACTED_KEY
from cli.rpc import Person
from events.catalog.access import RecordAccessDenied, RecordAccessed, SensitiveCategory
from events.catalog.assignment import CaseAssigned
from events.catalog.base import Role
from events.catalog.values import NeedCategory
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain.assignment import decide_assignment
from services.coordination.domain.case import CaseState
from services.coordination.domain.commands import AssignCase
from services.coordination.domain.facts import CaseFacts, case_stream
from tests.support.grpc import details, mentions, refusal, violated_fields
from tests.support.identity import TestIssuer, acting
from tests.unit.coordination.rpc import (
    accept,
    assign,
    refer,
    refused,
    schedule_request,
    served,
    usd,
)
from tests.unit.coordination.support import (
    IntakeFeed,
    Refusal,
    carried_by,
    command_context,
    query_context,
    sample_agency,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

SENSITIVE_NEEDS = (NeedCategory.SUBSTANCE_USE, NeedCategory.MENTAL_HEALTH)
SENSITIVE_VALUES = tuple(need.value for need in SENSITIVE_NEEDS)
ON = date(2026, 3, 2)


def _names_a_sensitive_need(text: str) -> bool:
    return any(value in text for value in SENSITIVE_VALUES)


async def _accesses(deps: Dependencies, case_id: str) -> list[object]:
    return [recorded.event for recorded in await deps.store.read_stream(f"access-{case_id}")]


# -- 1. the assignment's reason -------------------------------------------------------------


def test_the_reason_written_for_an_assignment_neither_counts_nor_names_the_needs() -> None:
    facts = CaseFacts(
        case_id="case-1", client_id="client-1", needs=(*SENSITIVE_NEEDS, NeedCategory.HOME_CARE)
    )
    worker = sample_agency().worker("sw-lcsw")
    command = AssignCase(case_id="case-1", worker_id="sw-lcsw")
    [assigned] = decide_assignment(CaseState(), facts, worker, 0, command, ON)
    assert isinstance(assigned, CaseAssigned)
    assert assigned.reason == (
        "LCSW licence fits the case's open needs; caseload 0 of 2 before this case"
    )


# -- 2. need categories in refusals and answers to a coordinator -----------------------------


def _tells_of_counseling(text: str) -> bool:
    """``counsel`` (counseling, counselor) or a counseling licence: only counseling asks for
    one, so naming it says the case calls for counseling."""
    return "counsel" in text.lower() or any(licence in text for licence in ("LBSW", "LMSW"))


def _told(refusal: Refusal) -> list[str]:
    return [refusal.rule, refusal.message, *refusal.metadata.values(), *map(str, refusal.details)]


async def test_a_credential_refusal_tells_a_coordinator_neither_the_need_nor_counseling(
    stub: Stub, intake: IntakeFeed
) -> None:
    """Shown none of the needs that call for counseling, a coordinator was refused because the
    case "has open needs calling for counseling": counseling is no special data, so that told
    them it has mental health or substance use. The worker still may not take it; the refusal
    says a credential the needs require is lacking, the same whichever need it is."""
    refusals = {}
    for case_id, need in (
        ("case-su", NeedCategory.SUBSTANCE_USE),
        ("case-mh", NeedCategory.MENTAL_HEALTH),
    ):
        await intake.open_case(case_id, f"client-{case_id}", [NeedCategory.HOME_CARE, need])
        refusals[case_id] = await refused(assign(stub, case_id, "cm-dana"))
    refusal = refusals["case-su"]
    assert (refusal.code, refusal.rule) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "WORKER_LACKS_REQUIRED_CREDENTIAL",
    )
    assert "cm-dana" in refusal.message
    assert refusal.metadata == {
        "subject": "worker/cm-dana",
        "worker_id": "cm-dana",
        "worker_role": "case_manager",
        "suggested_action": "SuggestWorkers",
    }
    for said in _told(refusal):
        assert not _names_a_sensitive_need(said)
        assert not _tells_of_counseling(said), said
    # Which withheld need it is changes nothing but the case's id.
    other = refusals["case-mh"]
    assert (other.code, other.message.replace("case-mh", "case-su"), other.metadata) == (
        refusal.code,
        refusal.message,
        refusal.metadata,
    )
    # A transfer is refused in the same words.
    await assign(stub, "case-su", "sw-lcsw")
    moved = await refused(
        stub.TransferCase(
            pb.TransferCaseRequest(
                context=command_context("coordinator"),
                case_id="case-su",
                worker_id="cm-dana",
                reason="worker on leave",
            )
        )
    )
    assert (moved.code, moved.message, moved.metadata) == (
        refusal.code,
        refusal.message,
        refusal.metadata,
    )
    # Shown a need that calls for counseling, they are told the rule and its way out.
    await intake.open_case(
        "case-c", "client-c", [NeedCategory.COUNSELING, NeedCategory.SUBSTANCE_USE]
    )
    shown = await refused(assign(stub, "case-c", "cm-dana"))
    assert shown.rule == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert shown.metadata["suggested_action"] == "MakeReferral"
    assert not any(_names_a_sensitive_need(said) for said in _told(shown))


async def test_suggestions_to_a_coordinator_give_no_sensitive_need_in_the_reasons(
    stub: Stub, intake: IntakeFeed
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE, *SENSITIVE_NEEDS])
    call = stub.SuggestWorkers(pb.SuggestWorkersRequest(context=query_context(), case_id="case-1"))
    suggested = await call
    assert list(suggested.needs) == ["home_care"]
    assert dict(await call.trailing_metadata())[REDACTED_KEY] == "needs"
    fits = {fit.worker.worker_id: (fit.fits, list(fit.reasons)) for fit in suggested.workers}
    # The rule holds: the licensed social worker fits, the case manager does not, and why
    # tells nothing of the needs withheld, not even that they call for counseling.
    assert fits["sw-lcsw"] == (True, [])
    fits_dana, [reason] = fits["cm-dana"]
    assert not fits_dana
    assert reason.startswith("WORKER_LACKS_REQUIRED_CREDENTIAL: ")
    reasons = [reason for fit in suggested.workers for reason in fit.reasons]
    assert not any(_names_a_sensitive_need(reason) for reason in reasons)
    assert not any(_tells_of_counseling(reason) for reason in reasons), reasons
    # Shown one need, a count of three would tell how many are withheld.
    assert not any(re.search(r"\d+ open need", reason) for reason in reasons), reasons
    # A reader shown every need (an auditor) is told the rule.
    audited = await stub.SuggestWorkers(
        pb.SuggestWorkersRequest(
            context=query_context("auditor", "confidentiality_review"), case_id="case-1"
        )
    )
    [told] = next(fit.reasons for fit in audited.workers if fit.worker.worker_id == "cm-dana")
    assert told.startswith("COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER: ")


async def test_a_withdrawal_refusal_tells_a_coordinator_neither_the_need_nor_counseling(
    stub: Stub, intake: IntakeFeed
) -> None:
    """A worker who may not counsel (a licence lapsed) carries a substance-use or mental-health
    need a provider took on; the
    coordinator withdrawing that referral (its need withheld from them) was refused because it
    would leave the case's "needs calling for counseling" with the worker, telling them the
    referral's need is one of those. Refused alike, the same whichever need."""
    refusals = {}
    for case_id, need in (
        ("case-su", NeedCategory.SUBSTANCE_USE),
        ("case-mh", NeedCategory.MENTAL_HEALTH),
    ):
        client_id = f"client-{case_id}"
        await intake.open_case(case_id, client_id, [NeedCategory.HOME_CARE, need])
        await intake.consent(case_id, client_id, categories=[SensitiveCategory(need.value)])
        referral = await refer(stub, case_id, need.value)
        await accept(stub, case_id, referral.referral_id)
        await assign(stub, case_id, "sw-expired")
        refusals[case_id] = await refused(
            stub.WithdrawReferral(
                pb.WithdrawReferralRequest(
                    context=command_context("coordinator"),
                    case_id=case_id,
                    referral_id=referral.referral_id,
                    reason="client moved in with her daughter",
                )
            )
        )
    refusal = refusals["case-su"]
    assert (refusal.code, refusal.rule) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "WORKER_LACKS_REQUIRED_CREDENTIAL",
    )
    assert refusal.metadata["suggested_action"] == "TransferCase"
    assert "sw-expired" in refusal.message
    for said in _told(refusal):
        assert not _names_a_sensitive_need(said)
        assert not _tells_of_counseling(said), said
    other = refusals["case-mh"]
    case_su_referral = refusal.metadata["subject"].removeprefix("referral/")
    case_mh_referral = other.metadata["subject"].removeprefix("referral/")

    def alike(told: Refusal) -> tuple[object, ...]:
        said = told.message.replace("case-mh", "case-su").replace(
            case_mh_referral, case_su_referral
        )
        return told.code, said, {**told.metadata, "subject": ""}

    assert alike(other) == alike(refusal)


async def test_the_assignment_answer_withholds_the_sensitive_needs_it_matched(
    stub: Stub, intake: IntakeFeed
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE, *SENSITIVE_NEEDS])
    call = stub.AssignCase(
        pb.AssignCaseRequest(
            context=command_context("coordinator"), case_id="case-1", worker_id="sw-lcsw"
        )
    )
    assigned = await call
    assert list(assigned.matched_needs) == ["home_care"]
    assert dict(await call.trailing_metadata())[REDACTED_KEY] == "matched_needs"


# -- 3. SuggestWorkers' refusals ---------------------------------------------------------------


async def test_suggest_workers_refused_by_role_is_on_the_record(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    for role, purpose in (("intake_worker", "direct_care"), ("receptionist", "direct_care")):
        refusal = await refused(
            stub.SuggestWorkers(
                pb.SuggestWorkersRequest(context=query_context(role, purpose), case_id="case-1")
            )
        )
        assert (refusal.code, refusal.rule) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_NOT_ALLOWED",
        )
    denied = [e for e in await _accesses(deps, "case-1") if isinstance(e, RecordAccessDenied)]
    assert [(e.accessor_role, e.rule) for e in denied] == [
        (Role.INTAKE_WORKER, "role-not-allowed"),
        (Role.RECEPTIONIST, "role-not-allowed"),
    ]


# -- 4. a refused caller learns nothing of whether the case exists -----------------------------


async def test_a_refused_caller_cannot_tell_an_unknown_case_from_a_real_one(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    # Contexts alike are told apart by who built them last: each is built just before its call.
    for role, rule in (("receptionist", "ROLE_NOT_ALLOWED"), ("case_manager", "NO_RELATIONSHIP")):
        for case_id in ("case-1", "case-unknown"):
            for call in (
                stub.GetCaseCoordination(
                    pb.GetCaseCoordinationRequest(
                        context=query_context(role, "direct_care"), case_id=case_id
                    )
                ),
                stub.SuggestWorkers(
                    pb.SuggestWorkersRequest(
                        context=query_context(role, "direct_care"), case_id=case_id
                    )
                ),
            ):
                refusal = await refused(call)
                assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, rule)
    for case_id in ("case-1", "case-unknown"):
        denied = [e for e in await _accesses(deps, case_id) if isinstance(e, RecordAccessDenied)]
        assert len(denied) == 4


# -- 5. GetClientSchedule: each case left out is on the record; the front desk reads no case ---


async def test_a_schedule_leaves_out_the_cases_refused_and_records_each_refusal(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    for case_id in ("case-a", "case-b"):
        await intake.open_case(case_id, "client-1", [NeedCategory.HOME_CARE])
    await intake.deliver(
        CaseAssigned(
            case_id="case-a",
            worker_id="cm-dana",
            worker_role=Role.CASE_MANAGER,
            reason="fits",
        ),
        case_stream("case-a"),
        source="casetrail/coordination",
    )
    tuesday = datetime(2026, 3, 3, 9, tzinfo=UTC)
    for case_id, starts_at in (("case-a", tuesday), ("case-b", tuesday + timedelta(hours=3))):
        await stub.ScheduleService(
            schedule_request(case_id, "home_care", starts_at, role="coordinator")
        )
    dana = acting(Person("cm-dana", "case_manager"), common_pb2.QueryContext(purpose="direct_care"))
    schedule = await stub.GetClientSchedule(
        pb.GetClientScheduleRequest(context=dana, client_id="client-1")
    )
    assert {service.case_id for service in schedule.services} == {"case-a"}
    [read] = await _accesses(deps, "case-a")
    assert isinstance(read, RecordAccessed)
    assert read.accessor_id == "cm-dana"
    [denied] = await _accesses(deps, "case-b")
    assert isinstance(denied, RecordAccessDenied)
    assert (denied.accessor_id, denied.rule) == ("cm-dana", "no-relationship")


async def test_a_schedule_is_refused_alike_for_a_client_of_whom_no_case_is_known(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    """An id of no client was answered an empty schedule, unrecorded, where a real client's
    was refused on record: a worker told real clients from unknown ids."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await stub.ScheduleService(
        schedule_request(
            "case-1", "home_care", datetime(2026, 3, 3, 9, tzinfo=UTC), role="coordinator"
        )
    )
    dana = acting(Person("cm-dana", "case_manager"), common_pb2.QueryContext(purpose="direct_care"))
    real, unknown = [
        await refused(
            stub.GetClientSchedule(pb.GetClientScheduleRequest(context=dana, client_id=asked))
        )
        for asked in ("client-1", "client-nobody")
    ]
    assert (unknown.code, unknown.message, unknown.details) == (
        real.code,
        real.message,
        real.details,
    )
    assert real.rule == "NO_RELATIONSHIP"
    for subject in ("case-1", "client-nobody"):
        [denied] = await _accesses(deps, subject)
        assert isinstance(denied, RecordAccessDenied)
        assert (denied.accessor_id, denied.rule) == ("cm-dana", "no-relationship")
    # Whoever may read a case of the client is told it has no service.
    empty = await stub.GetClientSchedule(
        pb.GetClientScheduleRequest(context=query_context(), client_id="client-nobody")
    )
    assert list(empty.services) == []


async def test_the_front_desk_reads_no_schedule_and_the_refusal_is_recorded(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(deps.store, "case-1")
    await stub.ScheduleService(
        schedule_request("case-1", "home_care", datetime(2026, 3, 3, 9, tzinfo=UTC))
    )
    refusal = await refused(
        stub.GetClientSchedule(
            pb.GetClientScheduleRequest(
                context=query_context("receptionist", "direct_care"), client_id="client-1"
            )
        )
    )
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    [denied] = await _accesses(deps, "case-1")
    assert isinstance(denied, RecordAccessDenied)
    assert (denied.accessor_role, denied.rule) == (Role.RECEPTIONIST, "role-not-allowed")


# -- 5b. a list's facts not caught up name what was asked, never a case found for it ----------

BEHIND = "case-b"
"""The client's case (and the budget line's) that the caller does not carry, whose facts have
not reached coordination's policy facts in time."""


class Behind:
    """``case_facts_caught_up``: every case's facts on the bus are held but ``BEHIND``'s."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, case_id: str) -> bool:
        self.asked.append(case_id)
        return case_id != BEHIND


@pytest.fixture
async def behind(deps: Dependencies, issuer: TestIssuer) -> AsyncIterator[tuple[Stub, Behind]]:
    """The package's ``stub``, its reads waiting at a barrier ``BEHIND``'s facts do not pass."""
    barrier = Behind()
    async with served(deps, issuer, barrier) as served_stub:
        yield served_stub, barrier


async def _dana_s_case_and_another(stub: Stub, intake: IntakeFeed, deps: Dependencies) -> None:
    """client-1's case-a, carried by cm-dana, and case-b, carried by another case manager:
    each with a service scheduled and money reserved on home-care-fy2026."""
    tuesday = datetime(2026, 3, 3, 9, tzinfo=UTC)
    for hour, (case_id, worker) in enumerate((("case-a", "cm-dana"), (BEHIND, "cm-other"))):
        await intake.open_case(case_id, "client-1", [NeedCategory.HOME_CARE])
        await carried_by(deps.store, case_id, worker)
        scheduled = await stub.ScheduleService(
            schedule_request(
                case_id, "home_care", tuesday + timedelta(hours=3 * hour), role="coordinator"
            )
        )
        await stub.ReserveBudget(
            pb.ReserveBudgetRequest(
                context=command_context("coordinator", f"reserve-{case_id}"),
                case_id=case_id,
                budget_line="home-care-fy2026",
                amount=usd(10_000),
                service_id=scheduled.service_id,
            )
        )


async def test_a_schedule_or_budget_line_whose_facts_trail_names_what_was_asked(
    behind: tuple[Stub, Behind], intake: IntakeFeed, deps: Dependencies
) -> None:
    """GetClientSchedule and GetBudgetLine find the cases first (the client's, the line's),
    then wait for each one's facts before deciding: naming the trailing case would tell
    cm-dana of a case she does not carry, with nothing recorded. The refusal names the client
    or the line the request asked about."""
    stub, barrier = behind
    await _dana_s_case_and_another(stub, intake, deps)
    written = await deps.store.last_position()
    dana = acting(Person("cm-dana", "case_manager"), common_pb2.QueryContext(purpose="direct_care"))
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "client-1": lambda: stub.GetClientSchedule(
            pb.GetClientScheduleRequest(context=dana, client_id="client-1")
        ),
        "home-care-fy2026": lambda: stub.GetBudgetLine(
            pb.GetBudgetLineRequest(context=dana, budget_line="home-care-fy2026")
        ),
    }
    for subject, call in calls.items():
        barrier.asked.clear()
        code, status = await refusal(call())
        assert code is grpc.StatusCode.UNAVAILABLE, (subject, status.message)
        assert BEHIND in barrier.asked
        assert not mentions(status, BEHIND), status
        [info] = details(status, error_details_pb2.ErrorInfo)
        assert (info.reason, info.metadata["subject"]) == ("FACTS_NOT_CAUGHT_UP", subject)
        assert subject in status.message
        [retry] = details(status, error_details_pb2.RetryInfo)
        assert retry.retry_delay.seconds == 1
    assert await deps.store.last_position() == written, "nothing decided, nothing recorded"


# -- 6. an age no event may hold ---------------------------------------------------------------


async def test_an_age_from_an_impossible_date_of_birth_is_refused_naming_the_field(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    await intake.register_client("client-1", date(1800, 1, 1))
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(deps.store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)
    assigned = await deps.store.read_stream(case_stream("case-1"))
    refusal = await refused(
        stub.DetermineEligibility(
            pb.DetermineEligibilityRequest(
                context=command_context("social_worker"),
                case_id="case-1",
                program_id="open-door",
            )
        )
    )
    assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refusal.fields == ["facts.age"]
    assert await deps.store.read_stream(case_stream("case-1")) == assigned


# -- ids checked at the edge ---------------------------------------------------------------


async def test_a_malformed_id_is_refused_before_any_decision(
    stub: Stub, deps: Dependencies
) -> None:
    """Ids are checked against the catalog's shape (1-64 of ``[A-Za-z0-9_.:-]``) with the rest
    of the request, before the policy decides, whoever asks (before: only emptiness was
    checked, so a coordinator's read of a malformed case or budget line was NOT_FOUND or an
    empty schedule, and a role the policy refused was answered INVALID_ARGUMENT only because
    its refusal could not be recorded: RecordAccessDenied.case_id is an Identifier)."""
    for role in ("coordinator", "receptionist"):
        ctx = query_context(role)
        for bad in ("bad id!", "x" * 65, "a/b"):
            calls = {
                "case_id": [
                    stub.GetCaseCoordination(
                        pb.GetCaseCoordinationRequest(context=ctx, case_id=bad)
                    ),
                    stub.SuggestWorkers(pb.SuggestWorkersRequest(context=ctx, case_id=bad)),
                ],
                "client_id": [
                    stub.GetClientSchedule(pb.GetClientScheduleRequest(context=ctx, client_id=bad))
                ],
                "budget_line": [
                    stub.GetBudgetLine(pb.GetBudgetLineRequest(context=ctx, budget_line=bad))
                ],
            }
            for field, pending in calls.items():
                for call in pending:
                    code, status = await refusal(call)
                    assert code == grpc.StatusCode.INVALID_ARGUMENT, (role, field, bad, code)
                    assert violated_fields(status) == [field], (role, bad)
                    assert bad not in status.message
    denied = [
        r for r in await deps.store.read_all(0, 10_000) if isinstance(r.event, RecordAccessDenied)
    ]
    assert denied == []
