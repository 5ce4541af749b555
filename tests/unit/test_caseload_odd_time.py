"""The caseload processor and case events that happened at odd moments: one outside the moments
a request may name is refused as undecodable (near the ends of datetime's range it could not be
taken to UTC, and crashed the agent), the fold orders a year before 1000 as time does, and an
event whose fold raises is skipped and counted while the agent goes on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseClosed, CaseReopened, DischargeReason
from events.catalog_registry import default_registry
from events.cloudevents import UndecodableMessageError, to_kafka_binary
from events.envelope import Actor, EventMetadata, RecordedEvent
from services.caseload import processor
from services.caseload.decoding import tracked_event
from services.caseload.domain import apply, stamp_of
from services.caseload.processor import CaseloadApp, build_app
from services.caseload.settings import CaseloadSettings

MOMENT = datetime(2030, 3, 1, 10, 0, tzinfo=UTC)


def _recorded(event: CaseEvent, sequence: int, occurred_at: datetime) -> RecordedEvent:
    return RecordedEvent(
        event_id=uuid4(),
        stream=f"case-{event.subject}",
        sequence=sequence,
        position=sequence,
        recorded_at=MOMENT,
        event=event,
        metadata=EventMetadata(
            "casetrail/intake", Actor("w-ana", Role.CASE_MANAGER), occurred_at, uuid4()
        ),
    )


def _closed(case_id: str = "case-1", sequence: int = 1) -> RecordedEvent:
    event = CaseClosed(case_id=case_id, reason=DischargeReason.GOALS_ACHIEVED)
    return _recorded(event, sequence, MOMENT)


def _kafka_at(recorded: RecordedEvent, time: str) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    """``recorded`` as a Kafka record whose ``time`` (and ``occurredat``) reads ``time``."""
    key, headers, value = to_kafka_binary(recorded)
    moved = [(n, time.encode() if n in ("ce_time", "ce_occurredat") else v) for n, v in headers]
    return key, moved, value


@pytest.mark.parametrize(
    "time",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "0999-01-01T00:00:00Z",
        "1899-12-31T23:59:59Z",
        "2200-01-01T00:00:00Z",
    ],
)
def test_a_tracked_event_at_a_moment_no_request_may_name_is_undecodable(time: str) -> None:
    """It decoded, and the fold raised OverflowError taking it to UTC (or sorted it wrongly)."""
    with pytest.raises(UndecodableMessageError) as refused:
        tracked_event(*_kafka_at(_closed(), time), default_registry())
    assert [problem.field for problem in refused.value.problems] == ["ce_time"]


def test_a_tracked_event_at_the_first_and_last_moments_a_request_may_name_is_read() -> None:
    for time in ("1900-01-01T00:00:00Z", "2199-12-31T23:59:59.999999Z"):
        recorded = tracked_event(*_kafka_at(_closed(), time), default_registry())
        assert recorded is not None
        assert apply(None, recorded) is not None


def test_a_year_before_1000_orders_before_later_years() -> None:
    """strftime's %Y wrote year 999 as "999", which sorted after "2025": a closure in year 999
    won over a reopening in 2025 (the fold is pure: the stamp must be right whatever reaches
    it)."""
    closed = _recorded(
        CaseClosed(case_id="case-1", reason=DischargeReason.GOALS_ACHIEVED),
        1,
        datetime(999, 1, 1, tzinfo=UTC),
    )
    reopened = _recorded(CaseReopened(case_id="case-1", reason="needs help again"), 2, MOMENT)
    assert stamp_of(closed).startswith("0999-01-01T00:00:00.000000Z|")
    first = apply(None, closed)
    assert first is not None
    after = apply(first.state, reopened)
    assert after is not None
    assert after.state.open


def _app(tmp_path: Path) -> tuple[CaseloadApp, Any]:
    settings = CaseloadSettings(
        data_dir=tmp_path / "caseload", web_enabled=False, processing_guarantee="at_least_once"
    )
    app = build_app(settings)
    agent = next(agent for name, agent in app.agents.items() if name.endswith("track-cases"))
    return app, agent


def _crashes(agent: Any) -> list[BaseException]:
    crashed: list[BaseException] = []

    async def on_error(agent: Any, error: BaseException) -> None:
        crashed.append(error)

    agent._on_error = on_error
    return crashed


async def test_the_agent_skips_an_event_at_an_odd_moment_as_undecodable(tmp_path: Path) -> None:
    app, agent = _app(tmp_path)
    crashed = _crashes(agent)
    async with agent.test_context() as running:
        key, headers, value = _kafka_at(_closed(), "0001-01-01T00:00:00+01:00")
        await running.put(value, key=key, headers=headers)
        key, headers, value = to_kafka_binary(_closed("case-2"))
        await running.put(value, key=key, headers=headers)
    assert crashed == []
    assert (app.counters.undecodable, app.counters.applied) == (1, 1)


async def test_an_event_whose_fold_raises_is_skipped_and_counted_and_the_agent_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left to Faust, the agent crashed, was restarted past the message and counted it
    nowhere."""
    app, agent = _app(tmp_path)
    crashed = _crashes(agent)
    folded = apply

    def apply_failing_on_case_1(state: Any, recorded: RecordedEvent) -> Any:
        if recorded.subject == "case-1":
            raise OverflowError("date value out of range")
        return folded(state, recorded)

    monkeypatch.setattr(processor, "apply", apply_failing_on_case_1)
    async with agent.test_context() as running:
        for recorded in (_closed("case-1"), _closed("case-2")):
            key, headers, value = to_kafka_binary(recorded)
            await running.put(value, key=key, headers=headers)
    assert crashed == []
    assert (app.counters.failed, app.counters.skipped, app.counters.applied) == (1, 1, 1)
    assert app.cases.get("case-1") is None
    assert app.cases.get("case-2") is not None
