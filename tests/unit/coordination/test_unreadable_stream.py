"""An event the store holds but no reader accepts (stored by an older release past a model's
rules, as the lowered residence was) is a fault of the server, not of the caller: a command
reading its stream fails as the server's fault (INTERNAL, a reference to the log), never as a
refusal (INVALID_ARGUMENT quoting the stored event's fields as if the caller had sent them)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from casetrail_platform.commands import CommandContext
from casetrail_platform.grpc_platform.errors import REFUSALS
from events.catalog.base import CaseEvent, Role
from events.catalog.eligibility import EligibilityDetermined, EligibilityFacts
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from events.errors import UnreadableStoredEventError
from services.coordination.app.handlers.running import Dependencies, run
from tests.unit.planning.support import WORKER


async def test_a_stream_holding_an_unreadable_event_fails_as_the_servers_fault(
    deps: Dependencies,
) -> None:
    """The old code: InvalidEventError, a refusal ("reasons.0: ... at most 500 characters")."""
    unreadable = EligibilityDetermined.model_construct(  # its bounds skipped
        case_id="c-1",
        program_id="open-door",
        program_name="Open door",
        eligible=True,
        reasons=("x" * 800,),
        facts=EligibilityFacts(),
    )
    metadata = EventMetadata(
        source="casetrail/coordination",
        actor=Actor("worker-1", Role.SOCIAL_WORKER),
        occurred_at=datetime.now(UTC),
        correlation_id=uuid4(),
    )
    await deps.store.append("case-c-1", [NewEvent(unreadable, metadata)], 0)

    def decide(history: list[RecordedEvent]) -> Sequence[CaseEvent]:
        _ = [recorded.event for recorded in history]
        return []

    with pytest.raises(UnreadableStoredEventError) as failed:
        await run(deps, CommandContext(WORKER, "k-1"), "case-c-1", decide)
    assert not isinstance(failed.value, REFUSALS)
    assert "reasons.0" in [p.field for p in failed.value.problems]
    assert "'case-c-1'" in str(failed.value)
