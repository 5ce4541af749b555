"""From command outcomes and read-model documents to planning's gRPC responses."""

from __future__ import annotations

from collections.abc import Callable, MutableSequence
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.message import Message

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.grpc_platform.answer_caps import Cap, cut
from casetrail_platform.projections.port import Document
from events.envelope import RecordedEvent
from services.planning.adapters.case_document import (
    OPEN_REFERRAL_STATUSES,
    current,
    evaluation_shown,
    plan_versions,
    previous_plans,
    scheduled_and_running,
    stage,
)


def command_result(case_id: str, recorded: list[RecordedEvent]) -> common_pb2.CommandResult:
    return common_pb2.CommandResult(
        case_id=case_id,
        version=recorded[-1].sequence if recorded else 0,
        event_ids=[str(event.event_id) for event in recorded],
    )


def case_view(document: Document, *, special: bool) -> planning_pb2.GetCaseViewResponse:
    """The case's view; ``special``: whether the reader may see sensitive values, without
    which its plans' versions leave out the changes of the goals withheld from them, and its
    plans and stage the agreements and evaluations naming none but such goals
    (``plan_versions``, ``evaluation_shown``, ``stage``)."""
    view = planning_pb2.GetCaseViewResponse(
        case_id=document["case_id"],
        client_id=document["client_id"] or "",
        status=document["status"],
        stage=stage(document, special=special),
        needs=_needs(document),
        services=[_service(service) for service in document["services"]],
        referrals=[_referral(referral) for referral in document["referrals"]],
        previous_plans=[_plan(plan, special) for plan in previous_plans(document)],
        next_follow_up_due=document["next_follow_up_due"] or "",
        last_contact_on=document["last_contact_on"] or "",
        contacts_logged=document["contacts_logged"],
        closure_reason=document["closure_reason"] or "",
    )
    if document["worker_id"] is not None:
        view.worker.CopyFrom(
            planning_pb2.AssignedWorker(
                worker_id=document["worker_id"], worker_role=document["worker_role"]
            )
        )
    if (plan := current(document, "plan")) is not None:
        view.plan.CopyFrom(_plan(plan, special))
    if (discharge := current(document, "discharge")) is not None:
        view.discharge.CopyFrom(
            planning_pb2.DischargeView(
                target_date=discharge["target_date"],
                criteria=discharge["criteria"],
                aftercare=discharge["aftercare"],
                long_term_maintenance=discharge["long_term_maintenance"],
            )
        )
    return view


CASE_VIEW_BYTES = 3 * 1024 * 1024 + 512 * 1024
"""The most a case view answer takes, half a MiB under gRPC's 4 MiB default, past which the
answer never reaches the caller (refused RESOURCE_EXHAUSTED by its client, after the read was
recorded, so the case could never be read again). Each part was capped alone, yet the current
plan (``MAX_PLAN_GOALS_BYTES`` of goals), the discharge plan (an event, ``MAX_EVENT_BYTES``)
and the lists' caps added up past it: the lists that grow with the case share what the rest
leaves (``cut_case_view``)."""

VIEW_REFERRALS = Cap(100, 256 * 1024)
VIEW_SERVICES = Cap(1000, 1536 * 1024)
VIEW_PREVIOUS_PLANS = Cap(100, 2 * 1024 * 1024)
"""What a case view lists at most of its referrals, services and earlier cycles' plans, which
grow with the case (a referral 1.1 KB at most, 2.9 KB with four-byte characters; a service
about 1.2 KB, 2.6 KB; a plan up to ``MAX_PLAN_GOALS_BYTES`` of goals, and a case reopened again
and again keeps every one), within what the answer leaves them (``CASE_VIEW_BYTES``)."""


def cut_case_view(view: planning_pb2.GetCaseViewResponse) -> None:
    """Keep in ``view`` (what the caller may read of the case) the entries that matter most of
    its lists that grow with the case, each within its cap and all within what the rest of the
    answer leaves of ``CASE_VIEW_BYTES``, in their order, with ``*_truncated`` and ``*_total``.
    The current cycle's first: the referrals still running, then the others, the latest first;
    the services still scheduled, the soonest first, then the others, the latest first; then,
    in what is left, the earlier cycles' plans, the latest first."""
    referrals, services, plans = (
        list(view.referrals),
        list(view.services),
        list(view.previous_plans),
    )
    del view.referrals[:], view.services[:], view.previous_plans[:]
    view.referrals_total, view.services_total = len(referrals), len(services)
    view.previous_plans_total = len(plans)
    # At their largest while the rest of the answer is measured.
    view.referrals_truncated = view.services_truncated = view.previous_plans_truncated = True
    view.referrals_truncated = _fill(
        view, view.referrals, referrals, VIEW_REFERRALS, _referral_rank
    )
    view.services_truncated = _fill(view, view.services, services, VIEW_SERVICES, _service_rank)
    view.previous_plans_truncated = _fill(
        view, view.previous_plans, plans, VIEW_PREVIOUS_PLANS, _latest_first
    )


E = TypeVar("E", bound=Message)


def _fill(
    view: planning_pb2.GetCaseViewResponse,
    listed: MutableSequence[E],
    entries: list[E],
    cap: Cap,
    rank: Callable[[int, E], tuple[float | int | bool, ...]],
) -> bool:
    """Put in ``listed`` (a list of ``view``) the best ranked of ``entries`` that fit ``cap``
    and what the rest of ``view`` leaves of ``CASE_VIEW_BYTES``; whether any was left out."""
    room = CASE_VIEW_BYTES - view.ByteSize()
    listed.extend(entries)
    truncated, _ = cut(listed, Cap(cap.listed, max(0, min(cap.size, room))), rank)
    return truncated


def _referral_rank(index: int, referral: planning_pb2.ReferralView) -> tuple[bool, int]:
    return referral.status not in OPEN_REFERRAL_STATUSES, -index


def _service_rank(_: int, service: planning_pb2.ServiceView) -> tuple[int, float]:
    starts = datetime.fromisoformat(service.starts_at).timestamp() if service.starts_at else 0.0
    return (0, starts) if service.status == "scheduled" else (1, -starts)


def _latest_first(index: int, _: Message) -> tuple[int]:
    return (-index,)


def case_summary(document: Document, *, special: bool) -> planning_pb2.CaseSummary:
    """The case's summary; ``special``: whether the reader may see sensitive values, without
    which its counts leave out what the case's view withholds (``scheduled_and_running``)."""
    scheduled, running = scheduled_and_running(document, special=special)
    return planning_pb2.CaseSummary(
        case_id=document["case_id"],
        client_id=document["client_id"] or "",
        status=document["status"],
        stage=stage(document, special=special),
        worker_id=document["worker_id"] or "",
        needs=document["needs"],
        next_follow_up_due=document["next_follow_up_due"] or "",
        scheduled_services=scheduled,
        open_referrals=running,
    )


def _needs(document: Document) -> list[planning_pb2.Need]:
    urgency = {need["category"]: need["urgency"] for need in document["assessed_needs"]}
    presented = set(document["presented_needs"])
    return [
        planning_pb2.Need(
            category=category,
            urgency=urgency.get(category, ""),
            presented=category in presented,
            assessed=category in urgency,
        )
        for category in document["needs"]
    ]


def _plan(plan: Document, special: bool) -> planning_pb2.PlanView:
    version, agreed_version, agreement_status = plan_versions(plan, special=special)
    last_evaluated_on, adjustment_needed = evaluation_shown(plan, special=special)
    return planning_pb2.PlanView(
        plan_id=plan["plan_id"],
        version=version,
        agreed_version=agreed_version,
        agreement_status=agreement_status,
        goals=[
            planning_pb2.GoalView(
                goal=goal_message(entry["goal"]),
                status=entry["status"],
                latest_rating=entry["latest_rating"] or "",
            )
            for entry in plan["goals"]
        ],
        last_evaluated_on=last_evaluated_on or "",
        adjustment_needed=adjustment_needed,
    )


def goal_message(goal: dict[str, Any]) -> planning_pb2.Goal:
    """A goal as the catalog dumps it to JSON, as a message."""
    return planning_pb2.Goal(
        goal_id=goal["goal_id"],
        statement=goal["statement"],
        term=goal["term"],
        need_category=goal["need_category"],
        objectives=goal["objectives"],
        tasks=[
            planning_pb2.Task(
                task_id=task["task_id"],
                description=task["description"],
                owner=planning_pb2.TaskOwner(
                    kind=task["owner"]["kind"], owner_id=task["owner"]["owner_id"] or ""
                ),
                target_date=task["target_date"],
            )
            for task in goal["tasks"]
        ],
    )


def _service(service: Document) -> planning_pb2.ServiceView:
    return planning_pb2.ServiceView(**{key: service[key] or "" for key in _SERVICE_FIELDS})


def _referral(referral: Document) -> planning_pb2.ReferralView:
    return planning_pb2.ReferralView(**{key: referral[key] for key in _REFERRAL_FIELDS})


# The view's fields only: an entry also keeps the sequences that order it (case_document).
_SERVICE_FIELDS = tuple(planning_pb2.ServiceView.DESCRIPTOR.fields_by_name)
_REFERRAL_FIELDS = tuple(planning_pb2.ReferralView.DESCRIPTOR.fields_by_name)
