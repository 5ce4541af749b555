"""Which events carry policy facts is known from their type alone (``FACT_EVENT_TYPES``), so an
event of another type, such as the access record every read appends, is never decoded for it."""

from __future__ import annotations

import pytest

from casetrail_platform.policy.facts import FACT_EVENT_TYPES, entry_of
from events.catalog.base import CaseEvent
from events.catalog_registry import default_registry
from events.envelope import RecordedEvent
from tests.support.fact_history import EXAMPLES
from tests.support.stored import as_stored


def test_every_fact_bearing_type_has_an_example() -> None:
    assert {recorded.event_type for recorded in EXAMPLES} >= FACT_EVENT_TYPES


@pytest.mark.parametrize("recorded", EXAMPLES, ids=lambda recorded: recorded.event_type)
def test_an_entry_exactly_for_the_fact_types(recorded: RecordedEvent) -> None:
    assert (entry_of(recorded) is not None) == (recorded.event_type in FACT_EVENT_TYPES)


@pytest.mark.parametrize(
    "recorded",
    [r for r in EXAMPLES if r.event_type not in FACT_EVENT_TYPES],
    ids=lambda recorded: recorded.event_type,
)
def test_other_types_are_not_decoded(
    recorded: RecordedEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = default_registry()
    stored = as_stored(recorded, registry)

    def refuse(*args: object) -> CaseEvent:
        raise AssertionError("decoded")

    monkeypatch.setattr(registry, "decode", refuse)
    assert entry_of(stored) is None
