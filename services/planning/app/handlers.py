"""Running planning's commands: facts from the bus, history from planning's own store."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from casetrail_platform.commands import CommandContext
from casetrail_platform.decide import execute_folded, folded
from casetrail_platform.store.port import EventStore
from events.catalog.base import CaseEvent
from events.envelope import RecordedEvent
from services.planning.adapters.case_views import CaseViews
from services.planning.app.validation import invalid_command
from services.planning.domain.commands import Command
from services.planning.domain.decisions import decide, planned_goals
from services.planning.domain.model import CasePlanning, case_fold, fold
from services.planning.domain.qualifications import task_workers

SERVICE = "planning"
SOURCE = "casetrail/planning"


def stream_for(case_id: str) -> str:
    return f"case-{case_id}"


@dataclass(frozen=True, slots=True)
class Dependencies:
    store: EventStore
    views: CaseViews


@dataclass(frozen=True, slots=True)
class Outcome:
    recorded: list[RecordedEvent]
    """What the command recorded (the first time, for a retried command)."""
    plan_version: int
    """The version of the case's plan right after those events (0: no plan)."""


async def handle(deps: Dependencies, context: CommandContext, command: Command) -> Outcome:
    # Read once per command: other services' facts only change through the bus, and a
    # decision raced by a new fact is the same as one taken a moment earlier.
    facts = await deps.views.facts(command.case_id)
    staff = await deps.views.staff(task_workers(planned_goals(command), facts))
    stream = stream_for(command.case_id)
    kept = case_fold(command.case_id)

    def decide_on(record: CasePlanning) -> list[CaseEvent]:
        return decide(record, facts, context.actor, command, context.occurred_at, staff)

    try:
        recorded = await execute_folded(deps.store, SOURCE, context, stream, kept, decide_on)
    except ValidationError as error:
        # The command's values were checked field by field; what is left are rules spanning
        # several fields that only the whole event checks. Not chained: pydantic's error
        # repeats the input (sensitive notes too), and a chained cause travels on into
        # tracebacks and spans; the field problems name what is wrong without the values.
        raise invalid_command(error) from None
    until = recorded[-1].sequence if recorded else None
    async with folded(deps.store, stream, kept) as record:
        if until is None:
            return Outcome(recorded, record.state.plan_version)
        # Right after this command's events, though others may have come since (a retry).
        known = record.state.plan_version_at(until)
    if known is not None:
        return Outcome(recorded, known)
    # A retry of a command older than the plan version changes the record keeps.
    history = await deps.store.read_stream(stream, to_version=until)
    return Outcome(recorded, fold(command.case_id, history).plan_version)
