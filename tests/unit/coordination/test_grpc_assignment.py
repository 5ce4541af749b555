"""Assignment through the real gRPC server: credentials, caseload, transfers, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import uuid4

import grpc
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.values import NeedCategory
from tests.support.identity import acting
from tests.unit.coordination.rpc import accept, assign, refer, refused
from tests.unit.coordination.support import (
    OPENED,
    TODAY,
    IntakeFeed,
    command_context,
    query_context,
    timestamp,
    transferred,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

HOME_CARE = NeedCategory.HOME_CARE
COUNSELING = NeedCategory.COUNSELING


async def test_a_case_coordination_has_not_heard_of_is_not_found(stub: Stub) -> None:
    refusal = await refused(assign(stub, "case-unknown", "sw-lcsw"))
    assert refusal.code is grpc.StatusCode.NOT_FOUND
    info = refusal.detail(error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("case", "case-unknown")


async def test_the_case_can_be_assigned_once_intake_facts_arrive(
    stub: Stub, intake: IntakeFeed
) -> None:
    await refused(assign(stub, "case-1", "sw-lcsw"))
    await intake.open_case("case-1", "client-1", [HOME_CARE], assessed=[COUNSELING])
    assigned = await assign(stub, "case-1", "sw-lcsw")
    assert list(assigned.matched_needs) == ["home_care", "counseling"]
    assert assigned.result.case_id == "case-1"
    assert assigned.result.version == 1
    view = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(context=query_context(), case_id="case-1")
    )
    assert (view.worker_id, view.worker_role, view.client_id) == (
        "sw-lcsw",
        "social_worker",
        "client-1",
    )


async def test_a_case_manager_is_never_given_counseling(stub: Stub, intake: IntakeFeed) -> None:
    # A need the coordinator is shown: one withheld from them is refused in other words
    # (test_access_gaps).
    await intake.open_case("case-1", "client-1", [HOME_CARE, COUNSELING])
    refusal = await refused(assign(stub, "case-1", "cm-dana"))
    assert refusal.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.rule == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert "addiction counselor" in refusal.metadata["suggested_referrals"]
    assert refusal.metadata["required_licences"] == "LBSW,LMSW,LCSW"
    assert refusal.metadata["suggested_action"] == "MakeReferral"
    violation = refusal.detail(error_details_pb2.PreconditionFailure).violations[0]
    assert violation.type == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
    assert violation.subject == "worker/cm-dana"


async def test_after_the_referral_the_case_manager_takes_the_other_needs(
    stub: Stub, intake: IntakeFeed
) -> None:
    await intake.open_case("case-1", "client-1", [HOME_CARE, COUNSELING])
    await intake.consent("case-1", "client-1")
    referral = await refer(stub, "case-1", "counseling")
    await accept(stub, "case-1", referral.referral_id)
    assigned = await assign(stub, "case-1", "cm-dana")
    assert list(assigned.matched_needs) == ["home_care"]


async def test_a_referral_still_pending_leaves_the_need_with_the_worker(
    stub: Stub, intake: IntakeFeed
) -> None:
    # The provider may yet decline: the case manager would be left with a counseling need.
    await intake.open_case("case-1", "client-1", [HOME_CARE, COUNSELING])
    await intake.consent("case-1", "client-1")
    await refer(stub, "case-1", "counseling")
    refusal = await refused(assign(stub, "case-1", "cm-dana"))
    assert (refusal.code, refusal.rule) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER",
    )


async def test_a_backdated_command_does_not_revive_an_expired_licence(
    stub: Stub, intake: IntakeFeed
) -> None:
    # sw-expired's licence ran out on 2025-12-31; the case was opened on 2026-03-01.
    await intake.open_case("case-1", "client-1", [COUNSELING], at=datetime(2025, 6, 1, tzinfo=UTC))
    refusal = await refused(
        assign(stub, "case-1", "sw-expired", at=datetime(2025, 6, 2, tzinfo=UTC))
    )
    assert refusal.rule == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"


async def test_a_command_cannot_state_a_moment_before_the_case_was_opened(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [HOME_CARE])
    refusal = await refused(assign(stub, "case-1", "sw-lcsw", at=OPENED - timedelta(days=365)))
    assert (refusal.code, refusal.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["context.occurred_at"],
    )
    assert await store.read_stream("case-case-1") == []


async def test_an_expired_licence_does_not_allow_counseling(stub: Stub, intake: IntakeFeed) -> None:
    await intake.open_case("case-1", "client-1", [COUNSELING])
    refusal = await refused(assign(stub, "case-1", "sw-expired"))
    assert refusal.rule == "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"


async def test_a_supervisor_does_not_carry_cases(stub: Stub, intake: IntakeFeed) -> None:
    await intake.open_case("case-1", "client-1", [HOME_CARE])
    refusal = await refused(assign(stub, "case-1", "sup-helen"))
    assert refusal.rule == "WORKER_DOES_NOT_CARRY_CASES"


async def test_an_unknown_worker_is_not_found(stub: Stub, intake: IntakeFeed) -> None:
    await intake.open_case("case-1", "client-1", [HOME_CARE])
    refusal = await refused(assign(stub, "case-1", "nobody"))
    assert refusal.code is grpc.StatusCode.NOT_FOUND
    assert refusal.detail(error_details_pb2.ResourceInfo).resource_type == "worker"


async def test_a_full_caseload_is_refused_until_a_case_closes(
    stub: Stub, intake: IntakeFeed
) -> None:
    for case_id in ("case-1", "case-2"):
        await intake.open_case(case_id, f"client-{case_id}", [HOME_CARE])
    await assign(stub, "case-1", "cm-dana")
    refusal = await refused(assign(stub, "case-2", "cm-dana"))
    assert refusal.rule == "CASELOAD_FULL"
    assert refusal.metadata == {
        "subject": "worker/cm-dana",
        "worker_id": "cm-dana",
        "caseload": "1",
        "capacity": "1",
    }
    await intake.close_case("case-1")
    await assign(stub, "case-2", "cm-dana")
    workers = await stub.ListWorkers(pb.ListWorkersRequest(context=query_context()))
    loads = {worker.worker_id: worker.caseload for worker in workers.workers}
    assert loads["cm-dana"] == 1


async def test_only_coordinators_and_supervisors_assign(stub: Stub, intake: IntakeFeed) -> None:
    await intake.open_case("case-1", "client-1", [HOME_CARE])
    refusal = await refused(assign(stub, "case-1", "cm-dana", role="case_manager"))
    assert refusal.code is grpc.StatusCode.PERMISSION_DENIED
    assert refusal.rule == "ROLE_NOT_ALLOWED"
    assert refusal.metadata == {"role": "case_manager", "action": "assign a case"}
    await assign(stub, "case-1", "cm-dana", role="supervisor")


async def test_a_closed_case_is_not_assigned(stub: Stub, intake: IntakeFeed) -> None:
    await intake.open_case("case-1", "client-1", [HOME_CARE])
    await intake.close_case("case-1")
    refusal = await refused(assign(stub, "case-1", "cm-dana"))
    assert refusal.rule == "CASE_CLOSED"
    await intake.reopen_case("case-1")
    await assign(stub, "case-1", "cm-dana")


async def test_assigning_twice_is_refused_and_transfer_hands_over(
    stub: Stub, intake: IntakeFeed
) -> None:
    await intake.open_case("case-1", "client-1", [HOME_CARE])

    def transfer(worker_id: str, reason: str = "worker on leave") -> pb.TransferCaseRequest:
        return pb.TransferCaseRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            worker_id=worker_id,
            reason=reason,
        )

    refusal = await refused(stub.TransferCase(transfer("sw-lcsw")))
    assert refusal.rule == "CASE_NOT_ASSIGNED"
    await assign(stub, "case-1", "cm-dana")
    refusal = await refused(assign(stub, "case-1", "sw-lcsw"))
    assert refusal.rule == "CASE_ALREADY_ASSIGNED"
    assert refusal.metadata["current_worker_id"] == "cm-dana"
    refusal = await refused(stub.TransferCase(transfer("cm-dana")))
    assert refusal.rule == "ALREADY_ASSIGNED_TO_WORKER"
    refusal = await refused(stub.TransferCase(transfer("sw-lcsw", reason="")))
    assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refusal.fields == ["reason"]
    moved = await stub.TransferCase(transfer("sw-lcsw"))
    assert moved.previous_worker_id == "cm-dana"
    workers = await stub.ListWorkers(pb.ListWorkersRequest(context=query_context()))
    loads = {worker.worker_id: worker.caseload for worker in workers.workers}
    assert (loads["cm-dana"], loads["sw-lcsw"]) == (0, 1)


async def test_a_supervisor_transfers_only_a_case_of_their_team(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # As closing and reopening (planning's CloseCase, intake's ReopenCase): a supervisor reads
    # and acts on the cases of their team; another team's would lose its worker to them, and
    # the answer names that worker.
    await intake.open_case("case-1", "client-1", [HOME_CARE])
    # cm-dana is of team-east (the agency file): the assignment records it on the case.
    await assign(stub, "case-1", "cm-dana")
    written = await store.read_stream("case-case-1")

    def transfer(team: str) -> pb.TransferCaseRequest:
        supervisor = Person(f"sup-{team}", "supervisor", team=team)
        return pb.TransferCaseRequest(
            context=acting(supervisor, common_pb2.CommandContext(idempotency_key=team)),
            case_id="case-1",
            worker_id="sw-lcsw",
            reason="worker on leave",
        )

    refusal = await refused(stub.TransferCase(transfer("team-west")))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    assert "cm-dana" not in refusal.message
    assert await store.read_stream("case-case-1") == written
    moved = await stub.TransferCase(transfer("team-east"))
    assert moved.previous_worker_id == "cm-dana"


def _assign_by(team: str, case_id: str, at: datetime = TODAY) -> pb.AssignCaseRequest:
    supervisor = Person(f"sup-{team}", "supervisor", team=team)
    context = common_pb2.CommandContext(idempotency_key=str(uuid4()), occurred_at=timestamp(at))
    return pb.AssignCaseRequest(
        context=acting(supervisor, context), case_id=case_id, worker_id="sw-lcsw"
    )


async def test_a_supervisor_assigns_a_case_no_one_carries_or_one_of_their_team_only(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Any supervisor may give a case no one carries their team; another team's case is refused
    # before the refusal could name its worker (CASE_ALREADY_ASSIGNED), say it was closed
    # (CASE_CLOSED) or give its opening time (an occurred-at before it), and as an unknown id is.
    await intake.open_case("case-1", "client-1", [HOME_CARE])
    await assign(stub, "case-1", "cm-dana")  # cm-dana is of team-east
    written = await store.read_stream("case-case-1")
    unknown = await refused(stub.AssignCase(_assign_by("team-west", "case-9")))
    assert (unknown.code, unknown.rule) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    long_ago = datetime(1990, 1, 1, tzinfo=UTC)
    for request in (_assign_by("team-west", "case-1"), _assign_by("team-west", "case-1", long_ago)):
        refusal = await refused(stub.AssignCase(request))
        assert (refusal.code, refusal.rule) == (unknown.code, unknown.rule)
        assert refusal.message == unknown.message.replace("case-9", "case-1")
        assert refusal.metadata == {
            k: v.replace("case-9", "case-1") for k, v in unknown.metadata.items()
        }
        assert "cm-dana" not in refusal.message
    await intake.close_case("case-1")
    closed = await refused(stub.AssignCase(_assign_by("team-west", "case-1")))
    assert closed.rule == "NO_RELATIONSHIP"
    assert await store.read_stream("case-case-1") == written
    await intake.reopen_case("case-1")
    own = await refused(stub.AssignCase(_assign_by("team-east", "case-1")))
    assert own.rule == "CASE_ALREADY_ASSIGNED"
    assert own.metadata["current_worker_id"] == "cm-dana"
    await intake.open_case("case-2", "client-2", [HOME_CARE])
    assigned = await stub.AssignCase(_assign_by("team-west", "case-2"))
    assert assigned.result.case_id == "case-2"


def _transfer_by(team: str, worker_id: str, key: str) -> pb.TransferCaseRequest:
    supervisor = Person(f"sup-{team}", "supervisor", team=team)
    return pb.TransferCaseRequest(
        context=acting(supervisor, common_pb2.CommandContext(idempotency_key=key)),
        case_id="case-1",
        worker_id=worker_id,
        reason="worker on leave",
    )


async def test_a_supervisor_transfers_by_the_team_coordination_recorded_not_the_bus_s(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Coordination records the case's assignments itself: its case stream says whose team the
    # case is now. The access policy's facts come over the bus, and may not have the case's
    # transfer to another team yet: the previous team's supervisor must not move it once more.
    await intake.open_case("case-1", "client-1", [HOME_CARE])
    await assign(stub, "case-1", "cm-dana")
    await intake.policy_told_assigned("case-1", "cm-dana", "team-east")
    await transferred(store, "case-1")  # to sw-lcsw of team-west, not delivered
    written = await store.read_stream("case-case-1")

    refusal = await refused(stub.TransferCase(_transfer_by("team-east", "sw-expired", "east")))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    assert "their team" in refusal.message
    assert await store.read_stream("case-case-1") == written
    moved = await stub.TransferCase(_transfer_by("team-west", "sw-expired", "west"))
    assert moved.previous_worker_id == "sw-lcsw"


async def test_suggestions_put_fitting_workers_first_with_reasons_for_the_others(
    stub: Stub, intake: IntakeFeed
) -> None:
    await intake.open_case("case-1", "client-1", [HOME_CARE, COUNSELING])
    suggested = await stub.SuggestWorkers(
        pb.SuggestWorkersRequest(context=query_context(), case_id="case-1")
    )
    assert list(suggested.needs) == ["home_care", "counseling"]
    first, *others = suggested.workers
    assert (first.worker.worker_id, first.fits) == ("sw-lcsw", True)
    assert not any(other.fits for other in others)
    dana = next(o for o in others if o.worker.worker_id == "cm-dana")
    assert dana.reasons[0].startswith("COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER: ")


async def test_bad_requests_name_every_bad_field(stub: Stub) -> None:
    context = command_context("coordinator")
    context.idempotency_key = ""
    refusal = await refused(
        stub.AssignCase(pb.AssignCaseRequest(context=context, case_id="bad id!"))
    )
    assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(refusal.fields) == ["case_id", "context.idempotency_key", "worker_id"]


async def test_queries_need_a_reader_role_and_a_purpose(stub: Stub) -> None:
    context = query_context("partner_agency")
    refusal = await refused(stub.ListWorkers(pb.ListWorkersRequest(context=context)))
    assert refusal.code is grpc.StatusCode.PERMISSION_DENIED
    context = query_context()
    context.purpose = "curiosity"
    refusal = await refused(stub.ListWorkers(pb.ListWorkersRequest(context=context)))
    assert refusal.fields == ["context.purpose"]
    context.purpose = ""
    refusal = await refused(stub.SuggestWorkers(pb.SuggestWorkersRequest(context=context)))
    assert refusal.fields == ["context.purpose", "case_id"]
