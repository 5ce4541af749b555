"""Eligibility, budget reservations and releases, insurance claims and their decisions."""

from __future__ import annotations

from typing import TypeVar

from casetrail_platform.ages import age_on
from casetrail_platform.commands import CommandContext, NotFound, derived_id
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.facts import CaseFacts
from casetrail_platform.policy.guard import AccessControl, Disclosure
from casetrail_platform.policy.vocabulary import Action as PolicyAction
from events.catalog.access import AccessPurpose, RecordSection
from services.coordination.adapters import read_models as views
from services.coordination.app.handlers.carriers import (
    CaseSupervisor,
    carried,
    carried_case,
)
from services.coordination.app.handlers.running import (
    SOURCE,
    Dependencies,
    Recorded,
    case_lock,
    client_schedule,
    command_facts,
    earlier_answer,
    run,
    run_folded,
)
from services.coordination.domain import errors
from services.coordination.domain.budget import BUDGET_LINE
from services.coordination.domain.commands import (
    DetermineEligibility,
    FileInsuranceClaim,
    RecordClaimDecision,
    ReleaseBudget,
    ReserveBudget,
)
from services.coordination.domain.eligibility import decide_eligibility
from services.coordination.domain.facts import budget_stream, case_stream
from services.coordination.domain.funding import (
    decide_claim,
    decide_claim_decision,
    decide_release,
    decide_reservation,
)
from services.coordination.domain.permissions import Action, require_role

T = TypeVar("T")


async def determine_eligibility(
    deps: Dependencies,
    context: CommandContext,
    command: DetermineEligibility,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """``principal``: the verified caller, whose ``AGE_CONTRADICTS_DATE_OF_BIRTH`` is recorded
    as a read of the case's identity before it is answered (``_told_age_contradicted``)."""
    # Before the case's worker and the client's age are checked: either may have changed since
    # the first attempt (a transfer; a date of birth recorded or corrected, a birthday).
    if (earlier := await earlier_answer(deps, context)) is not None:
        return earlier
    require_role(context.actor.role, Action.DETERMINE_ELIGIBILITY)
    await carried_case(deps, context, Action.DETERMINE_ELIGIBILITY, command.case_id)
    facts = await command_facts(deps, context, command.case_id)
    program = _required(deps.agency.program(command.program_id), "program", command.program_id)
    on = deps.today()
    born = await views.date_of_birth(deps.read_models, facts.client_id)
    recorded_age = None if born is None else age_on(born, on)
    # The facts a contradiction's record is decided on, waited for before deciding whatever
    # age is stated: waited for only on a contradiction, a wrong age alone was answered
    # FACTS_NOT_CAUGHT_UP, unrecorded, while the policy's facts lagged, and the right one
    # decided, so a worker told the ages apart with nothing on the record.
    told_facts = (
        None
        if recorded_age is None
        else await access.reader_facts(
            principal,
            PolicyAction.READ_CASE,
            AccessPurpose.COORDINATION,
            command.case_id,
            subject=command.case_id,
        )
    )
    try:
        return await run(
            deps,
            context,
            case_stream(command.case_id),
            carried(
                context,
                Action.DETERMINE_ELIGIBILITY,
                lambda _case: decide_eligibility(
                    facts, program, command, on, context.moment(), recorded_age
                ),
            ),
        )
    except errors.AgeContradictsDateOfBirth:
        assert told_facts is not None  # a contradiction needs a recorded age
        await _told_age_contradicted(access, principal, command.case_id, told_facts)
        raise


async def _told_age_contradicted(
    access: AccessControl, principal: Principal, case_id: str, policy_facts: CaseFacts
) -> None:
    """Record the refusal ``AGE_CONTRADICTS_DATE_OF_BIRTH`` as what it discloses: that the
    age stated is not the one the client's recorded date of birth gives, a read of the case's
    identity (as intake's GetClient is recorded), decided by the policy for coordination (a
    caller it refuses is refused that instead, recorded). Unrecorded, a caller stating one
    age after another would learn the client's age from the refusals with nothing on the
    record; the decision the right age gets is recorded as the case's event."""
    purpose = AccessPurpose.COORDINATION
    decision = await access.authorize(principal, PolicyAction.READ_CASE, purpose, policy_facts)
    told = Disclosure(case_id, decision, None, (), (RecordSection.IDENTITY,))
    await access.release(None, principal, purpose, [told])


async def reserve_budget(
    deps: Dependencies,
    context: CommandContext,
    command: ReserveBudget,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """``principal``: the verified caller; a supervisor commits the agency's money for their
    team's cases only (``CaseSupervisor``: the line's append is guarded on the case's stream).
    A case no one carries has no team yet: unlike AssignCase, which gives the case its team
    (any supervisor may step in there), its money waits for that team, the coordinator
    reserving meanwhile. So a case of no team, another team's and an unknown case id get the
    same NO_RELATIONSHIP, before anything else of the case is read or written."""
    if (earlier := await earlier_answer(deps, context)) is not None:
        return earlier
    require_role(context.actor.role, Action.RESERVE_BUDGET)
    supervisor = CaseSupervisor(deps.store, access, principal, command.case_id)
    await supervisor.read()
    line = _required(
        deps.agency.budget_line(command.budget_line), "budget line", command.budget_line
    )
    reservation_id = derived_id(context, SOURCE, "reservation")
    async with deps.locks.holding([case_lock(command.case_id)]):
        facts = await command_facts(deps, context, command.case_id)
        schedule = await client_schedule(deps, facts.client_id)
        return await run_folded(
            deps,
            context,
            budget_stream(line.budget_line),
            BUDGET_LINE,
            lambda state: decide_reservation(
                line, state, facts, schedule, command, reservation_id, context.moment()
            ),
            guard=supervisor.read,
        )


async def release_budget(
    deps: Dependencies,
    context: CommandContext,
    command: ReleaseBudget,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """As ``reserve_budget``: a supervisor gives back money of their team's cases only."""
    if (earlier := await earlier_answer(deps, context)) is not None:
        return earlier
    require_role(context.actor.role, Action.RESERVE_BUDGET)
    supervisor = CaseSupervisor(deps.store, access, principal, command.case_id)
    await supervisor.read()
    line = _required(
        deps.agency.budget_line(command.budget_line), "budget line", command.budget_line
    )
    await command_facts(deps, context, command.case_id)
    return await run_folded(
        deps,
        context,
        budget_stream(line.budget_line),
        BUDGET_LINE,
        lambda state: decide_release(line, state, command, context.moment()),
        guard=supervisor.read,
    )


async def file_insurance_claim(
    deps: Dependencies, context: CommandContext, command: FileInsuranceClaim
) -> Recorded:
    if (earlier := await earlier_answer(deps, context)) is not None:
        return earlier
    require_role(context.actor.role, Action.HANDLE_CLAIM)
    await carried_case(deps, context, Action.HANDLE_CLAIM, command.case_id)
    facts = await command_facts(deps, context, command.case_id)
    schedule = await client_schedule(deps, facts.client_id)
    claim_id = derived_id(context, SOURCE, "claim")
    return await run(
        deps,
        context,
        case_stream(command.case_id),
        carried(
            context,
            Action.HANDLE_CLAIM,
            lambda case: decide_claim(case, facts, schedule, command, claim_id, context.moment()),
        ),
    )


async def record_claim_decision(
    deps: Dependencies, context: CommandContext, command: RecordClaimDecision
) -> Recorded:
    if (earlier := await earlier_answer(deps, context)) is not None:
        return earlier
    require_role(context.actor.role, Action.HANDLE_CLAIM)
    await carried_case(deps, context, Action.HANDLE_CLAIM, command.case_id)
    await command_facts(deps, context, command.case_id)
    return await run(
        deps,
        context,
        case_stream(command.case_id),
        carried(
            context,
            Action.HANDLE_CLAIM,
            lambda case: decide_claim_decision(case, command, context.moment()),
        ),
    )


def _required(value: T | None, what: str, identifier: str) -> T:
    if value is None:
        raise NotFound(what, identifier)
    return value
