"""The caseload processor under out-of-order and repeated delivery: a contact delivered after
later events of its stream (dead-lettered and replayed, parked and retried) is applied and
counted, and a contact told twice (``at_least_once``: redelivered after a crash) counts once."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from events.catalog.base import Role
from events.catalog.monitoring import ContactKind, ContactLogged
from events.envelope import Actor, EventMetadata, RecordedEvent
from services.caseload import queries
from services.caseload.domain import (
    APPLIED_BEYOND_LIMIT,
    CaseState,
    ContactMade,
    apply,
    contacts_counted,
    count_contact,
)
from services.caseload.processor import FactRecord, build_app
from services.caseload.settings import CaseloadSettings

MOMENT = datetime(2030, 3, 1, 10, 0, tzinfo=UTC)


def _contact(sequence: int, occurred_at: datetime, due: date) -> RecordedEvent:
    return RecordedEvent(
        event_id=uuid4(),
        stream="case-case-1",
        sequence=sequence,
        position=sequence,
        recorded_at=MOMENT,
        event=ContactLogged(
            case_id="case-1",
            contact_id=f"contact-{sequence}",
            kind=ContactKind.PHONE_CALL,
            summary="Checked in",
            next_follow_up_due=due,
        ),
        metadata=EventMetadata(
            "casetrail/planning",
            Actor("w-ana", Role.CASE_MANAGER),
            occurred_at,
            correlation_id=uuid4(),
        ),
    )


def _fold(events: list[RecordedEvent]) -> tuple[CaseState | None, list[object]]:
    state: CaseState | None = None
    facts: list[object] = []
    for recorded in events:
        applied = apply(state, recorded)
        if applied is not None:
            state, facts = applied.state, [*facts, *applied.facts]
    return state, facts


def test_a_contact_delivered_after_a_later_one_of_its_stream_is_applied_and_counted() -> None:
    # The second contact was logged late: it happened before the first.
    first = _contact(1, MOMENT, date(2030, 3, 10))
    second = _contact(2, MOMENT - timedelta(days=2), date(2030, 3, 4))
    in_order, in_order_facts = _fold([first, second])
    late, late_facts = _fold([second, first])  # the first dead-lettered, replayed later

    assert in_order is not None
    assert late is not None
    assert late.follow_up_due == in_order.follow_up_due == date(2030, 3, 10)
    contacts = [f for f in late_facts if isinstance(f, ContactMade)]
    assert len(contacts) == len([f for f in in_order_facts if isinstance(f, ContactMade)]) == 2
    assert late.to_json() == in_order.to_json()


def test_a_repeat_changes_nothing_whatever_came_in_between() -> None:
    first, second, third = (
        _contact(n, MOMENT + timedelta(hours=n), date(2030, 4, n)) for n in (1, 2, 3)
    )
    state, _ = _fold([first, third])
    assert state is not None
    assert apply(state, third) is None
    assert apply(state, first) is None
    applied = apply(state, second)
    assert applied is not None
    assert applied.state.applied == {"casetrail/planning|case-case-1": 3}
    assert applied.state.applied_beyond == {}
    assert apply(applied.state, second) is None


def test_the_sequences_kept_past_a_missing_one_are_bounded() -> None:
    events = [_contact(n, MOMENT, date(2030, 4, 1)) for n in range(2, APPLIED_BEYOND_LIMIT + 3)]
    state, _ = _fold(events)  # sequence 1 never comes
    assert state is not None
    key = "casetrail/planning|case-case-1"
    # The newest are kept, the missing one is not taken as applied.
    assert state.applied == {key: 0}
    assert state.applied_beyond == {key: tuple(range(3, APPLIED_BEYOND_LIMIT + 3))}
    assert CaseState.from_json(state.to_json()) == state


def test_a_contact_missing_past_more_than_the_bound_is_applied_when_it_comes() -> None:
    """Planning's case stream starts with untracked events (the plan, its goals), so a gap is
    the rule; a tracked event can still come long after later ones of its stream (skipped as
    undecodable, its dead letter replayed once caseload reads its version). Once more than
    1,000 later events were applied, the old code took it as applied: its contact was never
    counted (the day's count stayed short for good)."""
    late = _contact(2, MOMENT - timedelta(days=1), date(2030, 3, 20))
    later = [
        _contact(n, MOMENT + timedelta(minutes=n), date(2030, 4, 1))
        for n in range(3, APPLIED_BEYOND_LIMIT + 5)
    ]
    state, _ = _fold(later)  # sequence 1 (the plan) is untracked, 2 skipped for now
    assert state is not None
    applied = apply(state, late)
    assert applied is not None, "the late contact was taken for a repeat"
    assert applied.facts == [
        ContactMade("w-ana", "case-1", late.metadata.occurred_at, str(late.event_id))
    ]
    assert applied.state.follow_up_due == state.follow_up_due == date(2030, 4, 1)
    assert len(applied.state.applied_beyond["casetrail/planning|case-case-1"]) == (
        APPLIED_BEYOND_LIMIT
    )


def test_a_repeat_of_a_forgotten_sequence_changes_nothing() -> None:
    """Past the bound the oldest sequences applied are forgotten: one delivered again is
    applied again, which sends its contact again (counted once by its event id) and changes
    no register nor holder."""
    events = [
        _contact(n, MOMENT + timedelta(minutes=n), date(2030, 4, 1))
        for n in range(2, APPLIED_BEYOND_LIMIT + 4)
    ]
    state, facts = _fold(events)
    assert state is not None
    again = apply(state, events[0])
    assert again is not None
    assert [type(f) for f in again.facts] == [ContactMade]
    fields = ("open", "open_stamp", "worker_id", "worker_stamp", "follow_up_due", "contact_stamp")
    assert all(getattr(again.state, f) == getattr(state, f) for f in fields)
    day = None
    for fact in [*facts, *again.facts]:
        if isinstance(fact, ContactMade):
            day = count_contact(day, fact.event_id)
    assert contacts_counted(day) == len(events)
    assert apply(again.state, events[-1]) is None  # the newest are still known


async def test_a_contact_told_twice_counts_once_under_at_least_once(tmp_path: Path) -> None:
    settings = CaseloadSettings(
        data_dir=tmp_path / "caseload",
        web_enabled=False,
        processing_guarantee="at_least_once",
    )
    app = build_app(settings)
    agent = next(agent for name, agent in app.agents.items() if name.endswith("count-caseloads"))
    contact = ContactMade("w-ana", "case-1", MOMENT, str(uuid4()))
    other = ContactMade("w-ana", "case-2", MOMENT, str(uuid4()))
    async with agent.test_context() as running:
        for fact in (contact, other, contact):  # the first redelivered after a crash
            await running.put(FactRecord.of(fact))
        assert queries.contacts_per_day(app, "w-ana", [MOMENT.date()]) == {MOMENT.date(): 2}


def test_a_day_counted_before_the_ids_were_kept_goes_on_counting() -> None:
    assert contacts_counted(count_contact(3, "e1")) == 4
    assert contacts_counted(3) == 3
    assert contacts_counted(None) == 0
