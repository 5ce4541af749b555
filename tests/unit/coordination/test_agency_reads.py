"""What is the agency's own and no case's (its staff with their caseloads and credentials, its
programmes, its budget lines) is for its own staff: another agency's caller, in a role that may
read it here, is refused ``PERMISSION_DENIED`` ``NO_RELATIONSHIP`` before anything is read, as
its commands are, and the refusal is recorded. Before, the role alone was checked: another
agency's coordinator got the staff roster, its auditor the budget's figures, nothing recorded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.vocabulary import Action
from cli.rpc import Person
from events.catalog.access import RecordAccessDenied
from events.catalog.values import NeedCategory
from services.coordination.app.handlers.running import Dependencies
from tests.support.identity import acting
from tests.unit.coordination.rpc import assign, refused
from tests.unit.coordination.support import IntakeFeed, command_context, query_context

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

ELSEWHERE = "westside-dss"
LINE = "home-care-fy2026"

Ask = Callable[["Stub", common_pb2.QueryContext], Awaitable[Any]]
READS: dict[str, tuple[Ask, str, str, str, Action]] = {
    # name: the call, the role and purpose of a caller of the agency it answers, where a
    # refusal is recorded and as what
    "ListWorkers": (
        lambda stub, ctx: stub.ListWorkers(pb.ListWorkersRequest(context=ctx)),
        "coordinator",
        "coordination",
        "workers",
        Action.READ_AGENCY,
    ),
    "ListPrograms": (
        lambda stub, ctx: stub.ListPrograms(pb.ListProgramsRequest(context=ctx)),
        "social_worker",
        "direct_care",
        "programs",
        Action.READ_AGENCY,
    ),
    "GetBudgetLine": (
        lambda stub, ctx: stub.GetBudgetLine(
            pb.GetBudgetLineRequest(context=ctx, budget_line=LINE)
        ),
        "auditor",
        "confidentiality_review",
        "budget-line",
        Action.READ_CASE,
    ),
}


def _of_another_agency(role: str, purpose: str) -> common_pb2.QueryContext:
    return acting(
        Person(f"west-{role}", role, agency=ELSEWHERE), common_pb2.QueryContext(purpose=purpose)
    )


async def _denied_after(deps: Dependencies, position: int) -> list[RecordAccessDenied]:
    return [
        recorded.event
        for recorded in await deps.store.read_all(position)
        if isinstance(recorded.event, RecordAccessDenied)
    ]


@pytest.mark.parametrize("name", list(READS))
async def test_another_agencys_staff_are_refused_the_agencys_own_records_on_the_record(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, name: str
) -> None:
    ask, role, purpose, subject, action = READS[name]
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await assign(stub, "case-1", "cm-dana")
    # The agency's own staff in that role are answered.
    await ask(stub, query_context(role, purpose))
    after = (await deps.store.read_all())[-1].position

    refusal = await refused(ask(stub, _of_another_agency(role, purpose)))

    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    assert "cm-dana" not in refusal.message
    # Told as another agency's command is: the same reason, rule and policy version.
    command = await refused(
        stub.AssignCase(
            pb.AssignCaseRequest(
                context=command_context("coordinator", agency=ELSEWHERE),
                case_id="case-1",
                worker_id="sw-lcsw",
            )
        )
    )
    assert (refusal.rule, refusal.metadata.keys()) == (command.rule, command.metadata.keys())
    [denied] = await _denied_after(deps, after)
    assert (denied.case_id, denied.action, denied.rule, denied.purpose) == (
        subject,
        action.value,
        "no-relationship",
        purpose,
    )
    assert (denied.accessor_id, denied.accessor_agency_id) == (f"west-{role}", ELSEWHERE)


async def test_another_agencys_caller_learns_not_whether_a_budget_line_exists(
    stub: Stub, deps: Dependencies
) -> None:
    """Refused before the line is looked up: a real line and an unknown id alike."""
    context = _of_another_agency("auditor", "confidentiality_review")
    real, unknown = [
        await refused(
            stub.GetBudgetLine(pb.GetBudgetLineRequest(context=context, budget_line=line))
        )
        for line in (LINE, "no-such-line")
    ]
    assert (unknown.code, unknown.message, unknown.details) == (
        real.code,
        real.message,
        real.details,
    )
    assert real.rule == "NO_RELATIONSHIP"


async def test_a_partner_agency_is_still_refused_by_its_role(stub: Stub) -> None:
    """A partner agency acts from its own agency (its commands are taken): these reads refuse
    its role, as they did, not its agency."""
    partner = acting(
        Person("partner-1", "partner_agency", agency=ELSEWHERE),
        common_pb2.QueryContext(purpose="coordination"),
    )
    refusal = await refused(stub.ListWorkers(pb.ListWorkersRequest(context=partner)))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


@pytest.mark.parametrize("name", list(READS))
@pytest.mark.parametrize(
    ("role", "agency"),
    [
        # Another agency's partner, which the agency's check lets through to the role's.
        ("partner_agency", ELSEWHERE),
        ("receptionist", DEFAULT_HOME_AGENCY),
        ("client", DEFAULT_HOME_AGENCY),
    ],
)
async def test_a_role_refused_the_agencys_own_records_is_refused_on_the_record(
    stub: Stub, deps: Dependencies, name: str, role: str, agency: str
) -> None:
    """Refused by role before anything is read, and recorded as a refusal by the policy is:
    ListWorkers and ListPrograms refused these roles with nothing recorded (GetBudgetLine
    recorded them)."""
    ask, _, _, subject, action = READS[name]
    context = acting(
        Person(f"{role}-1", role, agency=agency), common_pb2.QueryContext(purpose="coordination")
    )

    refusal = await refused(ask(stub, context))

    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    [denied] = await _denied_after(deps, 0)
    assert (denied.case_id, denied.action, denied.rule, denied.purpose) == (
        subject,
        action.value,
        "role-not-allowed",
        "coordination",
    )
    assert (denied.accessor_id, denied.accessor_agency_id) == (f"{role}-1", agency)
