"""Running planning's commands: facts from the bus, history from planning's own store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date

from pydantic import ValidationError

from casetrail_platform.commands import CommandContext, NotCaughtUp
from casetrail_platform.decide import (
    Published,
    execute_folded,
    folded,
    once_published,
    published_at_once,
)
from casetrail_platform.store.port import EventStore
from events.catalog.base import CaseEvent
from events.envelope import RecordedEvent
from services.planning.adapters.case_views import CaseViews
from services.planning.app.validation import invalid_command
from services.planning.domain.commands import CloseCase, Command
from services.planning.domain.decisions import ACTIONS, decide, deciding_workers
from services.planning.domain.model import CasePlanning, StaffMember, case_fold, fold
from services.planning.domain.rules import rests_on_assignment

SERVICE = "planning"
SOURCE = "casetrail/planning"


def stream_for(case_id: str) -> str:
    return f"case-{case_id}"


@dataclass(frozen=True, slots=True)
class Dependencies:
    store: EventStore
    views: CaseViews
    views_caught_up: Callable[[str], Awaitable[bool]] | None = None
    """Whether the case view's consumer group has applied every event of the case's partition
    that was on the bus when asked, waiting a bounded time (``ServiceHost.caught_up``): the
    barrier an assigned worker's command waits at. ``None``: a view not fed from a bus."""
    published: Published = published_at_once
    """Whether the bus has acknowledged the store's events up to a position, waiting a bounded
    time (``ServiceHost.published``): a closure is answered once it has it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    recorded: list[RecordedEvent]
    """What the command recorded (the first time, for a retried command)."""
    plan_version: int
    """The version of the case's plan right after those events (0: no plan), as shown to the
    caller (``handle``'s ``sensitive_shown``: ``Plan.version_shown``)."""


async def handle(
    deps: Dependencies,
    context: CommandContext,
    command: Command,
    *,
    earlier: list[RecordedEvent] | None = None,
    day: date | None = None,
    sensitive_shown: bool = False,
) -> Outcome:
    """``earlier``: what the command's key recorded before, when the entrypoint has read it
    already (``decide.recorded_before``, a supervisor's CloseCase): the retry is answered from
    it, with nothing decided or read again. ``day``: the command's day, which rules about
    what is valid from now on are checked on (``decide``). ``sensitive_shown``: whether the
    caller may see the case's sensitive values, which a refusal names only then (``decide``),
    and without which the plan's version answered leaves out the changes of the goals withheld
    from them (``Plan.version_shown``)."""
    recorded = (
        earlier
        if earlier is not None
        else await _record(deps, context, command, day, sensitive_shown)
    )
    if isinstance(command, CloseCase):
        # A closure ends a partner agency's part in the case: from the answer on, its reads in
        # every service wait for their facts to hold it (``once_published``).
        await once_published(deps.published, recorded, "case closure")
    stream = stream_for(command.case_id)
    kept = case_fold(command.case_id)
    until = recorded[-1].sequence if recorded else None
    async with folded(deps.store, stream, kept) as record:
        if until is None:
            return Outcome(recorded, record.state.plan_version_shown(sensitive_shown))
        # Right after this command's events, though others may have come since (a retry).
        known = record.state.plan_version_at(until, sensitive_shown)
    if known is not None:
        return Outcome(recorded, known)
    # A retry of a command older than the plan version changes the record keeps.
    history = await deps.store.read_stream(stream, to_version=until)
    return Outcome(recorded, fold(command.case_id, history).plan_version_shown(sensitive_shown))


async def _record(
    deps: Dependencies,
    context: CommandContext,
    command: Command,
    day: date | None,
    sensitive_shown: bool,
) -> list[RecordedEvent]:
    """Decide ``command`` on the case's plan and record what it decides (a retry: what it
    recorded the first time)."""
    await _assignment_caught_up(deps, context, command)
    # Read once per command: other services' facts only change through the bus, and a
    # decision raced by a new fact is the same as one taken a moment earlier.
    facts = await deps.views.facts(command.case_id)
    looked_up: set[str] = set()
    staff: dict[str, StaffMember] = {}

    def decide_on(record: CasePlanning) -> list[CaseEvent]:
        # The plan's tasks name workers known only once the case is read, under its turn.
        unknown = deciding_workers(command, facts, record) - looked_up
        if unknown:
            raise _StaffToLookUp(unknown)
        # The moment its events carry, stated or not: each is checked against the case's.
        moment = context.moment()
        return decide(
            record,
            facts,
            context.actor,
            command,
            moment,
            staff,
            day,
            sensitive_shown=sensitive_shown,
        )

    while True:
        try:
            return await execute_folded(
                deps.store,
                SOURCE,
                context,
                stream_for(command.case_id),
                case_fold(command.case_id),
                decide_on,
            )
        except _StaffToLookUp as needed:
            # Decided again with them (the case kept folded: only what came since is read);
            # each pass looks up a worker more, so a plan changing meanwhile ends it too.
            looked_up.update(needed.workers)
            staff.update(await deps.views.staff(needed.workers))
        except ValidationError as error:
            # The command's values were checked field by field; what is left are rules
            # spanning several fields that only the whole event checks. Not chained:
            # pydantic's error repeats the input (sensitive notes too), and a chained cause
            # travels on into tracebacks and spans; the field problems name what is wrong
            # without the values.
            raise invalid_command(error) from None


class _StaffToLookUp(Exception):
    """Deciding needs the credentials of ``workers``, not looked up yet (each is looked up
    once: a worker planning does not know of is refused as such)."""

    def __init__(self, workers: set[str]) -> None:
        super().__init__(f"{len(workers)} workers to look up")
        self.workers = workers


async def _assignment_caught_up(
    deps: Dependencies, context: CommandContext, command: Command
) -> None:
    """The barrier for a caller whose right is being the case's assigned worker: coordination
    answers an assignment or a transfer once it is on the bus, so once the case view's group
    has applied the case's partition as far as it reached now, every one answered before this
    command is in the view (README, "A transfer not delivered yet"). Not in time:
    ``NotCaughtUp`` (UNAVAILABLE, retry), nothing decided. Roles acting on any case wait for
    nothing; roles that may never act are refused first (``rests_on_assignment``)."""
    if deps.views_caught_up is None:
        return
    if not rests_on_assignment(context.actor, ACTIONS[type(command)]):
        return
    if not await deps.views_caught_up(command.case_id):
        raise NotCaughtUp("the case's assignment", command.case_id)
