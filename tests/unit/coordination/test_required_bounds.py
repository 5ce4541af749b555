"""Coordination refuses an empty text of an event its decision builds as "required, 1-N
characters", as intake does (the bounds from the catalog model: events.validation.reported)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from casetrail_platform.commands import CommandContext, InvalidCommand
from events.catalog.base import CaseEvent
from events.catalog.planning import GoalDropped
from events.envelope import RecordedEvent
from services.coordination.app.handlers.running import Dependencies, run
from tests.unit.planning.support import WORKER

NOTE_BOUNDS = "required, 1-20000 characters"


def _dropped(reason: str) -> GoalDropped:
    return GoalDropped(case_id="c-1", plan_id="p-1", goal_id="g-1", reason=reason)


async def test_coordination_whole_event_refusal_names_its_bounds(deps: Dependencies) -> None:
    """coordination's handlers (``running.run``; ``run_folded`` reports the same way) said only
    "required" of an event their decision could not build."""

    def decide(_: list[RecordedEvent]) -> Sequence[CaseEvent]:
        return [_dropped("")]

    with pytest.raises(InvalidCommand) as refused:
        await run(deps, CommandContext(WORKER, "k-1"), "case-c-1", decide)
    assert [(p.field, p.problem) for p in refused.value.violations] == [("reason", NOTE_BOUNDS)]
