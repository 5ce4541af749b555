"""A repeat tells its case's worker facts again (``domain.restated``): under ``at_least_once``
a crash can keep a case's table change and lose the facts it sent (two topics, no
transaction), and the events read again from the last committed offset are then repeats.
Whatever the crash kept and lost, the worker side reached after the re-read is the one a run
without the crash reaches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import combinations
from typing import Any

from events.catalog.base import CaseEvent
from events.catalog.monitoring import ContactLogged
from events.envelope import Actor, RecordedEvent
from services.caseload.domain import (
    FORMER_HOLDERS_KEPT,
    UNASSIGNED,
    CaseState,
    ContactMade,
    Holds,
    Releases,
    WorkerFact,
    apply,
    count_contact,
    held_by,
    held_entry,
    held_key,
    restated,
)
from tests.support.case_history import History

START = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)


class _Told(History):
    """A ``History`` that keeps what it recorded, a minute apart."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[RecordedEvent] = []

    def record(
        self, source: str, event: CaseEvent, actor: Actor, occurred_at: datetime
    ) -> RecordedEvent:
        moment = START + timedelta(minutes=len(self.recorded))  # in the order told
        self.recorded.append(super().record(source, event, actor, moment))
        return self.recorded[-1]


def _events() -> list[RecordedEvent]:
    """Two cases handed over, closed, reopened, with contacts, interleaved as relays would."""
    h = _Told()
    h.opened("k", START)
    h.opened("m", START)
    h.assigned("k", "w-ana", START)
    h.contact("k", "w-ana", START, date(2030, 3, 9))
    h.assigned("m", "w-ben", START)
    h.reassigned("k", "w-ana", "w-ben", START)
    h.contact("m", "w-ben", START, date(2030, 3, 12))
    h.contact("k", "w-ben", START, date(2030, 3, 10))
    h.closed("k", START)
    h.reassigned("m", "w-ben", "w-ana", START)
    h.reopened("k", START)
    h.reassigned("k", "w-ben", "w-cy", START)
    h.contact("k", "w-cy", START, None)
    h.closed("m", START)
    return h.recorded


Caseloads = dict[str, Any]
Contacts = dict[tuple[str, date], Any]


def _worker_side(facts: Iterable[WorkerFact]) -> tuple[Caseloads, Contacts]:
    """What ``count-caseloads`` keeps from ``facts`` told in this order: caseloads per
    worker, and contacts per worker and day."""
    held_cases: dict[str, Any] = {}
    contacts: Contacts = {}
    for fact in facts:
        match fact:
            case Holds():
                held_cases[held_key(fact.worker_id, fact.case_id)] = held_entry(fact)
            case Releases():
                held_cases.pop(held_key(fact.worker_id, fact.case_id), None)
            case ContactMade():
                day = (fact.worker_id, fact.occurred_at.date())
                contacts[day] = count_contact(contacts.get(day), fact.event_id)
    caseloads: Caseloads = {}
    for key, entry in held_cases.items():
        worker, case_id = held_by(key)
        caseloads.setdefault(worker, {})[case_id] = entry
    return caseloads, contacts


def _run(
    events: list[RecordedEvent], states: dict[str, CaseState], *, restate: bool = True
) -> Iterator[WorkerFact]:
    """The facts ``track-cases`` sends for ``events`` from the table ``states`` (updated)."""
    for recorded in events:
        state = states.get(recorded.subject)
        applied = apply(state, recorded)
        if applied is None:
            if restate:
                yield from restated(state, recorded)
            continue
        states[recorded.subject] = applied.state
        yield from applied.facts


def _crashes(events: list[RecordedEvent]) -> Iterator[tuple[int, int, frozenset[str]]]:
    """Every crash: offsets committed up to ``committed``; the table's changes kept up to
    ``kept``; of the facts sent in between, those to the workers in ``reached`` reached Kafka
    (one partition's records can be lost while another's arrived)."""
    workers = sorted({"w-ana", "w-ben", "w-cy", UNASSIGNED})
    subsets = [frozenset(c) for n in range(len(workers) + 1) for c in combinations(workers, n)]
    for committed in range(len(events) + 1):
        for kept in range(committed, len(events) + 1):
            for reached in subsets:
                yield committed, kept, reached


def _after_crash(
    events: list[RecordedEvent], committed: int, kept: int, reached: frozenset[str], restate: bool
) -> tuple[Caseloads, Contacts]:
    states: dict[str, CaseState] = {}
    before = list(_run(events[:committed], states))
    between = [f for f in _run(events[committed:kept], states) if f.worker_id in reached]
    again = list(_run(events[committed:], states, restate=restate))  # read from the offsets
    return _worker_side([*before, *between, *again])


def test_whatever_a_crash_keeps_and_loses_the_re_read_restores_the_worker_side() -> None:
    events = _events()
    expected = _worker_side(_run(events, {}))
    assert expected[0] == {
        "w-cy": {"k": {"follow_up_due": None}},
    }, "the scenario ends with k held by cy and m closed"
    assert sum(len(day["ids"]) for day in expected[1].values()) == 4
    for committed, kept, reached in _crashes(events):
        seen = _after_crash(events, committed, kept, reached, restate=True)
        assert seen == expected, (committed, kept, sorted(reached))


def test_without_telling_the_facts_again_a_crash_loses_some() -> None:
    """The test above would pass for nothing if no crash it tries lost anything."""
    events = _events()
    expected = _worker_side(_run(events, {}))
    lost = [
        crash
        for crash in _crashes(events)
        if _after_crash(events, *crash, restate=False) != expected
    ]
    assert lost


def test_a_repeat_restates_the_holder_now_its_former_holders_and_its_contact() -> None:
    events = _events()
    states: dict[str, CaseState] = {}
    list(_run(events, states))
    k = states["k"]
    assert k.holder == "w-cy"
    assert k.former_holders == (UNASSIGNED, "w-ana", "w-ben")
    contact = next(e for e in reversed(events) if isinstance(e.event, ContactLogged))
    assert restated(k, contact) == [
        Releases(UNASSIGNED, "k"),
        Releases("w-ana", "k"),
        Releases("w-ben", "k"),
        Holds("w-cy", "k", None),
        ContactMade("w-cy", "k", contact.metadata.occurred_at, str(contact.event_id)),
    ]
    m = states["m"]
    assert m.holder is None  # closed: nobody holds it, the former holders release it
    assert restated(m, events[-1]) == [
        Releases(UNASSIGNED, "m"),
        Releases("w-ben", "m"),
        Releases("w-ana", "m"),
    ]
    assert CaseState.from_json(k.to_json()) == k


def test_only_a_repeat_is_told_again() -> None:
    events = _events()
    assert restated(None, events[0]) == []
    states: dict[str, CaseState] = {}
    list(_run(events[:2], states))
    assert restated(states["k"], events[2]) == []  # not applied yet: ``apply`` applies it


def test_the_former_holders_kept_are_bounded_and_a_returning_holder_leaves_them() -> None:
    h = _Told()
    h.opened("k", START)
    h.assigned("k", "w-0", START)
    for n in range(1, FORMER_HOLDERS_KEPT + 5):
        h.reassigned("k", f"w-{n - 1}", f"w-{n}", START)
    h.reassigned("k", f"w-{FORMER_HOLDERS_KEPT + 4}", f"w-{FORMER_HOLDERS_KEPT + 2}", START)
    states: dict[str, CaseState] = {}
    list(_run(h.recorded, states))
    former = states["k"].former_holders
    assert len(former) == FORMER_HOLDERS_KEPT
    assert former[-1] == f"w-{FORMER_HOLDERS_KEPT + 4}"
    assert f"w-{FORMER_HOLDERS_KEPT + 2}" not in former  # holds it again


def test_a_state_kept_before_the_former_holders_were_reads_with_none() -> None:
    document = CaseState("k", worker_id="w-ana").to_json()
    del document["former_holders"]
    assert CaseState.from_json(document).former_holders == ()
