"""Running coordination's commands: facts from the bus, history from coordination's own store.

Each command is decided on exactly one stream of the store (``casetrail_platform.decide.execute``):
the case (assignment, referrals, eligibility, claims), the client's schedule (services of all of
the client's cases) or a budget line. Facts from other streams and from the bus are read
before and passed to the pure decision; a retried command returns its first result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from typing import TypeVar

from pydantic import ValidationError

from casetrail_platform.ages import age_on, agency_today
from casetrail_platform.commands import CommandContext, InvalidCommand, NotFound, derived_id
from casetrail_platform.decide import (
    Published,
    ReadGuard,
    execute,
    execute_folded,
    folded,
    once_published,
    published_at_once,
    recorded_before,
)
from casetrail_platform.folded import Fold
from casetrail_platform.identity.principal import Principal
from casetrail_platform.locking.inprocess import InProcessLocks
from casetrail_platform.locking.port import Locks
from casetrail_platform.policy.decide import decide_disclosure
from casetrail_platform.policy.facts import CaseFacts as PolicyFacts
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.vocabulary import Decision
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.store.port import EventStore, StreamVersion
from events.catalog.access import (
    AccessPurpose,
    DisclosureBasis,
    RecordSection,
    SensitiveCategory,
)
from events.catalog.assignment import CASE_CARRYING_ROLES
from events.catalog.base import CaseEvent, Role
from events.catalog_registry import model_named
from events.envelope import Actor, RecordedEvent
from services.coordination.adapters import read_models as views
from services.coordination.domain import errors
from services.coordination.domain.agency import Agency, Worker
from services.coordination.domain.assignment import decide_assignment, decide_transfer
from services.coordination.domain.budget import BUDGET_LINE
from services.coordination.domain.case import CaseState, case_state
from services.coordination.domain.commands import (
    AcceptReferral,
    AssignCase,
    CancelService,
    CompleteReferral,
    DeclineReferral,
    DetermineEligibility,
    FileInsuranceClaim,
    MakeReferral,
    RecordClaimDecision,
    RecordServiceDelivered,
    ReleaseBudget,
    RescheduleService,
    ReserveBudget,
    ScheduleService,
    TransferCase,
    WithdrawReferral,
)
from services.coordination.domain.eligibility import (
    decide_eligibility,
    missing_facts,
    with_age,
)
from services.coordination.domain.facts import (
    CaseFacts,
    budget_stream,
    case_stream,
    check_occurred_at,
    schedule_stream,
)
from services.coordination.domain.funding import (
    decide_claim,
    decide_claim_decision,
    decide_release,
    decide_reservation,
)
from services.coordination.domain.permissions import Action, require_case_worker, require_role
from services.coordination.domain.referrals import (
    addressed_referral,
    decide_answer,
    decide_referral,
    decide_withdrawal,
)
from services.coordination.domain.schedule import SCHEDULE, Schedule
from services.coordination.domain.scheduling import (
    check_service_window,
    decide_cancel,
    decide_delivered,
    decide_reschedule,
    decide_schedule,
    provided_service,
)
from services.coordination.domain.validation import problems_of

log = logging.getLogger(__name__)

SERVICE = "coordination"
SOURCE = "casetrail/coordination"

T = TypeVar("T")
S = TypeVar("S")
Recorded = list[RecordedEvent]


@dataclass(frozen=True, slots=True)
class Dependencies:
    store: EventStore
    read_models: ReadModelStore
    agency: Agency
    locks: Locks = field(default_factory=InProcessLocks)
    """Shared with coordination's other replicas: assignments to one worker are decided one
    at a time (``caseload_lock``), so two of them never both take the worker's last place."""
    time_zone: tzinfo = UTC
    """The agency's: rules about what is valid now (licences, ages) are checked on its date."""
    published: Published = published_at_once
    """Whether the bus has acknowledged the store's events up to a position, waiting a bounded
    time (``ServiceHost.published``); by default (tests without a relay) at once."""

    def today(self) -> date:
        """The date rules about what is valid now are checked on: the agency's, on the server's
        clock, never the caller's ``occurred_at``, which may be backdated (README, "Limits")."""
        return agency_today(self.time_zone)


def caseload_lock(worker_id: str) -> str:
    return f"coordination.caseload:{worker_id}"


def case_lock(case_id: str) -> str:
    """Held by what adds referrals, services or reservations to a case or moves or cancels a
    service, from reading its facts to recording, and by the closure's follow-up
    (``app.follow_ups``): either the addition is recorded before the follow-up reads the case,
    schedule and budget (and is undone by it), or it reads a closed case and is refused; a
    reservation never reads a schedule a cancellation is changing."""
    return f"coordination.case:{case_id}"


async def assign_case(deps: Dependencies, context: CommandContext, command: AssignCase) -> Recorded:
    require_role(context.actor.role, Action.ASSIGN_CASE)
    facts = await command_facts(deps, context, command.case_id)
    worker = deps.agency.worker(command.worker_id)
    on = deps.today()
    async with deps.locks.holding([caseload_lock(command.worker_id)]):
        load = await _caseload(deps, worker)
        recorded = await _run(
            deps,
            context,
            case_stream(command.case_id),
            lambda history: decide_assignment(
                case_state(history), facts, worker, load, command, on
            ),
        )
    return await on_the_bus(deps, recorded)


async def transfer_case(
    deps: Dependencies,
    context: CommandContext,
    command: TransferCase,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """``principal``: the verified caller; a supervisor transfers their team's cases only
    (``CaseSupervisor``), checked again on the history the transfer is appended after."""
    require_role(context.actor.role, Action.TRANSFER_CASE)
    if (earlier := await _recorded_before(deps, context, principal)) is not None:
        # Its answer waits for the bus as the first did: it may have been lost waiting.
        return await on_the_bus(deps, earlier)
    supervisor = CaseSupervisor(deps.store, access, principal, command.case_id)
    await supervisor.read()
    facts = await command_facts(deps, context, command.case_id)
    worker = deps.agency.worker(command.worker_id)
    on = deps.today()
    async with deps.locks.holding([caseload_lock(command.worker_id)]):
        load = await _caseload(deps, worker)
        recorded = await _run(
            deps,
            context,
            case_stream(command.case_id),
            lambda history: decide_transfer(
                supervisor.case(history), facts, worker, load, command, on
            ),
        )
    return await on_the_bus(deps, recorded)


async def on_the_bus(deps: Dependencies, recorded: Recorded) -> Recorded:
    """``recorded`` once the bus has it (``decide.once_published``), for the commands whose
    event ends or opens someone's right to the case: an assignment or a transfer (the previous
    worker's and team's; planning's CloseCase and intake's ReopenCase also hold a supervisor to
    the team as the bus has it, ``AccessControl.require_supervision``), a referral's
    withdrawal, decline or completion (the partner agency's) and its acceptance (the partner
    reads from then on). A read or a supervisor's command sent after the answer then counts
    it (README, "A transfer not delivered yet")."""
    await once_published(deps.published, recorded, "case event changing who may read")
    return recorded


async def make_referral(
    deps: Dependencies,
    context: CommandContext,
    command: MakeReferral,
    principal: Principal,
    access: AccessControl,
) -> Recorded:
    """``principal``: the verified caller (its entitlements decide the emergency exception)."""
    require_role(context.actor.role, Action.MAKE_REFERRAL)
    await carried_case(deps, context, Action.MAKE_REFERRAL, command.case_id)
    disclosure = await referral_disclosure(access, principal, command)
    referral_id = derived_id(context, SOURCE, "referral")
    # Under the case's lock, as the closure's follow-up withdraws the case's running
    # referrals: either this referral is recorded before the follow-up reads the case, and is
    # withdrawn by it, or it reads a closed case and is refused.
    async with deps.locks.holding([case_lock(command.case_id)]):
        facts = await command_facts(deps, context, command.case_id)
        return await _run(
            deps,
            context,
            case_stream(command.case_id),
            carried(
                context,
                Action.MAKE_REFERRAL,
                lambda _case: decide_referral(facts, command, referral_id, disclosure),
            ),
        )


async def withdraw_referral(
    deps: Dependencies, context: CommandContext, command: WithdrawReferral
) -> Recorded:
    # decide_withdrawal checks the case's worker again on the history it decides on.
    await carried_case(deps, context, Action.WITHDRAW_REFERRAL, command.case_id)
    await command_facts(deps, context, command.case_id)
    recorded = await _run(
        deps,
        context,
        case_stream(command.case_id),
        lambda history: decide_withdrawal(case_state(history), command, context.actor),
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
    require_role(context.actor.role, Action.ANSWER_REFERRAL)
    # Before anything of the case: a partner learns nothing of a case or referral not
    # addressed to it, not whether it exists nor when it opened (decide_answer checks again).
    addressed_referral(
        case_state(await deps.store.read_stream(case_stream(command.case_id))),
        command.referral_id,
        acting_for,
    )
    facts = await command_facts(deps, context, command.case_id)
    recorded = await _run(
        deps,
        context,
        case_stream(command.case_id),
        lambda history: decide_answer(case_state(history), facts, command, acting_for),
    )
    # Accepted, the partner reads the referred scope from the answer on; declined or
    # completed, it reads no more (``on_the_bus``).
    return await on_the_bus(deps, recorded)


async def schedule_service(
    deps: Dependencies, context: CommandContext, command: ScheduleService
) -> Recorded:
    check_service_window(command.starts_at, command.ends_at, _moment(context))
    require_role(context.actor.role, Action.SCHEDULE_SERVICE)
    service_id = derived_id(context, SOURCE, "service")
    async with deps.locks.holding([case_lock(command.case_id)]):
        await carried_case(deps, context, Action.SCHEDULE_SERVICE, command.case_id)
        facts = await command_facts(deps, context, command.case_id)
        carrier = CaseCarrier(deps.store, context, Action.SCHEDULE_SERVICE, command.case_id)
        return await _run_folded(
            deps,
            context,
            schedule_stream(facts.client_id),
            SCHEDULE,
            lambda schedule: decide_schedule(schedule, facts, carrier.case, command, service_id),
            guard=carrier.read,
        )


async def reschedule_service(
    deps: Dependencies, context: CommandContext, command: RescheduleService
) -> Recorded:
    check_service_window(command.starts_at, command.ends_at, _moment(context))
    require_role(context.actor.role, Action.SCHEDULE_SERVICE)
    # Under the case's lock, as a new service is: a service moved past the closure after the
    # closure's follow-up read the schedule would outlive the case.
    async with deps.locks.holding([case_lock(command.case_id)]):
        await carried_case(deps, context, Action.SCHEDULE_SERVICE, command.case_id)
        facts = await command_facts(deps, context, command.case_id)
        carrier = CaseCarrier(deps.store, context, Action.SCHEDULE_SERVICE, command.case_id)
        return await _run_folded(
            deps,
            context,
            schedule_stream(facts.client_id),
            SCHEDULE,
            lambda schedule: decide_reschedule(schedule, facts, command),
            guard=carrier.read,
        )


async def cancel_service(
    deps: Dependencies, context: CommandContext, command: CancelService, acting_for: str | None
) -> Recorded:
    require_role(context.actor.role, Action.CANCEL_SERVICE)
    await _require_provided(deps, command.case_id, command.service_id, acting_for)
    await carried_case(deps, context, Action.CANCEL_SERVICE, command.case_id)
    # Under the case's lock, as a reservation is decided: a reservation reads the schedule on
    # one stream and records on another, so a cancellation between the two would leave money
    # reserved for a service no longer there (the cancellation's follow-up releases only what
    # was reserved before it).
    async with deps.locks.holding([case_lock(command.case_id)]):
        facts = await command_facts(deps, context, command.case_id)
        carrier = CaseCarrier(deps.store, context, Action.CANCEL_SERVICE, command.case_id)
        return await _run_folded(
            deps,
            context,
            schedule_stream(facts.client_id),
            SCHEDULE,
            lambda schedule: decide_cancel(schedule, command, acting_for),
            guard=carrier.read,
        )


async def record_service_delivered(
    deps: Dependencies,
    context: CommandContext,
    command: RecordServiceDelivered,
    acting_for: str | None,
) -> Recorded:
    check_service_window(command.starts_at, command.ends_at, _moment(context))
    require_role(context.actor.role, Action.RECORD_DELIVERY)
    await _require_provided(deps, command.case_id, command.service_id, acting_for)
    await carried_case(deps, context, Action.RECORD_DELIVERY, command.case_id)
    facts = await command_facts(deps, context, command.case_id)
    carrier = CaseCarrier(deps.store, context, Action.RECORD_DELIVERY, command.case_id)
    return await _run_folded(
        deps,
        context,
        schedule_stream(facts.client_id),
        SCHEDULE,
        lambda schedule: decide_delivered(schedule, facts, command, datetime.now(UTC), acting_for),
        guard=carrier.read,
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


async def determine_eligibility(
    deps: Dependencies, context: CommandContext, command: DetermineEligibility
) -> Recorded:
    require_role(context.actor.role, Action.DETERMINE_ELIGIBILITY)
    await carried_case(deps, context, Action.DETERMINE_ELIGIBILITY, command.case_id)
    facts = await command_facts(deps, context, command.case_id)
    program = _required(deps.agency.program(command.program_id), "program", command.program_id)
    on = deps.today()
    born = await views.date_of_birth(deps.read_models, facts.client_id)
    if born is not None:
        # The record's age, on the day of the decision: a caller's stated age that differs
        # is refused rather than used (a state resource would rest on an age the client's
        # record contradicts) or silently replaced (the caller would believe the decision
        # rests on it, and the discrepancy would go unnoticed).
        age = age_on(born, on)
        if command.facts.age is not None and command.facts.age != age:
            raise errors.age_contradicts_date_of_birth(facts.client_id, program.program_id)
        command = with_age(command, age)
    elif [p.field for p in missing_facts(program, command.facts)] == ["facts.age"]:
        # Only the age is missing, and it would come from intake's date of birth.
        raise errors.client_age_not_known(facts.client_id, program.program_id)
    return await _run(
        deps,
        context,
        case_stream(command.case_id),
        carried(
            context,
            Action.DETERMINE_ELIGIBILITY,
            lambda _case: decide_eligibility(facts, program, command, on),
        ),
    )


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
    same NO_RELATIONSHIP, before anything else is read or written."""
    require_role(context.actor.role, Action.RESERVE_BUDGET)
    if (earlier := await _recorded_before(deps, context, principal)) is not None:
        return earlier
    supervisor = CaseSupervisor(deps.store, access, principal, command.case_id)
    await supervisor.read()
    line = _required(
        deps.agency.budget_line(command.budget_line), "budget line", command.budget_line
    )
    reservation_id = derived_id(context, SOURCE, "reservation")
    async with deps.locks.holding([case_lock(command.case_id)]):
        facts = await command_facts(deps, context, command.case_id)
        schedule = await client_schedule(deps, facts.client_id)
        return await _run_folded(
            deps,
            context,
            budget_stream(line.budget_line),
            BUDGET_LINE,
            lambda state: decide_reservation(line, state, facts, schedule, command, reservation_id),
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
    require_role(context.actor.role, Action.RESERVE_BUDGET)
    if (earlier := await _recorded_before(deps, context, principal)) is not None:
        return earlier
    supervisor = CaseSupervisor(deps.store, access, principal, command.case_id)
    await supervisor.read()
    line = _required(
        deps.agency.budget_line(command.budget_line), "budget line", command.budget_line
    )
    return await _run_folded(
        deps,
        context,
        budget_stream(line.budget_line),
        BUDGET_LINE,
        lambda state: decide_release(line, state, command),
        guard=supervisor.read,
    )


async def file_insurance_claim(
    deps: Dependencies, context: CommandContext, command: FileInsuranceClaim
) -> Recorded:
    require_role(context.actor.role, Action.HANDLE_CLAIM)
    await carried_case(deps, context, Action.HANDLE_CLAIM, command.case_id)
    facts = await command_facts(deps, context, command.case_id)
    schedule = await client_schedule(deps, facts.client_id)
    claim_id = derived_id(context, SOURCE, "claim")
    return await _run(
        deps,
        context,
        case_stream(command.case_id),
        carried(
            context,
            Action.HANDLE_CLAIM,
            lambda case: decide_claim(case, facts, schedule, command, claim_id),
        ),
    )


async def record_claim_decision(
    deps: Dependencies, context: CommandContext, command: RecordClaimDecision
) -> Recorded:
    require_role(context.actor.role, Action.HANDLE_CLAIM)
    await carried_case(deps, context, Action.HANDLE_CLAIM, command.case_id)
    return await _run(
        deps,
        context,
        case_stream(command.case_id),
        carried(context, Action.HANDLE_CLAIM, lambda case: decide_claim_decision(case, command)),
    )


async def carried_case(
    deps: Dependencies, context: CommandContext, action: Action, case_id: str
) -> CaseState:
    """The case as coordination's stream has it, once the actor may do ``action`` on it: a
    case-carrying worker only on the case assigned to them (``require_case_worker``), as in
    planning. Checked before anything tells whether the case exists, so a worker asking about a
    case not theirs gets the same refusal for a real case id as for an unknown one. Only a
    first look: a TransferCase may land before the command records, so the decision checks
    again on what it records after (``carried``, ``CaseCarrier``)."""
    return carrying(context.actor, action, await deps.store.read_stream(case_stream(case_id)))


def carrying(actor: Actor, action: Action, history: Iterable[RecordedEvent]) -> CaseState:
    """The case as ``history`` (its coordination stream) has it, once ``actor`` may do
    ``action`` on it (``require_case_worker``)."""
    case = case_state(history)
    require_case_worker(actor, action, case.worker_id)
    return case


def carried(
    context: CommandContext, action: Action, decide: Callable[[CaseState], Sequence[CaseEvent]]
) -> Callable[[list[RecordedEvent]], Sequence[CaseEvent]]:
    """``decide`` for a command recorded on the case's stream, on the case as the history it
    appends after has it, once the actor may do ``action`` on it: the append's expected version
    then guarantees the case was still theirs (a TransferCase landing after ``carried_case``'s
    first look refuses the previous worker, instead of letting them act once more)."""
    return lambda history: decide(carrying(context.actor, action, history))


@dataclass
class CaseCarrier:
    """The case, for a command recorded on the client's schedule: ``read`` is its guard
    (``execute_folded(..., guard=carrier.read)``). Before each decision it reads the case's
    stream, refuses an actor who may not do ``action`` on it (``carrying``) and returns the
    version read, so the schedule's append is written only if the case's stream is still there:
    a TransferCase committed in between makes the command read again, and the previous worker
    is refused. Nothing is guarded for a role that acts whoever carries the case."""

    store: EventStore
    context: CommandContext
    action: Action
    case_id: str
    case: CaseState = field(default_factory=CaseState)
    """The case as of the last ``read``."""

    async def read(self) -> StreamVersion | None:
        stream = case_stream(self.case_id)
        history = await self.store.read_stream(stream)
        self.case = carrying(self.context.actor, self.action, history)
        if self.context.actor.role not in CASE_CARRYING_ROLES:
            return None
        return StreamVersion.as_read(stream, history)


@dataclass(frozen=True, slots=True)
class CaseSupervisor:
    """A supervisor's command on the case (TransferCase, ReserveBudget, ReleaseBudget), held
    to the cases of their team as coordination's own case stream records it (the team of the
    worker assigned: ``CaseAssigned``/``CaseReassigned``), not as the policy's facts have it
    from the bus, which may not have delivered a transfer yet. Checked on the history the
    command records after: ``case`` in the decision of a command recorded on the case's
    stream (its expected version), ``read`` as the guard of one recorded on a budget line. So
    a transfer landing in between makes the command read again, and the previous team's
    supervisor is refused (``AccessControl.supervises``: PERMISSION_DENIED ``NO_RELATIONSHIP``,
    not recorded). ``read`` is also the first look, before anything tells whether the case
    exists. Other roles pass: their own rules apply, whoever carries the case."""

    store: EventStore
    access: AccessControl
    principal: Principal
    case_id: str

    def case(self, history: Iterable[RecordedEvent]) -> CaseState:
        """The case as ``history`` (its coordination stream) has it, once the principal may
        act on it as its supervisor."""
        case = case_state(history)
        supervised = PolicyFacts(
            self.case_id, worker_id=case.worker_id, worker_team=case.worker_team
        )
        self.access.supervises(self.principal, supervised)
        return case

    async def read(self) -> StreamVersion | None:
        """Refuse a supervisor of another team on the case's stream as it is now, and return
        the version read (``None`` for other roles: nothing is guarded for them)."""
        if self.principal.role is not Role.SUPERVISOR:
            return None
        stream = case_stream(self.case_id)
        history = await self.store.read_stream(stream)
        self.case(history)
        return StreamVersion.as_read(stream, history)


async def _recorded_before(
    deps: Dependencies, context: CommandContext, principal: Principal
) -> Recorded | None:
    """A supervisor's command's earlier answer (``recorded_before``), asked before
    ``CaseSupervisor.read`` checks their team. Other roles have no team check: their retry is
    answered by ``execute`` as ever, with no read more here."""
    if principal.role is not Role.SUPERVISOR:
        return None
    return await recorded_before(deps.store, SOURCE, context)


async def command_facts(deps: Dependencies, context: CommandContext, case_id: str) -> CaseFacts:
    """``case_facts``, for a command whose stated moment must not precede the case's opening."""
    facts = await case_facts(deps, case_id)
    check_occurred_at(facts, context.occurred_at)
    return facts


async def case_facts(deps: Dependencies, case_id: str) -> CaseFacts:
    """Intake's facts about the case. They come over the bus shortly after intake records them,
    so a case opened a moment ago may not be known yet: NOT_FOUND, worth retrying."""
    facts = await views.case_facts(deps.read_models, case_id)
    if facts is None:
        raise NotFound("case", case_id)
    return facts


async def client_schedule(deps: Dependencies, client_id: str) -> Schedule:
    async with folded(deps.store, schedule_stream(client_id), SCHEDULE) as schedule:
        return schedule.state.copy()


async def _caseload(deps: Dependencies, worker: Worker | None) -> int:
    if worker is None:
        return 0
    return await views.caseload(deps.store, deps.read_models, worker.worker_id)


def _moment(context: CommandContext) -> datetime:
    return context.occurred_at or datetime.now(UTC)


def _required(value: T | None, what: str, identifier: str) -> T:
    if value is None:
        raise NotFound(what, identifier)
    return value


async def _run(
    deps: Dependencies,
    context: CommandContext,
    stream: str,
    decide: Callable[[list[RecordedEvent]], Sequence[CaseEvent]],
) -> Recorded:
    try:
        return await execute(deps.store, SOURCE, context, stream, decide)
    except ValidationError as error:
        # Commands are checked field by field when built; what is left are the catalog's
        # rules spanning several fields of an event.
        raise InvalidCommand(problems_of(error, model=model_named(error.title))) from None


async def _run_folded(
    deps: Dependencies,
    context: CommandContext,
    stream: str,
    fold: Fold[S],
    decide: Callable[[S], Sequence[CaseEvent]],
    guard: ReadGuard | None = None,
) -> Recorded:
    """``_run`` on a stream whose state is kept folded (budget lines, schedules)."""
    try:
        return await execute_folded(deps.store, SOURCE, context, stream, fold, decide, guard=guard)
    except ValidationError as error:
        raise InvalidCommand(problems_of(error, model=model_named(error.title))) from None
