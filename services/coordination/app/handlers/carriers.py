"""Who may act on the case, checked on the history a command records after: the worker who
carries it (``carried``, ``CaseCarrier``) and the supervisor of its team (``CaseSupervisor``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from casetrail_platform.commands import CommandContext
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.facts import CaseFacts as PolicyFacts
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.store.port import EventStore, StreamVersion
from events.catalog.base import CaseEvent, Role
from events.envelope import Actor, RecordedEvent
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain.case import CaseState, case_state
from services.coordination.domain.facts import case_stream
from services.coordination.domain.permissions import Action, require_case_worker


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
    is refused. Whoever acts: the decision reads the case's referrals too (a service booked,
    moved or delivered from one), and a referral declined, completed or withdrawn in between
    makes it decide again, so no service is delivered past the end of its referral."""

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
        self._supervises(case)
        return case

    def _supervises(self, case: CaseState) -> None:
        supervised = PolicyFacts(
            self.case_id, worker_id=case.worker_id, worker_team=case.worker_team
        )
        self.access.supervises(self.principal, supervised)

    async def read(self) -> StreamVersion | None:
        """Refuse a supervisor of another team on the case's stream as it is now, and return
        the version read (``None`` for other roles: nothing is guarded for them)."""
        if self.principal.role is not Role.SUPERVISOR:
            return None
        stream = case_stream(self.case_id)
        history = await self.store.read_stream(stream)
        self.case(history)
        return StreamVersion.as_read(stream, history)

    def assignable(self, history: Iterable[RecordedEvent]) -> CaseState:
        """The case as ``history`` has it, once the principal may assign it (AssignCase). A
        case no one carries has no team yet: any supervisor may give it theirs. One carried is
        its team's supervisor's only, who is then told who carries it; another team's
        supervisor is refused as in ``case``, before a refusal could name its worker, say it
        was closed, or give its opening time (the command's occurred-at is checked against
        it)."""
        case = case_state(history)
        if case.worker_id is not None:
            self._supervises(case)
        return case

    async def read_assignable(self) -> None:
        """``assignable`` on the case's stream as it is now: the first look."""
        if self.principal.role is Role.SUPERVISOR:
            self.assignable(await self.store.read_stream(case_stream(self.case_id)))

    def unknown(self) -> None:
        """Refuse a supervisor an unknown case id as one of another team's (``case`` on a
        case of no team: ``NO_RELATIONSHIP``), so the refusal of a real case tells nothing
        the refusal of an unknown one does not."""
        self._supervises(CaseState())
