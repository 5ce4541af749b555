"""Policy-fact histories of any length: one recorded example of every catalog event type
(``EXAMPLES``) and ``history``, fact entries shuffled from them, which the policy's tests and
``bench.fold_turn_bench`` fold."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from casetrail_platform.policy.facts import FACT_EVENT_TYPES, Entry, entry_of
from events.catalog.base import CaseEvent, Role
from events.catalog.examples import example_events
from events.envelope import Actor, EventMetadata, RecordedEvent


def _recorded(event: CaseEvent, number: int) -> RecordedEvent:
    moment = datetime(2024, 3, 5, 9, 0, tzinfo=UTC)
    return RecordedEvent(
        event_id=UUID(int=number),
        stream=f"case-{event.subject}",
        sequence=1,
        position=number,
        recorded_at=moment,
        event=event,
        metadata=EventMetadata(
            "intake", Actor("worker-ana", Role.SOCIAL_WORKER), moment, UUID(int=0)
        ),
    )


EXAMPLES = [_recorded(event, n) for n, event in enumerate(example_events(), start=1)]

TEMPLATES = [
    entry
    for recorded in EXAMPLES
    if recorded.event_type in FACT_EVENT_TYPES and (entry := entry_of(recorded)) is not None
]
START = datetime(2020, 1, 1, tzinfo=UTC)


def history(seed: int, size: int) -> list[Entry]:
    """``size`` fact entries of every kind, on a few referrals, consents and emergency
    accesses (so that later entries undo earlier ones), recorded at shuffled times, some
    at the same moment."""
    rng = random.Random(seed)
    entries: list[Entry] = []
    for number in range(size):
        entry: dict[str, Any] = dict(rng.choice(TEMPLATES))
        for key, pool in (
            ("referral_id", "r"),
            ("consent_id", "c"),
            ("emergency_access_id", "e"),
            ("worker_id", "w"),
            ("provider_id", "p"),
        ):
            if entry.get(key) is not None:
                entry[key] = f"{pool}{rng.randrange(6)}"
        entry["event_id"] = f"event-{number}"
        entry["recorded_at"] = (START + timedelta(minutes=rng.randrange(size))).isoformat()
        entries.append(entry)
    return entries
