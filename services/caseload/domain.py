"""Caseload and follow-up state, as pure folds over case events (no Faust, no Kafka).

Per case (the stream processor keeps this in a table keyed by case id, co-partitioned with
the case-event topic) three registers are kept, each last-writer-wins by when the event
happened (occurred-at, then event id to break ties):

* open or closed (``case.opened`` / ``case.reopened`` / ``case.closed``),
* the assigned worker (``case.assigned`` / ``case.reassigned``),
* the next follow-up due date, set by the newest ``contact.logged`` (a newer contact without a
  due date clears it).

Different services record these (intake opens and closes, coordination assigns, workers log
contacts), and their relays publish independently, so events of one case can reach us out of
the order in which they happened; last-writer-wins registers make the result independent of
that order. A bus may also deliver an event twice (a relay re-publishing after a crash): the
sequences applied per source stream recognise the repeat, which then changes nothing. They are
kept as the sequence up to which every event was applied, and those applied beyond it: an
event delivered after later ones of its stream (dead-lettered and replayed, parked and retried)
is not a repeat, and is applied (its contact counted; the registers keep the newest anyway).

The holder of a case is its worker while the case is open (``UNASSIGNED`` while no worker is
assigned). Whenever the holder or the due date changes, ``apply`` returns worker facts: the
old holder releases the case, the new holder holds it (with its due date). The worker side
keeps one record per case held (``held_key``), with its due date: a worker's records are the
caseload and, with the due dates, the list of overdue follow-ups.

A case's table change and its facts are written to different topics: under ``at_least_once``
a crash can keep the first and lose the second, and the event, read again, is then a repeat.
So a repeat tells the facts again (``restated``): the case's holder now, its former holders
releasing it, and a contact's count, all of which the worker side applies idempotently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from casetrail_platform.projections.port import stream_key
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.cases import CaseClosed, CaseOpened, CaseReopened
from events.catalog.monitoring import ContactLogged
from events.envelope import RecordedEvent

UNASSIGNED = "(unassigned)"
"""Holder of an open case without a worker. Not a valid worker id (identifiers have no
parentheses), so it never collides with one."""

TRACKED_TYPES = frozenset(
    model.event_type
    for model in (CaseOpened, CaseReopened, CaseClosed, CaseAssigned, CaseReassigned, ContactLogged)
)
"""Event types that change caseloads or follow-ups; every other type is skipped unread."""

FORMER_HOLDERS_KEPT = 16
"""Holders of a case before its holder now kept, to be told again they released it (a
repeat re-reads the events since the last commit, a second or so: far fewer hand-overs)."""

APPLIED_BEYOND_LIMIT = 1000
"""Sequences of one stream kept as applied past one not yet come (``CaseState``); past it the
oldest are forgotten (applied again if delivered again, which changes nothing)."""


def stamp_of(recorded: RecordedEvent) -> str:
    """Orders events by when they happened; fixed-width UTC text, so string order is time
    order, and the event id breaks ties between events of the same microsecond."""
    moment = recorded.metadata.occurred_at.astimezone(UTC)
    # The year padded by hand: strftime's %Y writes year 999 as "999", which sorted after
    # "2025" (a closure in year 999 won over every later reopening).
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S.%f}Z|{recorded.event_id}"


@dataclass(frozen=True, slots=True)
class CaseState:
    case_id: str
    open: bool = True
    """A case we know only from later events (assigned, contact) is open: both need one."""
    open_stamp: str = ""
    worker_id: str | None = None
    worker_stamp: str = ""
    follow_up_due: date | None = None
    contact_stamp: str = ""
    applied: Mapping[str, int] = field(default_factory=dict)
    """Per source stream (``source|stream``): every sequence up to this one was applied."""
    applied_beyond: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """Per source stream: the sequences applied past ``applied``'s, ahead of one still to come
    (the newest ``APPLIED_BEYOND_LIMIT``)."""
    former_holders: tuple[str, ...] = ()
    """Who held the case before its holder now, newest last (``FORMER_HOLDERS_KEPT``)."""

    def has_applied(self, key: str, sequence: int) -> bool:
        return sequence <= self.applied.get(key, 0) or sequence in self.applied_beyond.get(key, ())

    def applying(self, key: str, sequence: int) -> CaseState:
        """This state having applied ``sequence`` of stream ``key``."""
        upto = self.applied.get(key, 0)
        beyond = sorted({*self.applied_beyond.get(key, ()), sequence})
        while beyond and beyond[0] == upto + 1:
            upto = beyond.pop(0)
        # Bounded by forgetting the oldest sequences applied, never by taking the missing
        # one as applied: a gap is usually an untracked event (never coming), but a tracked
        # one can come much later (a dead letter replayed after an upgrade decodes it), and
        # skipping it as a repeat lost its closure or contact for good. A forgotten sequence
        # delivered again is applied again, which changes nothing: the registers keep the
        # newest value and the worker side counts a contact by its event id.
        beyond = beyond[-APPLIED_BEYOND_LIMIT:]
        applied_beyond = {k: v for k, v in self.applied_beyond.items() if k != key}
        if beyond:
            applied_beyond[key] = tuple(beyond)
        return replace(self, applied={**self.applied, key: upto}, applied_beyond=applied_beyond)

    def handing_over(self, before: str | None) -> CaseState:
        """This state, its holder having taken over from ``before`` (kept as a former
        holder unless it holds the case again)."""
        after = self.holder
        former = [h for h in self.former_holders if h not in (before, after)]
        if before is not None and before != after:
            former.append(before)
        return replace(self, former_holders=tuple(former[-FORMER_HOLDERS_KEPT:]))

    @property
    def holder(self) -> str | None:
        if not self.open:
            return None
        return self.worker_id or UNASSIGNED

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "open": self.open,
            "open_stamp": self.open_stamp,
            "worker_id": self.worker_id,
            "worker_stamp": self.worker_stamp,
            "follow_up_due": None if self.follow_up_due is None else self.follow_up_due.isoformat(),
            "contact_stamp": self.contact_stamp,
            "applied": dict(self.applied),
            "applied_beyond": {k: list(v) for k, v in self.applied_beyond.items()},
            "former_holders": list(self.former_holders),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> CaseState:
        due = document.get("follow_up_due")
        return cls(
            case_id=str(document["case_id"]),
            open=bool(document["open"]),
            open_stamp=str(document["open_stamp"]),
            worker_id=document.get("worker_id"),
            worker_stamp=str(document["worker_stamp"]),
            follow_up_due=None if due is None else date.fromisoformat(due),
            contact_stamp=str(document["contact_stamp"]),
            applied={str(k): int(v) for k, v in dict(document["applied"]).items()},
            # States kept before had applied every sequence up to the last.
            applied_beyond={
                str(k): tuple(int(n) for n in v)
                for k, v in dict(document.get("applied_beyond", {})).items()
            },
            # States kept before had none: a repeat tells only the holder now again.
            former_holders=tuple(str(h) for h in document.get("former_holders", ())),
        )


@dataclass(frozen=True, slots=True)
class Holds:
    """``worker_id`` holds the open case; the latest word on its follow-up date."""

    worker_id: str
    case_id: str
    follow_up_due: date | None


@dataclass(frozen=True, slots=True)
class Releases:
    """``worker_id`` no longer holds the case (closed, or handed to someone else)."""

    worker_id: str
    case_id: str


@dataclass(frozen=True, slots=True)
class ContactMade:
    """``worker_id`` logged a contact on the case (counted per worker per day)."""

    worker_id: str
    case_id: str
    occurred_at: datetime
    event_id: str
    """The contact's event: counted once however often it is told (``count_contact``)."""


WorkerFact = Holds | Releases | ContactMade


@dataclass(frozen=True, slots=True)
class Applied:
    state: CaseState
    facts: list[WorkerFact]


def apply(state: CaseState | None, recorded: RecordedEvent) -> Applied | None:
    """Fold one event into its case's state: the new state and the worker facts, or ``None``
    when the event changes nothing (an untracked type, or a repeat).

    ``state`` is ``None`` for a case not seen before.
    """
    current = state or CaseState(case_id=recorded.subject)
    key = stream_key(recorded)
    event = recorded.event
    if event.event_type not in TRACKED_TYPES or current.has_applied(key, recorded.sequence):
        return None
    stamp = stamp_of(recorded)
    before = None if state is None else state.holder
    updated = _fold(current, event, stamp).applying(key, recorded.sequence)
    after = updated.holder
    if before != after:
        updated = updated.handing_over(before)

    facts: list[WorkerFact] = []
    if before != after and before is not None:
        facts.append(Releases(before, updated.case_id))
    if after is not None and (before != after or current.follow_up_due != updated.follow_up_due):
        facts.append(Holds(after, updated.case_id, updated.follow_up_due))
    facts.extend(_contact_made(recorded))
    return Applied(updated, facts)


def restated(state: CaseState | None, recorded: RecordedEvent) -> list[WorkerFact]:
    """The worker facts to tell again for ``recorded`` when ``apply`` took it as a repeat
    (none for an untracked event): its former holders release the case, its holder holds it
    with its due date, and a contact is counted (once, by its event id). They bring the worker
    side to this state whatever part of the facts sent the first time was lost."""
    if state is None or recorded.event.event_type not in TRACKED_TYPES:
        return []
    if not state.has_applied(stream_key(recorded), recorded.sequence):
        return []
    facts: list[WorkerFact] = [Releases(w, state.case_id) for w in state.former_holders]
    if state.holder is not None:
        facts.append(Holds(state.holder, state.case_id, state.follow_up_due))
    facts.extend(_contact_made(recorded))
    return facts


def _contact_made(recorded: RecordedEvent) -> list[WorkerFact]:
    if not isinstance(recorded.event, ContactLogged):
        return []
    actor = recorded.metadata.actor.user_id
    moment = recorded.metadata.occurred_at
    return [ContactMade(actor, recorded.subject, moment, str(recorded.event_id))]


def _fold(state: CaseState, event: object, stamp: str) -> CaseState:
    match event:
        case CaseOpened() | CaseReopened() if stamp > state.open_stamp:
            return replace(state, open=True, open_stamp=stamp)
        case CaseClosed() if stamp > state.open_stamp:
            return replace(state, open=False, open_stamp=stamp)
        case CaseAssigned(worker_id=worker) | CaseReassigned(worker_id=worker) if (
            stamp > state.worker_stamp
        ):
            return replace(state, worker_id=worker, worker_stamp=stamp)
        case ContactLogged(next_follow_up_due=due) if stamp > state.contact_stamp:
            return replace(state, follow_up_due=due, contact_stamp=stamp)
    return state


# --- the worker side ------------------------------------------------------------------------

CONTACTS_COUNTED_PER_DAY = 1000
"""Contacts told apart per worker per day (their event ids kept): more than any worker logs,
one every 90 seconds round the clock. Past it each one told is counted, repeats included."""


def count_contact(counted: Any, event_id: str) -> dict[str, Any]:
    """One worker's day of contacts (``{"ids": [...], "beyond": n}``) with ``event_id``'s: a
    fact told again (redelivered under ``at_least_once``, or sent again by a case event
    applied again after a crash) counts once. ``counted`` as stored: that, ``None``, or a
    bare count kept before the ids were."""
    if isinstance(counted, int):
        counted = {"ids": [], "beyond": counted}
    day = {"ids": [], "beyond": 0, **(counted or {})}
    if event_id in day["ids"]:
        return day
    if len(day["ids"]) < CONTACTS_COUNTED_PER_DAY:
        return {**day, "ids": [*day["ids"], event_id]}
    return {**day, "beyond": day["beyond"] + 1}


def contacts_counted(counted: Any) -> int:
    """How many contacts a stored day holds (``count_contact``)."""
    if isinstance(counted, int):
        return counted
    return 0 if not counted else len(counted["ids"]) + int(counted["beyond"])


HELD_KEY_SEPARATOR = "/"
"""Between the holder and the case id in a ``held-cases`` key: no holder has one (user ids are
identifiers, ``UNASSIGNED`` neither), so the first one ends the holder whatever the case id."""


def held_key(worker_id: str, case_id: str) -> str:
    """The ``held-cases`` key of ``case_id`` held by ``worker_id``: one small record per case
    held. A worker's whole caseload as one value was rewritten to the changelog at every
    change, and past about 17,000 cases (the unassigned ones first) it outgrew what the
    producer sends in one request: the worker failed on that record at every restart."""
    return f"{worker_id}{HELD_KEY_SEPARATOR}{case_id}"


def held_by(key: str) -> tuple[str, str]:
    """The holder and the case id of a ``held-cases`` key (``held_key``)."""
    worker_id, _, case_id = key.partition(HELD_KEY_SEPARATOR)
    return worker_id, case_id


def held_entry(fact: Holds) -> dict[str, Any]:
    """What ``held-cases`` keeps of a case held: ``{"follow_up_due": "YYYY-MM-DD" | None}``."""
    due = None if fact.follow_up_due is None else fact.follow_up_due.isoformat()
    return {"follow_up_due": due}


@dataclass(frozen=True, slots=True, order=True)
class OverdueFollowUp:
    due: date
    case_id: str
    worker_id: str
    days_overdue: int

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "worker_id": self.worker_id,
            "due": self.due.isoformat(),
            "days_overdue": self.days_overdue,
        }


def overdue_of(held: Iterable[tuple[str, Mapping[str, Any]]], today: date) -> list[OverdueFollowUp]:
    """Of the ``held-cases`` entries ``held`` (key, entry), the cases whose follow-up date has
    passed (a due date of today is not overdue yet), oldest due date first."""
    found: list[OverdueFollowUp] = []
    for key, entry in held:
        text = entry.get("follow_up_due")
        if text is None:
            continue
        due = date.fromisoformat(text)
        if due < today:
            worker_id, case_id = held_by(key)
            found.append(OverdueFollowUp(due, case_id, worker_id, (today - due).days))
    return sorted(found)
