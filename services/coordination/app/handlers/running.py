"""What every coordination command runs with: its dependencies, the streams' locks, the facts
from the bus, and the store's ``execute`` (the catalog's cross-field rules: ``InvalidCommand``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, tzinfo
from typing import TypeVar

from pydantic import ValidationError

from casetrail_platform.ages import agency_today
from casetrail_platform.commands import CommandContext, InvalidCommand, NotFound
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
from casetrail_platform.locking.inprocess import InProcessLocks
from casetrail_platform.locking.port import Locks
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.store.port import EventStore
from events.catalog.base import CaseEvent
from events.catalog_registry import model_named
from events.envelope import RecordedEvent
from services.coordination.adapters import read_models as views
from services.coordination.domain.agency import Agency
from services.coordination.domain.facts import CaseFacts, check_occurred_at, schedule_stream
from services.coordination.domain.schedule import SCHEDULE, Schedule
from services.coordination.domain.validation import problems_of

SERVICE = "coordination"
SOURCE = "casetrail/coordination"

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
    case_facts_caught_up: Callable[[str], Awaitable[bool]] | None = None
    """Whether the case facts hold all the bus has of a case, waiting a bounded time
    (``ServiceHost.caught_up``): a closure's follow-up waits for them, and a referral's end
    on a case they miss (``app.follow_ups``). ``None`` (facts not fed from a bus): as they
    stand."""

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


async def earlier_answer(deps: Dependencies, context: CommandContext) -> Recorded | None:
    """What this command's key recorded before (``decide.recorded_before``): the first answer
    for a retry of the same request, ``IdempotencyKeyReused`` for another request under the
    key, ``None`` for a first attempt. Every command asks it first, whoever sends it, before
    anything it checks that may have changed since the first attempt: who carries the case or
    which team it is (a transfer), the client's date of birth (recorded, corrected, or a
    birthday since), the agency's file, the clock. The retry of a command that was done gets
    its answer again, not the refusal a new one would now get (README, "Concurrency and
    idempotency"); ``execute`` would answer it too, but only once those checks have passed. A
    command whose answer waits for the bus (``on_the_bus``) waits for the earlier one too: the
    first answer may have been lost waiting."""
    return await recorded_before(deps.store, SOURCE, context)


async def command_facts(deps: Dependencies, context: CommandContext, case_id: str) -> CaseFacts:
    """``case_facts``, for a command whose moment (``CommandContext.moment``: the one it
    states, else now) must not precede the case's opening."""
    facts = await case_facts(deps, case_id)
    check_occurred_at(facts, context.moment())
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


async def run(
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


async def run_folded(
    deps: Dependencies,
    context: CommandContext,
    stream: str,
    fold: Fold[S],
    decide: Callable[[S], Sequence[CaseEvent]],
    guard: ReadGuard | None = None,
) -> Recorded:
    """``run`` on a stream whose state is kept folded (budget lines, schedules)."""
    try:
        return await execute_folded(deps.store, SOURCE, context, stream, fold, decide, guard=guard)
    except ValidationError as error:
        raise InvalidCommand(problems_of(error, model=model_named(error.title))) from None
