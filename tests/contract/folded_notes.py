"""A decision state of the sample notes (``Notes``) and how their events evolve it, each event
folded noted in ``folded_events``: the folded-state and snapshot contract tests fold it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from events.envelope import RecordedEvent
from tests.support.sample_events import NoteWritten


@dataclass
class Notes:
    version: int = 0
    texts: list[str] = field(default_factory=list)


folded_events: list[int] = []
"""The sequence of every event folded, by any test's fold (reset by the fixture)."""


def evolve_notes(state: Notes, events: Sequence[RecordedEvent]) -> Notes:
    """Folds the notes in, in sequence and each once (asserted)."""
    for recorded in events:
        folded_events.append(recorded.sequence)
        assert recorded.sequence == state.version + 1, "folded out of order or twice"
        state.version = recorded.sequence
        assert isinstance(recorded.event, NoteWritten)
        state.texts.append(recorded.event.text)
    return state
