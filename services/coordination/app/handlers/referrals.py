"""Referrals: made (with the access policy's decision on disclosing the case), withdrawn, and
answered by the partner agency."""

from __future__ import annotations

from datetime import UTC, datetime

from casetrail_platform.commands import CommandContext, derived_id
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.decide import decide_disclosure
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.vocabulary import Decision
from events.catalog.access import AccessPurpose, DisclosureBasis, RecordSection, SensitiveCategory
from services.coordination.app.handlers.assignment import answer_decision
from services.coordination.app.handlers.carriers import carried, carried_case
from services.coordination.app.handlers.running import (
    SOURCE,
    Dependencies,
    Recorded,
    case_lock,
    command_facts,
    earlier_answer,
    on_the_bus,
    run,
)
from services.coordination.domain.case import case_state
from services.coordination.domain.commands import (
    AcceptReferral,
    CompleteReferral,
    DeclineReferral,
    MakeReferral,
    WithdrawReferral,
)
from services.coordination.domain.facts import case_stream
from services.coordination.domain.permissions import Action, require_role
from services.coordination.domain.referrals import (
    addressed_referral,
    decide_answer,
    decide_referral,
    decide_withdrawal,
)


async def make_referral(
    deps: Dependencies,
    context: CommandContext,
    command: MakeReferral,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """``principal``: the verified caller (its entitlements decide the emergency exception)."""
    if (earlier := await earlier_answer(deps, context)) is not None:
        return earlier
    require_role(context.actor.role, Action.MAKE_REFERRAL)
    await carried_case(deps, context, Action.MAKE_REFERRAL, command.case_id)
    disclosure = await referral_disclosure(access, principal, command)
    referral_id = derived_id(context, SOURCE, "referral")
    # Under the case's lock, as the closure's follow-up withdraws the case's running
    # referrals: either this referral is recorded before the follow-up reads the case, and is
    # withdrawn by it, or it reads a closed case and is refused.
    async with deps.locks.holding([case_lock(command.case_id)]):
        facts = await command_facts(deps, context, command.case_id)
        return await run(
            deps,
            context,
            case_stream(command.case_id),
            carried(
                context,
                Action.MAKE_REFERRAL,
                lambda _case: decide_referral(
                    facts, command, referral_id, disclosure, context.moment()
                ),
            ),
        )


async def withdraw_referral(
    deps: Dependencies,
    context: CommandContext,
    command: WithdrawReferral,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """``principal``: the verified caller, told of counseling in a refusal only as the policy
    lets them read the case's needs (``answer_decision``)."""
    if (earlier := await earlier_answer(deps, context)) is not None:
        # Its answer waits for the bus as the first did: it may have been lost waiting.
        return await on_the_bus(deps, earlier)
    # decide_withdrawal checks the case's worker again on the history it decides on.
    await carried_case(deps, context, Action.WITHDRAW_REFERRAL, command.case_id)
    facts = await command_facts(deps, context, command.case_id)
    shown = (await answer_decision(access, principal, command.case_id)).sensitive
    today = deps.today()
    recorded = await run(
        deps,
        context,
        case_stream(command.case_id),
        lambda history: decide_withdrawal(
            case_state(history),
            command,
            context.actor,
            facts,
            deps.agency,
            today,
            context.moment(),
            sensitive_shown=shown,
        ),
    )
    # The partner agency reads no more of the case from the answer on (``on_the_bus``).
    return await on_the_bus(deps, recorded)


REFERRED_SCOPE = frozenset({RecordSection.REFERRALS})
"""What a referral discloses to the provider: the referral itself (need, service, reason)."""


async def referral_disclosure(
    access: AccessControl, principal: Principal, command: MakeReferral
) -> Decision:
    """The access policy's decision on disclosing the case to the referral's provider, on the
    case's facts as the bus has them (``facts_as_on_the_bus``): a consent granted or revoked
    at intake counts from its answer on."""
    facts = await access.facts_as_on_the_bus(command.case_id)
    category = command.need_category.value
    categories = frozenset(c for c in SensitiveCategory if c.value == category)
    return decide_disclosure(
        principal,
        PURPOSE_OF_BASIS[command.disclosure_basis],
        facts,
        command.provider.provider_id,
        REFERRED_SCOPE,
        categories,
        home_agency=access.home_agency,
        # The real clock, never the caller's stated occurred_at: a backdated command must not
        # revive an expired or revoked consent.
        now=datetime.now(UTC),
    )


PURPOSE_OF_BASIS = {
    DisclosureBasis.CONSENT: AccessPurpose.COORDINATION,
    DisclosureBasis.LEGAL_OBLIGATION: AccessPurpose.LEGAL_OBLIGATION,
    DisclosureBasis.EMERGENCY: AccessPurpose.EMERGENCY,
}


async def answer_referral(
    deps: Dependencies,
    context: CommandContext,
    command: AcceptReferral | DeclineReferral | CompleteReferral,
    acting_for: str | None,
) -> Recorded:
    """``acting_for``: the agency of a partner agency's verified token (``None`` for staff)."""
    if (earlier := await earlier_answer(deps, context)) is not None:
        # Its answer waits for the bus as the first did: it may have been lost waiting.
        return await on_the_bus(deps, earlier)
    require_role(context.actor.role, Action.ANSWER_REFERRAL)
    # Before anything of the case: a partner learns nothing of a case or referral not
    # addressed to it, not whether it exists nor when it opened (decide_answer checks again).
    addressed_referral(
        case_state(await deps.store.read_stream(case_stream(command.case_id))),
        command.referral_id,
        acting_for,
    )
    facts = await command_facts(deps, context, command.case_id)
    recorded = await run(
        deps,
        context,
        case_stream(command.case_id),
        lambda history: decide_answer(
            case_state(history), facts, command, acting_for, context.moment()
        ),
    )
    # Accepted, the partner reads the referred scope from the answer on; declined or
    # completed, it reads no more (``on_the_bus``).
    return await on_the_bus(deps, recorded)
