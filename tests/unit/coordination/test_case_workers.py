"""A case-carrying worker (case manager, social worker) does coordination's work only on the
case assigned to them: on another's case they are refused, as on a case that does not exist."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from casetrail_platform.store.sqlite import SqliteEventStore
from tests.unit.coordination.rpc import (
    HOME_CARE_CO,
    NEXT_WEEK,
    PT_CLINIC,
    Ask,
    assigned_case,
    case_commands,
    refused_alike,
    schedule_request,
)
from tests.unit.coordination.support import IntakeFeed, command_context

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub


def _by_another(role: str, ask: Ask) -> Callable[[str], Any]:
    """``ask`` by a worker of ``role`` who carries no case (a context built for each call)."""
    return lambda case_id: ask(command_context(role, user=f"{role}-other"), case_id)


CLAIMS = frozenset({"FileInsuranceClaim", "RecordClaimDecision"})
"""A social worker handles no claim, whoever's the case (refused by role)."""


async def test_a_worker_not_on_the_case_is_refused_as_on_a_case_that_does_not_exist(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Before, any case manager or social worker referred (disclosing the case to another
    # agency), scheduled, moved, called off or recorded services, decided eligibility and
    # filed claims on any case, and an unknown case answered NOT_FOUND.
    await assigned_case(stub, intake, "cm-dana", recipient=PT_CLINIC.provider_id)
    service_id = (
        await stub.ScheduleService(
            schedule_request(
                "case-1", "home_care", NEXT_WEEK, provider=HOME_CARE_CO, role="coordinator"
            )
        )
    ).service_id
    before = await store.read_all()

    commands = case_commands(stub, service_id)
    for role, names in (
        ("case_manager", list(commands)),
        ("social_worker", [n for n in commands if n not in CLAIMS]),
    ):
        for name in names:
            refusal = await refused_alike(_by_another(role, commands[name]))
            assert refusal.code is grpc.StatusCode.PERMISSION_DENIED, (role, name)
            assert "not assigned to them" in refusal.message, (role, name)
    assert await store.read_all() == before

    # The case's own worker does it.
    scheduled = await commands["ScheduleService"](
        command_context("case_manager", user="cm-dana"), "case-1"
    )
    assert scheduled.service_id
