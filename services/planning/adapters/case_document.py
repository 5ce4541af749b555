"""The current view of one case as a JSON document, and how each case event changes it.

Pure functions of the events (and their recorded metadata), so that replaying the same events
always builds the same document. Each stored field is changed by the events of one service only
and everything else is derived from stored fields, so the document does not depend on how the
bus interleaves different services' events either (a rebuild may replay them in another order).
Lists keep their order of first appearance: documents are stored with sorted keys, so
dictionaries would not keep it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

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
from events.envelope import RecordedEvent
from services.planning.domain.model import GoalStatus, plan_version

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
    }


def apply_event(document: Document, recorded: RecordedEvent) -> bool:
    """Change ``document`` for ``recorded``; False when the event does not concern the view."""
    change = _CHANGES.get(type(recorded.event))
    if change is None:
        return False
    change(document, recorded.event, recorded)
    _derive(document)
    return True


def settle_erased(document: Document) -> None:
    """A document whose sensitive values were just replaced by the erasure marker, as the
    case's events, reading erased from the start, would have built it: the presenting needs
    are a set (the marker once), and the derived fields follow."""
    document["presented_needs"] = sorted(set(document["presented_needs"]))
    _derive(document)


def _derive(document: Document) -> None:
    closed = document["closures"] > document["reopens"]
    plan = current(document, "plan")
    document["status"] = CLOSED if closed else OPEN
    document["closure_reason"] = document["last_closure_reason"] if closed else None
    if closed:
        document["stage"] = "closed"
    elif plan is not None and plan["agreed_version"] > 0:
        document["stage"] = "active"
    elif plan is not None:
        document["stage"] = "planning"
    elif document["worker_id"] is not None:
        document["stage"] = "assigned"
    else:
        document["stage"] = "intake"
    document["needs"] = sorted(
        {*document["presented_needs"], *(n["category"] for n in document["assessed_needs"])}
    )
    document["scheduled_service_ids"] = sorted(
        s["service_id"] for s in document["services"] if s["status"] == SCHEDULED
    )
    document["open_referrals"] = sum(
        1 for r in document["referrals"] if r["status"] in OPEN_REFERRAL_STATUSES
    )


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


def _day(recorded: RecordedEvent) -> str:
    return recorded.metadata.occurred_at.date().isoformat()


def _case_opened(document: Document, event: CaseOpened, recorded: RecordedEvent) -> None:
    document["opened"] = True
    document["opened_at"] = recorded.metadata.occurred_at.isoformat()
    document["client_id"] = event.client_id
    document["presented_needs"] = sorted({need.category.value for need in event.presenting_needs})


def _assessed(
    document: Document, event: InitialAssessmentRecorded, recorded: RecordedEvent
) -> None:
    document["assessed_needs"] = [
        {"category": need.category.value, "urgency": need.urgency.value} for need in event.needs
    ]


def _assigned(
    document: Document, event: CaseAssigned | CaseReassigned, recorded: RecordedEvent
) -> None:
    document["worker_id"] = event.worker_id
    document["worker_role"] = event.worker_role.value


def _plan_drafted(document: Document, event: PlanDrafted, recorded: RecordedEvent) -> None:
    if document["plan"] is not None:
        # The plan of an earlier cycle: history (documents projected before this lack the list).
        document.setdefault("previous_plans", []).append(document["plan"])
    document["plan"] = {
        "plan_id": event.plan_id,
        "agreed_version": 0,
        "changed_since_agreement": True,
        "goals": [_goal_entry(goal) for goal in event.goals],
        "last_evaluated_on": None,
        "adjustment_needed": False,
        "cycle": document["closures"],
    }
    _version(document["plan"])


def _goal_added(document: Document, event: GoalAdded, recorded: RecordedEvent) -> None:
    if (plan := document["plan"]) is not None:
        plan["goals"].append(_goal_entry(event.goal))
        _revised(plan)


def _goal_revised(document: Document, event: GoalRevised, recorded: RecordedEvent) -> None:
    if (plan := document["plan"]) is not None:
        for entry in _goals(plan, event.goal.goal_id):
            entry["goal"] = event.goal.model_dump(mode="json")
        _revised(plan)


def _goal_achieved(document: Document, event: GoalAchieved, recorded: RecordedEvent) -> None:
    if (plan := document["plan"]) is not None:
        for entry in _goals(plan, event.goal_id):
            entry["status"] = GoalStatus.ACHIEVED.value


def _goal_dropped(document: Document, event: GoalDropped, recorded: RecordedEvent) -> None:
    if (plan := document["plan"]) is not None:
        for entry in _goals(plan, event.goal_id):
            entry["status"] = GoalStatus.DROPPED.value
        _revised(plan)


def _plan_agreed(document: Document, event: PlanAgreed, recorded: RecordedEvent) -> None:
    if (plan := document["plan"]) is not None:
        plan["agreed_version"] = event.plan_version
        plan["changed_since_agreement"] = False
        _version(plan)


def _evaluated(document: Document, event: ProgressEvaluated, recorded: RecordedEvent) -> None:
    if (plan := document["plan"]) is not None:
        for progress in event.goal_progress:
            for entry in _goals(plan, progress.goal_id):
                entry["latest_rating"] = progress.rating.value
        plan["last_evaluated_on"] = _day(recorded)
        plan["adjustment_needed"] = event.plan_adjustment_needed


def _contact(document: Document, event: ContactLogged, recorded: RecordedEvent) -> None:
    document["contacts_logged"] += 1
    # A contact logged late, dated before the latest one, is history: the latest contact set
    # the next follow-up, and the overdue list must neither lose the case nor list it early.
    moment = recorded.metadata.occurred_at
    latest = document.get("last_contact_at")
    if latest is not None and moment < datetime.fromisoformat(latest):
        return
    document["last_contact_at"] = moment.isoformat()
    document["last_contact_on"] = _day(recorded)
    due = event.next_follow_up_due
    document["next_follow_up_due"] = None if due is None else due.isoformat()


def _discharge(document: Document, event: DischargePlanned, recorded: RecordedEvent) -> None:
    document["discharge"] = {
        "target_date": event.target_date.isoformat(),
        "criteria": list(event.criteria),
        "aftercare": list(event.aftercare),
        "long_term_maintenance": event.long_term_maintenance,
        "cycle": document["closures"],
    }


def _closed(document: Document, event: CaseClosed, recorded: RecordedEvent) -> None:
    document["closures"] += 1
    document["last_closure_reason"] = event.reason.value
    # A closed case has no follow-up due; it never shows as overdue.
    document["next_follow_up_due"] = None


def _reopened(document: Document, event: CaseReopened, recorded: RecordedEvent) -> None:
    document["reopens"] += 1


def _service_scheduled(
    document: Document, event: ServiceScheduled, recorded: RecordedEvent
) -> None:
    document["services"] = [s for s in document["services"] if s["service_id"] != event.service_id]
    document["services"].append(
        {
            "service_id": event.service_id,
            "kind": event.kind.value,
            "provider_id": event.provider.provider_id,
            "provider_name": event.provider.name,
            "starts_at": event.starts_at.isoformat(),
            "ends_at": event.ends_at.isoformat(),
            "status": SCHEDULED,
            "goal_id": event.goal_id,
            "referral_id": event.referral_id,
        }
    )


def _service_moved(
    document: Document, event: ServiceRescheduled | ServiceDelivered, recorded: RecordedEvent
) -> None:
    status = "delivered" if isinstance(event, ServiceDelivered) else SCHEDULED
    for service in _entries(document["services"], "service_id", event.service_id):
        service["starts_at"] = event.starts_at.isoformat()
        service["ends_at"] = event.ends_at.isoformat()
        service["status"] = status


def _service_cancelled(
    document: Document, event: ServiceCancelled, recorded: RecordedEvent
) -> None:
    for service in _entries(document["services"], "service_id", event.service_id):
        service["status"] = "cancelled"


def _referral_made(document: Document, event: ReferralMade, recorded: RecordedEvent) -> None:
    document["referrals"].append(
        {
            "referral_id": event.referral_id,
            "provider_id": event.provider.provider_id,
            "provider_name": event.provider.name,
            "need_category": event.need_category.value,
            "service": event.service,
            "urgency": event.urgency.value,
            "status": "pending",
        }
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
    for referral in _entries(document["referrals"], "referral_id", event.referral_id):
        referral["status"] = status


def _goal_entry(goal: Goal) -> Document:
    return {
        "goal": goal.model_dump(mode="json"),
        "status": GoalStatus.ACTIVE.value,
        "latest_rating": None,
    }


def _goals(plan: Document, goal_id: str) -> list[Document]:
    return [entry for entry in plan["goals"] if entry["goal"]["goal_id"] == goal_id]


def _entries(items: list[Document], key: str, value: str) -> list[Document]:
    return [item for item in items if item[key] == value]


def _revised(plan: Document) -> None:
    plan["changed_since_agreement"] = True
    _version(plan)


def _version(plan: Document) -> None:
    plan["version"] = plan_version(plan["agreed_version"], plan["changed_since_agreement"])
    if plan["agreed_version"] == 0:
        plan["agreement_status"] = "draft"
    elif plan["changed_since_agreement"]:
        plan["agreement_status"] = "awaiting_agreement"
    else:
        plan["agreement_status"] = "agreed"


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
    ProgressEvaluated: _evaluated,
    ContactLogged: _contact,
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

EVENT_TYPES = frozenset(kind.event_type for kind in _CHANGES)
"""The event types ``apply_event`` reacts to."""
