"""AssignCase and TransferCase, decided one worker at a time (``caseload_lock``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date

from casetrail_platform.commands import CommandContext, NotFound
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.vocabulary import Action as PolicyAction
from casetrail_platform.policy.vocabulary import Decision
from events.catalog.access import AccessPurpose
from events.catalog.base import CaseEvent
from events.envelope import RecordedEvent
from services.coordination.adapters import read_models as views
from services.coordination.app.handlers.carriers import CaseSupervisor
from services.coordination.app.handlers.running import (
    Dependencies,
    Recorded,
    caseload_lock,
    command_facts,
    earlier_answer,
    on_the_bus,
    run,
)
from services.coordination.domain.agency import Worker
from services.coordination.domain.assignment import decide_assignment, decide_transfer
from services.coordination.domain.commands import AssignCase, TransferCase
from services.coordination.domain.facts import CaseFacts, case_stream
from services.coordination.domain.permissions import Action, require_role


async def assign_case(
    deps: Dependencies,
    context: CommandContext,
    command: AssignCase,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """``principal``: the verified caller; a supervisor assigns a case no one carries, or one
    of their team's (``CaseSupervisor.assignable``), checked again on the history the
    assignment is appended after. Another team's case and an unknown case id get the same
    ``NO_RELATIONSHIP``."""
    if (earlier := await earlier_answer(deps, context)) is not None:
        # Before the team is checked (the case may have moved since); its answer waits for
        # the bus as the first did: it may have been lost waiting.
        return await on_the_bus(deps, earlier)
    require_role(context.actor.role, Action.ASSIGN_CASE)
    supervisor = CaseSupervisor(deps.store, access, principal, command.case_id)
    await supervisor.read_assignable()
    shown = (await answer_decision(access, principal, command.case_id)).sensitive
    try:
        return await _to_worker(
            deps,
            context,
            command,
            lambda history, facts, worker, load, on: decide_assignment(
                supervisor.assignable(history),
                facts,
                worker,
                load,
                command,
                on,
                context.moment(),
                sensitive_shown=shown,
            ),
        )
    except NotFound as missing:
        if missing.what == "case":
            supervisor.unknown()
        raise


async def transfer_case(
    deps: Dependencies,
    context: CommandContext,
    command: TransferCase,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """``principal``: the verified caller; a supervisor transfers their team's cases only
    (``CaseSupervisor``), checked again on the history the transfer is appended after."""
    if (earlier := await earlier_answer(deps, context)) is not None:
        # Before the team is checked (the case may have moved since); its answer waits for
        # the bus as the first did: it may have been lost waiting.
        return await on_the_bus(deps, earlier)
    require_role(context.actor.role, Action.TRANSFER_CASE)
    supervisor = CaseSupervisor(deps.store, access, principal, command.case_id)
    await supervisor.read()
    shown = (await answer_decision(access, principal, command.case_id)).sensitive
    return await _to_worker(
        deps,
        context,
        command,
        lambda history, facts, worker, load, on: decide_transfer(
            supervisor.case(history),
            facts,
            worker,
            load,
            command,
            on,
            context.moment(),
            sensitive_shown=shown,
        ),
    )


async def answer_decision(access: AccessControl, principal: Principal, case_id: str) -> Decision:
    """The policy's decision on what an assignment or a transfer tells its caller of the case's
    needs: a read of the case for coordination. AssignCase's answer shows the needs matched
    under it, and a worker refused is refused in words that tell of a sensitive need only
    when it discloses sensitive values (``fit_refusals``); a refused read discloses none."""
    facts = await access.case_facts(case_id)
    return access.decide(principal, PolicyAction.READ_CASE, AccessPurpose.COORDINATION, facts)


async def _to_worker(
    deps: Dependencies,
    context: CommandContext,
    command: AssignCase | TransferCase,
    decide: Callable[
        [list[RecordedEvent], CaseFacts, Worker | None, int, date], Sequence[CaseEvent]
    ],
) -> Recorded:
    """A command giving the case to ``command.worker_id``: ``decide`` on the case's history,
    its facts, the worker, the worker's caseload and the agency's date, under the worker's
    caseload lock (two assignments never both take the worker's last place), answered once
    the bus has it (``on_the_bus``)."""
    facts = await command_facts(deps, context, command.case_id)
    worker = deps.agency.worker(command.worker_id)
    on = deps.today()
    async with deps.locks.holding([caseload_lock(command.worker_id)]):
        load = await _caseload(deps, worker)
        recorded = await run(
            deps,
            context,
            case_stream(command.case_id),
            lambda history: decide(history, facts, worker, load, on),
        )
    return await on_the_bus(deps, recorded)


async def _caseload(deps: Dependencies, worker: Worker | None) -> int:
    if worker is None:
        return 0
    return await views.caseload(deps.store, deps.read_models, worker.worker_id)
