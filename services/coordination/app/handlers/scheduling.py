"""Services on the client's schedule: scheduled, moved, cancelled and delivered, guarded by the
case's stream (``CaseCarrier``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from casetrail_platform.commands import CommandContext, derived_id
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.redaction import category_revealed
from casetrail_platform.policy.vocabulary import Action as PolicyAction
from events.catalog.access import AccessPurpose, SensitiveCategory
from events.catalog.base import CaseEvent
from services.coordination.adapters import read_models as views
from services.coordination.app.handlers.carriers import CaseCarrier, carried_case
from services.coordination.app.handlers.running import (
    SOURCE,
    Dependencies,
    Recorded,
    case_lock,
    client_schedule,
    command_facts,
    earlier_answer,
    run_folded,
)
from services.coordination.domain.case import CaseState
from services.coordination.domain.commands import (
    CancelService,
    RecordServiceDelivered,
    RescheduleService,
    ScheduleService,
)
from services.coordination.domain.facts import CaseFacts, schedule_stream
from services.coordination.domain.permissions import Action, require_role
from services.coordination.domain.schedule import SCHEDULE, Schedule, ScheduleShown
from services.coordination.domain.scheduling import (
    check_service_window,
    decide_cancel,
    decide_delivered,
    decide_reschedule,
    decide_schedule,
    provided_service,
)

ShownTo = Callable[[CaseFacts], Awaitable[ScheduleShown]]
"""What of the schedule of the case's client the caller is shown (``schedule_shown``)."""


async def schedule_service(
    deps: Dependencies,
    context: CommandContext,
    command: ScheduleService,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """``principal``: the verified caller, told of a service their slot overlaps as their own
    ``GetClientSchedule`` shows it (``schedule_shown``)."""
    if (earlier := await earlier_answer(deps, context)) is not None:
        return earlier
    check_service_window(command.starts_at, command.ends_at, context.moment())
    require_role(context.actor.role, Action.SCHEDULE_SERVICE)
    service_id = derived_id(context, SOURCE, "service")
    async with deps.locks.holding([case_lock(command.case_id)]):
        await carried_case(deps, context, Action.SCHEDULE_SERVICE, command.case_id)
        consented = await _consented(access, command)
        return await _on_the_schedule(
            deps,
            context,
            Action.SCHEDULE_SERVICE,
            command.case_id,
            lambda schedule, facts, case, shown: decide_schedule(
                schedule,
                facts,
                case,
                command,
                service_id,
                consented,
                context.moment(),
                shown=shown,
            ),
            _shown_to(deps, principal, access),
        )


async def _consented(
    access: AccessControl, command: ScheduleService
) -> dict[str, frozenset[SensitiveCategory]]:
    """The sensitive categories each consent in force on the case names, by consent id, for a
    service from a referral whose kind tells of one (none asked for any other): read as
    ``MakeReferral`` reads them (``facts_as_on_the_bus``, on the real clock), so a consent
    revoked a moment ago at intake counts."""
    if command.referral_id is None or category_revealed(command.kind.value) is None:
        return {}
    facts = await access.facts_as_on_the_bus(command.case_id)
    now = datetime.now(UTC)
    return {c.consent_id: c.categories for c in facts.consents if c.in_force(now)}


async def reschedule_service(
    deps: Dependencies,
    context: CommandContext,
    command: RescheduleService,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """``principal``: as for ``schedule_service``."""
    if (earlier := await earlier_answer(deps, context)) is not None:
        return earlier
    check_service_window(command.starts_at, command.ends_at, context.moment())
    require_role(context.actor.role, Action.SCHEDULE_SERVICE)
    # Under the case's lock, as a new service is: a service moved past the closure after the
    # closure's follow-up read the schedule would outlive the case.
    async with deps.locks.holding([case_lock(command.case_id)]):
        await carried_case(deps, context, Action.SCHEDULE_SERVICE, command.case_id)
        return await _on_the_schedule(
            deps,
            context,
            Action.SCHEDULE_SERVICE,
            command.case_id,
            lambda schedule, facts, case, shown: decide_reschedule(
                schedule, facts, case, command, context.moment(), shown=shown
            ),
            _shown_to(deps, principal, access),
        )


async def cancel_service(
    deps: Dependencies, context: CommandContext, command: CancelService, acting_for: str | None
) -> Recorded:
    if (earlier := await earlier_answer(deps, context)) is not None:
        return earlier
    require_role(context.actor.role, Action.CANCEL_SERVICE)
    await _require_provided(deps, command.case_id, command.service_id, acting_for)
    await carried_case(deps, context, Action.CANCEL_SERVICE, command.case_id)
    # Under the case's lock, as a reservation is decided: a reservation reads the schedule on
    # one stream and records on another, so a cancellation between the two would leave money
    # reserved for a service no longer there (the cancellation's follow-up releases only what
    # was reserved before it).
    async with deps.locks.holding([case_lock(command.case_id)]):
        return await _on_the_schedule(
            deps,
            context,
            Action.CANCEL_SERVICE,
            command.case_id,
            lambda schedule, _facts, _case, _shown: decide_cancel(
                schedule, command, acting_for, context.moment()
            ),
        )


async def record_service_delivered(
    deps: Dependencies,
    context: CommandContext,
    command: RecordServiceDelivered,
    principal: Principal,
    access: AccessControl,
    acting_for: str | None,
) -> Recorded:
    """``principal``: as for ``schedule_service`` (a partner agency, ``acting_for``, is told of
    no other service, ``decide_delivered``)."""
    if (earlier := await earlier_answer(deps, context)) is not None:
        return earlier
    check_service_window(command.starts_at, command.ends_at, context.moment())
    require_role(context.actor.role, Action.RECORD_DELIVERY)
    await _require_provided(deps, command.case_id, command.service_id, acting_for)
    await carried_case(deps, context, Action.RECORD_DELIVERY, command.case_id)
    return await _on_the_schedule(
        deps,
        context,
        Action.RECORD_DELIVERY,
        command.case_id,
        lambda schedule, facts, case, shown: decide_delivered(
            schedule,
            facts,
            case,
            command,
            datetime.now(UTC),
            acting_for,
            context.moment(),
            shown=shown,
        ),
        _shown_to(deps, principal, access) if acting_for is None else None,
    )


async def _on_the_schedule(
    deps: Dependencies,
    context: CommandContext,
    action: Action,
    case_id: str,
    decide: Callable[[Schedule, CaseFacts, CaseState, ScheduleShown], Sequence[CaseEvent]],
    shown_to: ShownTo | None = None,
) -> Recorded:
    """A command recorded on the client's schedule: ``decide`` on the schedule, the case's
    facts, the case as ``CaseCarrier`` last read it, whose read guards the append (a
    TransferCase committed in between makes the command read again), and what of the schedule
    the caller is shown (``shown_to``; without it, nothing: a command that clashes with no
    service, or a partner agency's)."""
    facts = await command_facts(deps, context, case_id)
    shown = ScheduleShown() if shown_to is None else await shown_to(facts)
    carrier = CaseCarrier(deps.store, context, action, case_id)
    return await run_folded(
        deps,
        context,
        schedule_stream(facts.client_id),
        SCHEDULE,
        lambda schedule: decide(schedule, facts, carrier.case, shown),
        guard=carrier.read,
    )


def _shown_to(deps: Dependencies, principal: Principal, access: AccessControl) -> ShownTo:
    return lambda facts: schedule_shown(deps, principal, access, facts)


async def schedule_shown(
    deps: Dependencies, principal: Principal, access: AccessControl, facts: CaseFacts
) -> ScheduleShown:
    """What of the schedule of the client of ``facts``' case ``principal`` is shown, as their
    ``GetClientSchedule`` would show it: each of the client's cases decided as a read for
    coordination, as an assignment's answer is (``assignment.answer_decision``), in one read
    of the policy's facts. The command's own case counts as read whatever those facts hold
    yet: the caller was let act on it (on coordination's own record of who carries it), and a
    conflict names its services of no special-data kind; of the others it tells the slot only
    to a caller the policy shows the case's sensitive values."""
    cases = await views.cases_of_client(deps.read_models, facts.client_id)
    policy_facts = await access.cases_facts(cases)
    decisions = {
        case_id: access.decide(
            principal, PolicyAction.READ_CASE, AccessPurpose.COORDINATION, policy_facts[case_id]
        )
        for case_id in cases
    }
    readable = {case_id for case_id, decision in decisions.items() if decision.allowed}
    return ScheduleShown(
        readable=frozenset({facts.case_id, *readable}),
        sensitive=frozenset(
            case_id for case_id, decision in decisions.items() if decision.sensitive
        ),
    )


async def _require_provided(
    deps: Dependencies, case_id: str, service_id: str, acting_for: str | None
) -> None:
    """Before anything of the case: a partner agency (``acting_for``) learns nothing of a case
    or service it does not provide, not whether it exists nor when the case opened (the
    decision checks again on the schedule it decides on)."""
    if acting_for is None:
        return
    facts = await views.case_facts(deps.read_models, case_id)
    schedule = None if facts is None else await client_schedule(deps, facts.client_id)
    provided_service(schedule, case_id, service_id, acting_for)
