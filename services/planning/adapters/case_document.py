"""The current view of one case as a JSON document, and how each case event changes it.

Pure functions of the events (and their recorded metadata), so that replaying the same events
always builds the same document. Each stored field is changed by the events of one service only
and everything else is derived from stored fields, so the document does not depend on how the
bus interleaves different services' events either (a rebuild may replay them in another order).
Lists keep their order in the stream (the sequence of the event that brought each entry):
documents are stored with sorted keys, so dictionaries would not keep it.

Nor does the document depend on the order in which one stream's events arrive: an event
dead-lettered and replayed later (``casetrail dlq replay``), or parked and retried, reaches the
view after later events of its stream. Whatever an event overwrites keeps the place of the
event that set it (``sequences``, or the entry's own: its sequence, or for what an evaluation
sets its moment and sequence, ``_place``), so an older value never replaces a newer one; counts
add up in any order; what is derived from closures (the follow-up due, a plan's cycle) is
derived from their sequences; and what an event changes on an entry not known yet (a service
cancelled before its scheduling arrived) waits in ``early`` for the event that makes the entry.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

from casetrail_platform.ages import agency_today
from casetrail_platform.policy.redaction import is_sensitive_code
from casetrail_platform.projections.port import Document
from events.catalog.assessment import InitialAssessmentRecorded
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import CaseEvent
from events.catalog.cases import CaseClosed, CaseOpened, CaseReopened, DischargePlanned
from events.catalog.monitoring import ContactLogged, ProgressEvaluated
from events.catalog.planning import (
    Goal,
    GoalAchieved,
    GoalAdded,
    GoalDropped,
    GoalRevised,
    PlanAgreed,
    PlanDrafted,
)
from events.catalog.referrals import (
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralMade,
    ReferralWithdrawn,
)
from events.catalog.scheduling import (
    ServiceCancelled,
    ServiceDelivered,
    ServiceRescheduled,
    ServiceScheduled,
)
from events.envelope import RecordedEvent, to_micros
from services.planning.domain.model import GoalStatus

OPEN = "open"
CLOSED = "closed"
STAGES = ("intake", "assigned", "planning", "active", "closed")
SCHEDULED = "scheduled"
OPEN_REFERRAL_STATUSES = frozenset({"pending", "accepted"})


def new_document(case_id: str) -> Document:
    return {
        "case_id": case_id,
        "client_id": None,
        "opened": False,
        "opened_at": None,
        "status": OPEN,
        "stage": "intake",
        "worker_id": None,
        "worker_role": None,
        "assigned_at": None,
        "presented_needs": [],
        "assessed_needs": [],
        "needs": [],
        "plan": None,
        "previous_plans": [],
        "services": [],
        "scheduled_service_ids": [],
        "referrals": [],
        "open_referrals": 0,
        "next_follow_up_due": None,
        "last_contact_on": None,
        "last_contact_at": None,
        "contacts_logged": 0,
        "discharge": None,
        "closure_reason": None,
        "last_closure_reason": None,
        "closures": 0,
        "reopens": 0,
        "reopened_at": None,
        "assessed": False,
        "assessed_at": None,
        "closure_sequences": [],
        "contact_candidates": [],
        "sequences": {},
        "early": {},
    }


def apply_event(document: Document, recorded: RecordedEvent, time_zone: tzinfo = UTC) -> bool:
    """Change ``document`` for ``recorded``; False when the event does not concern the view.
    ``time_zone``: the agency's (``CASETRAIL_AGENCY_TIME_ZONE``), whose date of the event's
    moment the view shows (a contact's, an evaluation's), as planning checks the follow-up
    due against: UTC's date put an agency west of UTC's evening contact on the next day, after
    the follow-up it set for that day."""
    kind = type(recorded.event)
    if (dated := _DATED_CHANGES.get(kind)) is not None:
        dated(document, recorded.event, recorded, _day(recorded, time_zone))
    elif (change := _CHANGES.get(kind)) is not None:
        change(document, recorded.event, recorded)
    else:
        return False
    _derive(document)
    return True


def settle_erased(document: Document) -> None:
    """A document whose sensitive values were just replaced by the erasure marker, as the
    case's events, reading erased from the start, would have built it: the presenting needs
    are a set (the marker once), and the derived fields follow."""
    document["presented_needs"] = sorted(set(document["presented_needs"]))
    _derive(document)


def _derive(document: Document) -> None:
    closures = document["closure_sequences"]
    for made in (*_plans(document), document["discharge"]):
        if made is not None and "made_sequence" in made:
            made["cycle"] = _cycle_at(closures, made["made_sequence"])
    _latest_contact(document, closures)
    closed = document["closures"] > document["reopens"]
    plan = current(document, "plan")
    document["assessed"] = _assessed_in_episode(document)
    document["status"] = CLOSED if closed else OPEN
    document["closure_reason"] = document["last_closure_reason"] if closed else None
    if closed:
        document["stage"] = "closed"
    elif plan is not None and plan["agreed_sequence"] > 0:
        document["stage"] = "active"
    elif plan is not None:
        document["stage"] = "planning"
    elif document["worker_id"] is not None:
        document["stage"] = "assigned"
    else:
        document["stage"] = "intake"
    document["stage_without_special"] = _stage_without_special(document, plan)
    document["needs"] = sorted(
        {*document["presented_needs"], *(n["category"] for n in document["assessed_needs"])}
    )
    document["scheduled_service_ids"] = sorted(s["service_id"] for s in _scheduled(document))
    document["open_referrals"] = len(_running(document))


def _assessed_in_episode(document: Document) -> bool:
    """Whether the case's current episode has its initial assessment: intake asks for one
    after each reopening, so the last assessment counts only if it came after the last
    reopening. Both are intake's events, so their sequences in its stream order them, in
    whatever order the bus hands them over. An assessment always names at least one need
    (the catalog requires it)."""
    sequences = document.get("sequences", {})
    after_reopening = sequences.get("assessment", 0) > sequences.get("reopening", 0)
    return bool(document["assessed_needs"]) and after_reopening


def _scheduled(document: Document) -> list[Document]:
    return [s for s in document["services"] if s["status"] == SCHEDULED]


def _running(document: Document) -> list[Document]:
    return [r for r in document["referrals"] if r["status"] in OPEN_REFERRAL_STATUSES]


def scheduled_and_running(document: Document, *, special: bool) -> tuple[int, int]:
    """How many of the case's services are still scheduled and of its referrals still run,
    those of a special-data kind or need (``redaction.is_sensitive_code``) counted only when
    ``special``. A reader not entitled to sensitive values is shown no such entry in the case's
    view or coordination (``Disclosure.keep_readable``): a count of them would tell that the
    client receives, say, addiction counseling. Counted from the entries as the view lists
    them, so a document kept before this needs no rebuild."""

    def shown(code: str) -> bool:
        return special or not is_sensitive_code(code)

    return (
        sum(1 for service in _scheduled(document) if shown(service["kind"])),
        sum(1 for referral in _running(document) if shown(referral["need_category"])),
    )


def special_entry_ids(document: Document) -> frozenset[str]:
    """The ids of the case's services still scheduled and referrals still running of a
    special-data kind or need, the entries ``scheduled_and_running`` leaves uncounted for a
    reader not entitled to sensitive values (a closure's refusal lists them to no such reader).
    """
    services = [s["service_id"] for s in _scheduled(document) if is_sensitive_code(s["kind"])]
    referrals = [
        r["referral_id"] for r in _running(document) if is_sensitive_code(r["need_category"])
    ]
    return frozenset([*services, *referrals])


def current(document: Document, key: str) -> Document | None:
    """The plan or discharge plan under ``key`` if it belongs to the case's current cycle.

    Each records the cycle it was made in (planning's closures before it, both planning's own
    events, so in stream order); the current cycle is the number of reopenings (intake's). A
    reopened case shows neither until a new one is made: they are of the cycle that closed.
    Documents projected before cycles were kept hold those of the first cycle (a second plan
    could not be drafted then)."""
    made: Document | None = document[key]
    if made is None or made.get("cycle", 0) < document["reopens"]:
        return None
    return made


def previous_plans(document: Document) -> list[Document]:
    """The plans of the case's earlier cycles, oldest first: those a new plan replaced, and the
    last one too while the case is reopened without a new plan yet."""
    earlier: list[Document] = list(document.get("previous_plans", []))
    if document["plan"] is not None and current(document, "plan") is None:
        earlier.append(document["plan"])
    return earlier


def _cycle_at(closures: list[int], sequence: int) -> int:
    """The cycle of planning's event ``sequence``: the closures (``closure_sequences``, in
    order) before it in planning's stream."""
    return bisect_left(closures, sequence)


def _day(recorded: RecordedEvent, time_zone: tzinfo) -> str:
    """The agency's date at ``recorded``'s stated moment."""
    return agency_today(time_zone, recorded.metadata.occurred_at).isoformat()


def _later(holder: Document, mark: str, recorded: RecordedEvent) -> bool:
    """Whether ``recorded`` comes after the event that last set what ``mark`` names in
    ``holder`` (each such value is set by one stream's events, so their places compare); noted
    if so. A document kept before the marks takes any event as later, as it did."""
    sequences = holder.setdefault("sequences", {})
    place = _place(mark, recorded)
    if mark in sequences and sequences[mark] > place:
        return False
    sequences[mark] = place
    return True


DATED_MARKS = frozenset({"evaluation", "rating"})
"""What evaluations set (a plan's last evaluation and whether it asked for an adjustment, a
goal's latest rating): the latest evaluation is the one dated last, the later in the stream of
two at one moment, as the latest contact is. One written up late, dated before, is history."""


def _place(mark: str, recorded: RecordedEvent) -> int | list[int]:
    """Where ``recorded`` falls among the events setting what ``mark`` names: its sequence,
    or for an evaluation's values its moment (in microseconds) then its sequence."""
    if mark in DATED_MARKS:
        return [to_micros(recorded.metadata.occurred_at), recorded.sequence]
    return recorded.sequence


def _change(
    document: Document,
    entry: Document | None,
    key: str,
    mark: str,
    recorded: RecordedEvent,
    values: Document,
) -> None:
    """Set ``values`` (the group ``mark``) on ``entry`` unless a later event set them; on an
    entry not made yet (``None``), keep them in ``early`` under ``key`` for ``_made``."""
    if entry is None:
        early: dict[str, Document] = document.setdefault("early", {})
        waiting = early.setdefault(key, {"sequences": {}, "values": {}})
        if _later(waiting, mark, recorded):
            waiting["values"][mark] = values
    elif _later(entry, mark, recorded):
        entry.update(values)


def _made(document: Document, key: str, entry: Document) -> None:
    """A new ``entry`` takes what later events changed on it before it was made."""
    waiting = document.get("early", {}).pop(key, None)
    if waiting is None:
        return
    for mark, place in waiting["sequences"].items():
        known = entry["sequences"]
        if mark not in known or place > known[mark]:
            entry.update(waiting["values"][mark])
            known[mark] = place


def _case_opened(document: Document, event: CaseOpened, recorded: RecordedEvent) -> None:
    document["opened"] = True
    document["opened_at"] = recorded.metadata.occurred_at.isoformat()
    document["client_id"] = event.client_id
    document["presented_needs"] = sorted({need.category.value for need in event.presenting_needs})


def _assessed(
    document: Document, event: InitialAssessmentRecorded, recorded: RecordedEvent
) -> None:
    if _later(document, "assessment", recorded):
        document["assessed_needs"] = [
            {"category": need.category.value, "urgency": need.urgency.value} for need in event.needs
        ]
        document["assessed_at"] = recorded.metadata.occurred_at.isoformat()


def _assigned(
    document: Document, event: CaseAssigned | CaseReassigned, recorded: RecordedEvent
) -> None:
    if _first_assignment(document, recorded):
        document["assigned_at"] = recorded.metadata.occurred_at.isoformat()
        document["sequences"]["first_assignment"] = recorded.sequence
    if _later(document, "worker", recorded):
        document["worker_id"] = event.worker_id
        document["worker_role"] = event.worker_role.value


def _first_assignment(document: Document, recorded: RecordedEvent) -> bool:
    """Whether ``recorded`` is the case's first assignment as far as known: the earliest in
    coordination's stream, in whatever order the bus hands them over. A document kept before
    ``assigned_at`` that has a worker never learns it (its first assignment came before)."""
    if "assigned_at" not in document and document["worker_id"] is not None:
        return False
    first = document.setdefault("sequences", {}).get("first_assignment")
    return document.get("assigned_at") is None or (first is not None and recorded.sequence < first)


def _plans(document: Document) -> list[Document]:
    plan = document["plan"]
    return [*document.get("previous_plans", []), *([] if plan is None else [plan])]


def _plan(document: Document, plan_id: str, recorded: RecordedEvent) -> Document:
    """The plan ``plan_id``, made if unknown: an event of a plan may arrive before the plan's
    drafting (which then fills it in). The current plan is the one drafted last."""
    for plan in _plans(document):
        if plan["plan_id"] == plan_id:
            return plan
    plan = {
        "plan_id": plan_id,
        "agreed_version": 0,
        "changed_since_agreement": True,
        "goals": [],
        "last_evaluated_on": None,
        "adjustment_needed": False,
        "cycle": document["closures"],
        # Until the drafting arrives, the earliest of the plan's events places it.
        "made_sequence": recorded.sequence,
        "agreed_sequence": 0,
        "revised_sequence": 0,
        "change_sequences": [],
        "goal_change_sequences": {},
        "agreements": [],
        "evaluations": [],
        "sequences": {},
    }
    _settle_plans(document, [*_plans(document), plan])
    return plan


def _settle_plans(document: Document, plans: list[Document]) -> None:
    # Plans kept before they held their sequences were drafted first.
    plans = sorted(plans, key=lambda plan: plan.get("made_sequence", 0))
    document["plan"] = plans[-1]
    document["previous_plans"] = plans[:-1]


def _plan_drafted(document: Document, event: PlanDrafted, recorded: RecordedEvent) -> None:
    plan = _plan(document, event.plan_id, recorded)
    # A plan kept before its sequences were, drafted again: placed by this drafting.
    plan["made_sequence"] = min(plan.get("made_sequence", recorded.sequence), recorded.sequence)
    for index, goal in enumerate(event.goals):
        _put_goal(document, plan, goal, recorded, index)
    _settle_plans(document, _plans(document))
    _changed(plan, recorded)


def _goal_added(document: Document, event: GoalAdded, recorded: RecordedEvent) -> None:
    plan = _plan(document, event.plan_id, recorded)
    _put_goal(document, plan, event.goal, recorded, 0)
    _changed(plan, recorded, event.goal.goal_id)


def _goal_revised(document: Document, event: GoalRevised, recorded: RecordedEvent) -> None:
    plan = _plan(document, event.plan_id, recorded)
    _put_goal(document, plan, event.goal, recorded, None)
    _changed(plan, recorded, event.goal.goal_id)


def _goal_achieved(document: Document, event: GoalAchieved, recorded: RecordedEvent) -> None:
    plan = _plan(document, event.plan_id, recorded)
    status = {"status": GoalStatus.ACHIEVED.value}
    _goal_change(document, plan, event.goal_id, "status", recorded, status)
    _settle(plan)


def _goal_dropped(document: Document, event: GoalDropped, recorded: RecordedEvent) -> None:
    plan = _plan(document, event.plan_id, recorded)
    status = {"status": GoalStatus.DROPPED.value}
    _goal_change(document, plan, event.goal_id, "status", recorded, status)
    _changed(plan, recorded, event.goal_id)


def _plan_agreed(document: Document, event: PlanAgreed, recorded: RecordedEvent) -> None:
    plan = _plan(document, event.plan_id, recorded)
    _marks(plan)
    # The event numbers the agreement, not the version: the version agreed is derived from
    # the changes before it (``_settle``).
    plan["agreed_sequence"] = max(plan["agreed_sequence"], recorded.sequence)
    # Which goals each agreement named: a reader shown none of them is not shown it.
    agreement = [recorded.sequence, list(event.goal_ids)]
    if agreement not in plan["agreements"]:
        insort(plan["agreements"], agreement)
    _settle(plan)


def _evaluated(
    document: Document, event: ProgressEvaluated, recorded: RecordedEvent, day: str
) -> None:
    plan = _plan(document, event.plan_id, recorded)
    for progress in event.goal_progress:
        rating = {"latest_rating": progress.rating.value}
        _goal_change(document, plan, progress.goal_id, "rating", recorded, rating)
    if _later(plan, "evaluation", recorded):
        plan["last_evaluated_on"] = day
        plan["adjustment_needed"] = event.plan_adjustment_needed
    # Which goals each evaluation rated: a reader shown none of them is not shown it.
    rated = [entry.goal_id for entry in event.goal_progress]
    evaluation = [_place("evaluation", recorded), rated, day, event.plan_adjustment_needed]
    if evaluation not in plan["evaluations"]:
        insort(plan["evaluations"], evaluation)
    _settle(plan)


def _contact(document: Document, event: ContactLogged, recorded: RecordedEvent, day: str) -> None:
    document["contacts_logged"] += 1
    due = event.next_follow_up_due
    logged = {
        "sequence": recorded.sequence,
        "at": recorded.metadata.occurred_at.isoformat(),
        "on": day,
        "due": None if due is None else due.isoformat(),
    }
    document["contact_candidates"] = [*document["contact_candidates"], logged]


CONTACT_CANDIDATES_KEPT = 100
"""At most this many contacts are kept as candidates (``_contact_candidates``): past it, those
logged last, each dated before every one logged before it in its cycle, are let go; they could
become the latest only if a closure just before them in the stream came after them too."""


def _latest_contact(document: Document, closures: list[int]) -> None:
    """The case's latest contact and the follow-up it set: of the latest cycle (closures in
    planning's stream before it) that has one, the one dated last (the later in the stream of
    two at one moment). A contact logged late, dated before the latest, is history: the overdue
    list must neither lose the case nor list it early. An earlier cycle's contact dated later
    (a closure stated before its cycle's work) is not the reopened case's. A closure after it
    in the stream leaves no follow-up due: a closed case is never overdue.

    Derived from the contacts that may be the latest (``_contact_candidates``) and the closures
    known, so in any delivery order: a closure delivered late (dead-lettered and replayed) puts
    a contact already folded in another cycle, and one dropped then would be lost for good."""
    candidates = _contact_candidates(document["contact_candidates"], closures)
    document["contact_candidates"] = candidates
    if not candidates:
        document["last_contact_at"] = document["last_contact_on"] = None
        document["next_follow_up_due"] = None
        return
    latest = candidates[0]  # of the last cycle with contacts, dated after the later ones
    document["last_contact_at"] = latest["at"]
    document["last_contact_on"] = latest["on"]
    closed_since = bool(closures) and closures[-1] > latest["sequence"]
    document["next_follow_up_due"] = None if closed_since else latest["due"]


def _contact_candidates(contacts: list[Document], closures: list[int]) -> list[Document]:
    """``contacts`` without those that cannot be the latest whatever closures are still to
    come, in stream order: one with a contact after it in the stream dated no earlier (of its
    cycle or a later one, it is the later), or with a closure known between it and the last
    contact (a later cycle has one). Those left are of one cycle as far as known, each dated
    before every one before it: usually one, more only for contacts written up late."""
    by_sequence = {contact["sequence"]: contact for contact in contacts}
    last = max(by_sequence, default=0)
    cycle_start = max((closed for closed in closures if closed < last), default=0)
    kept: list[Document] = []
    for sequence in sorted(by_sequence, reverse=True):
        contact = by_sequence[sequence]
        if sequence < cycle_start:
            break
        if not kept or _moment(contact) > _moment(kept[-1]):
            kept.append(contact)
    return sorted(kept, key=lambda contact: contact["sequence"])[:CONTACT_CANDIDATES_KEPT]


def _moment(contact: Document) -> datetime:
    return datetime.fromisoformat(contact["at"])


def _discharge(document: Document, event: DischargePlanned, recorded: RecordedEvent) -> None:
    known = document["discharge"]
    if known is not None and known.get("made_sequence", 0) > recorded.sequence:
        return
    document["discharge"] = {
        "target_date": event.target_date.isoformat(),
        "criteria": list(event.criteria),
        "aftercare": list(event.aftercare),
        "long_term_maintenance": event.long_term_maintenance,
        "cycle": document["closures"],
        "made_sequence": recorded.sequence,
    }


def _closed(document: Document, event: CaseClosed, recorded: RecordedEvent) -> None:
    closures = document["closure_sequences"]
    document["closures"] += 1
    insort(closures, recorded.sequence)
    if closures[-1] == recorded.sequence:
        document["last_closure_reason"] = event.reason.value


def _reopened(document: Document, event: CaseReopened, recorded: RecordedEvent) -> None:
    document["reopens"] += 1
    if _later(document, "reopening", recorded):
        document["reopened_at"] = recorded.metadata.occurred_at.isoformat()


def _service_scheduled(
    document: Document, event: ServiceScheduled, recorded: RecordedEvent
) -> None:
    key = f"service|{event.service_id}"
    known = next(iter(_entries(document["services"], "service_id", event.service_id)), None)
    if known is not None and known.get("made_sequence", 0) > recorded.sequence:
        return  # scheduled again since
    entry: Document = {
        "service_id": event.service_id,
        "kind": event.kind.value,
        "provider_id": event.provider.provider_id,
        "provider_name": event.provider.name,
        "starts_at": event.starts_at.isoformat(),
        "ends_at": event.ends_at.isoformat(),
        "status": SCHEDULED,
        "goal_id": event.goal_id,
        "referral_id": event.referral_id,
        "made_sequence": recorded.sequence,
        "sequences": {"status": recorded.sequence},
    }
    if known is not None and known.get("sequences", {}).get("status", 0) > recorded.sequence:
        # Moved or cancelled since this earlier scheduling (of the same service, again).
        entry.update({name: known[name] for name in ("starts_at", "ends_at", "status")})
        entry["sequences"]["status"] = known["sequences"]["status"]
    _made(document, key, entry)
    others = [s for s in document["services"] if s["service_id"] != event.service_id]
    document["services"] = sorted([*others, entry], key=lambda s: s.get("made_sequence", 0))


def _service_moved(
    document: Document, event: ServiceRescheduled | ServiceDelivered, recorded: RecordedEvent
) -> None:
    status = "delivered" if isinstance(event, ServiceDelivered) else SCHEDULED
    values = {
        "starts_at": event.starts_at.isoformat(),
        "ends_at": event.ends_at.isoformat(),
        "status": status,
    }
    _service_change(document, event.service_id, recorded, values)


def _service_cancelled(
    document: Document, event: ServiceCancelled, recorded: RecordedEvent
) -> None:
    _service_change(document, event.service_id, recorded, {"status": "cancelled"})


def _service_change(
    document: Document, service_id: str, recorded: RecordedEvent, values: Document
) -> None:
    known = next(iter(_entries(document["services"], "service_id", service_id)), None)
    _change(document, known, f"service|{service_id}", "status", recorded, values)


def _referral_made(document: Document, event: ReferralMade, recorded: RecordedEvent) -> None:
    entry: Document = {
        "referral_id": event.referral_id,
        "provider_id": event.provider.provider_id,
        "provider_name": event.provider.name,
        "need_category": event.need_category.value,
        "service": event.service,
        "urgency": event.urgency.value,
        "status": "pending",
        "made_sequence": recorded.sequence,
        "sequences": {"status": recorded.sequence},
    }
    _made(document, f"referral|{event.referral_id}", entry)
    document["referrals"] = sorted(
        [*document["referrals"], entry], key=lambda r: r.get("made_sequence", 0)
    )


def _referral_answered(
    document: Document,
    event: ReferralAccepted | ReferralDeclined | ReferralCompleted | ReferralWithdrawn,
    recorded: RecordedEvent,
) -> None:
    status = {
        ReferralAccepted: "accepted",
        ReferralDeclined: "declined",
        ReferralCompleted: "completed",
        ReferralWithdrawn: "withdrawn",
    }[type(event)]
    known = next(iter(_entries(document["referrals"], "referral_id", event.referral_id)), None)
    key = f"referral|{event.referral_id}"
    _change(document, known, key, "status", recorded, {"status": status})


def _put_goal(
    document: Document, plan: Document, goal: Goal, recorded: RecordedEvent, index: int | None
) -> None:
    """The goal's content as ``recorded`` gives it, unless a later revision gave it; ``index``:
    its place among the goals the event brought (``None`` for a revision, which places it
    only until the event that brought it arrives)."""
    entry = _goal(plan, goal.goal_id)
    place = [recorded.sequence, 0 if index is None else index]
    if entry is None:
        entry = {
            "goal": goal.model_dump(mode="json"),
            "status": GoalStatus.ACTIVE.value,
            "latest_rating": None,
            "order": place,
            "sequences": {"goal": recorded.sequence},
        }
        _made(document, _goal_key(plan, goal.goal_id), entry)
        plan["goals"].append(entry)
    else:
        if index is not None:
            entry["order"] = min(entry.get("order", place), place)
        if _later(entry, "goal", recorded):
            entry["goal"] = goal.model_dump(mode="json")
    # Goals kept before they held their place keep their order, first.
    plan["goals"].sort(key=lambda e: e.get("order", [0, 0]))


def _goal_change(
    document: Document,
    plan: Document,
    goal_id: str,
    mark: str,
    recorded: RecordedEvent,
    values: Document,
) -> None:
    _change(document, _goal(plan, goal_id), _goal_key(plan, goal_id), mark, recorded, values)


def _goal(plan: Document, goal_id: str) -> Document | None:
    return next(iter(_goals(plan, goal_id)), None)


def _goal_key(plan: Document, goal_id: str) -> str:
    return f"goal|{plan['plan_id']}|{goal_id}"


def _goals(plan: Document, goal_id: str) -> list[Document]:
    return [entry for entry in plan["goals"] if entry["goal"]["goal_id"] == goal_id]


def _entries(items: list[Document], key: str, value: str) -> list[Document]:
    return [item for item in items if item[key] == value]


def _marks(plan: Document) -> None:
    # A plan kept before the marks: changed since agreement stays so until the next agreement.
    plan.setdefault("agreed_sequence", 0)
    plan.setdefault("revised_sequence", 1 if plan["changed_since_agreement"] else 0)


def _changed(plan: Document, recorded: RecordedEvent, goal_id: str | None = None) -> None:
    """Note ``recorded``, a change of what the plan holds (``PLAN_VERSION_CHANGES``), of its
    goal ``goal_id`` (``None``: the drafting, the plan's own)."""
    _marks(plan)
    plan["revised_sequence"] = max(plan["revised_sequence"], recorded.sequence)
    if recorded.sequence not in plan["change_sequences"]:
        insort(plan["change_sequences"], recorded.sequence)
    if goal_id is not None:
        goal_changes = plan["goal_change_sequences"].setdefault(goal_id, [])
        if recorded.sequence not in goal_changes:
            insort(goal_changes, recorded.sequence)
    _settle(plan)


def _settle(plan: Document) -> None:
    """The plan's versions and agreement status, as planning's record counts them."""
    _marks(plan)
    plan["changed_since_agreement"] = plan["revised_sequence"] > plan["agreed_sequence"]
    plan["version"], plan["agreed_version"], plan["agreement_status"] = _versions(
        plan, set(), plan["agreed_sequence"]
    )


def plan_versions(plan: Document, *, special: bool) -> tuple[int, int, str]:
    """The plan's version, the version last agreed (0: never) and its agreement status as shown
    to a reader (``special``: one entitled to sensitive values, shown them as settled). To a
    reader who is not, the changes of the goals withheld from them whole (their need special
    data, as planning's ``Plan.version_shown``) are not counted, and an agreement naming none
    but such goals is not shown (``_agreed_shown``): a version up, a plan awaiting agreement
    again with nothing they are shown changed, or agreed with nothing they are shown in it,
    would tell of one. Derived from the goals as they now stand, so a goal revised into a
    special-data need takes its earlier changes, and the agreements naming it alone, out of
    the count with it."""
    if special:
        return plan["version"], plan["agreed_version"], plan["agreement_status"]
    withheld_ids = _withheld_goal_ids(plan)
    goal_changes = plan["goal_change_sequences"]
    withheld = {sequence for goal_id in withheld_ids for sequence in goal_changes.get(goal_id, ())}
    return _versions(plan, withheld, _agreed_shown(plan, withheld_ids))


def evaluation_shown(plan: Document, *, special: bool) -> tuple[str | None, bool]:
    """The day of the plan's latest evaluation (``None``: none) and whether it asked for an
    adjustment, as shown to a reader (``special``: one entitled to sensitive values). To one
    who is not, an evaluation rating none but goals withheld from them whole is not shown, as
    an agreement naming none is not (``plan_versions``): a plan evaluated, agreed to none of
    the goals they are shown, or with none of them rated since, would tell of one."""
    if special:
        return plan["last_evaluated_on"], plan["adjustment_needed"]
    withheld_ids = _withheld_goal_ids(plan)
    shown = [
        (day, adjustment_needed)
        for _, goal_ids, day, adjustment_needed in plan["evaluations"]
        if not withheld_ids.issuperset(goal_ids)
    ]
    return shown[-1] if shown else (None, False)


def stage(document: Document, *, special: bool) -> str:
    """The case's stage as shown to a reader (``special``: one entitled to sensitive values;
    ``stage_without_special`` to one who is not, stored so that a list finds cases by it)."""
    return str(document["stage"] if special else document["stage_without_special"])


def _stage_without_special(document: Document, plan: Document | None) -> str:
    """The stage as shown to a reader not entitled to sensitive values: a plan none of whose
    agreements they are shown (``plan_versions``) is still being planned, not active."""
    if plan is None or document["stage"] != "active":
        return str(document["stage"])
    return "active" if _agreed_shown(plan, _withheld_goal_ids(plan)) > 0 else "planning"


def _withheld_goal_ids(plan: Document) -> set[str]:
    """The ids of the plan's goals withheld whole from a reader not entitled to sensitive
    values: those whose need is special data."""
    return {
        entry["goal"]["goal_id"]
        for entry in plan["goals"]
        if is_sensitive_code(entry["goal"]["need_category"])
    }


def _agreed_shown(plan: Document, withheld_ids: set[str]) -> int:
    """The sequence of the plan's latest agreement naming a goal not ``withheld_ids`` (0:
    none): one naming only goals withheld from a reader is not shown them, the plan reading to
    them as it did before it."""
    shown = [
        sequence
        for sequence, goal_ids in plan["agreements"]
        if not withheld_ids.issuperset(goal_ids)
    ]
    return max(shown, default=0)


def _versions(plan: Document, withheld: set[int], agreed: int) -> tuple[int, int, str]:
    """The plan's versions from its changes (but those ``withheld``) and the agreement at
    sequence ``agreed`` (0: none), in stream order: the version is the count of its changes,
    the one agreed the count of those before the agreement, as planning's record counts them
    (``CasePlanning``), whatever order they arrived in."""
    changes = [sequence for sequence in plan["change_sequences"] if sequence not in withheld]
    if agreed == 0:
        status = "draft"
    elif changes and changes[-1] > agreed:
        status = "awaiting_agreement"
    else:
        status = "agreed"
    return len(changes), bisect_left(changes, agreed), status


Change = Callable[[Document, Any, RecordedEvent], None]
"""Each change takes the event type it is registered for."""

_CHANGES: dict[type[CaseEvent], Change] = {
    CaseOpened: _case_opened,
    InitialAssessmentRecorded: _assessed,
    CaseAssigned: _assigned,
    CaseReassigned: _assigned,
    PlanDrafted: _plan_drafted,
    GoalAdded: _goal_added,
    GoalRevised: _goal_revised,
    GoalAchieved: _goal_achieved,
    GoalDropped: _goal_dropped,
    PlanAgreed: _plan_agreed,
    DischargePlanned: _discharge,
    CaseClosed: _closed,
    CaseReopened: _reopened,
    ServiceScheduled: _service_scheduled,
    ServiceRescheduled: _service_moved,
    ServiceDelivered: _service_moved,
    ServiceCancelled: _service_cancelled,
    ReferralMade: _referral_made,
    ReferralAccepted: _referral_answered,
    ReferralDeclined: _referral_answered,
    ReferralCompleted: _referral_answered,
    ReferralWithdrawn: _referral_answered,
}

DatedChange = Callable[[Document, Any, RecordedEvent, str], None]
"""A change keeping the agency's date of the event's moment (``day``, ISO)."""

_DATED_CHANGES: dict[type[CaseEvent], DatedChange] = {
    ProgressEvaluated: _evaluated,
    ContactLogged: _contact,
}

EVENT_TYPES = frozenset(kind.event_type for kind in (*_CHANGES, *_DATED_CHANGES))
"""The event types ``apply_event`` reacts to."""
