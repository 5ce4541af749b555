"""From command outcomes and read-model documents to planning's gRPC responses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.grpc_platform.answer_caps import Cap, cut
from casetrail_platform.projections.port import Document
from events.envelope import RecordedEvent
from services.planning.adapters.case_document import (
    OPEN_REFERRAL_STATUSES,
    current,
    previous_plans,
    scheduled_and_running,
)


def command_result(case_id: str, recorded: list[RecordedEvent]) -> common_pb2.CommandResult:
    return common_pb2.CommandResult(
        case_id=case_id,
        version=recorded[-1].sequence if recorded else 0,
        event_ids=[str(event.event_id) for event in recorded],
    )


def case_view(document: Document) -> planning_pb2.GetCaseViewResponse:
    view = planning_pb2.GetCaseViewResponse(
        case_id=document["case_id"],
        client_id=document["client_id"] or "",
        status=document["status"],
        stage=document["stage"],
        needs=_needs(document),
        services=[_service(service) for service in document["services"]],
        referrals=[_referral(referral) for referral in document["referrals"]],
        next_follow_up_due=document["next_follow_up_due"] or "",
        last_contact_on=document["last_contact_on"] or "",
        contacts_logged=document["contacts_logged"],
        closure_reason=document["closure_reason"] or "",
    )
    _list_previous_plans(view, previous_plans(document))
    if document["worker_id"] is not None:
        view.worker.CopyFrom(
            planning_pb2.AssignedWorker(
                worker_id=document["worker_id"], worker_role=document["worker_role"]
            )
        )
    if (plan := current(document, "plan")) is not None:
        view.plan.CopyFrom(_plan(plan))
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


PREVIOUS_PLANS_BYTES = 2 * 1024 * 1024
"""How much of a case view its earlier cycles' plans may take: a plan holds up to
``MAX_PLAN_GOALS_BYTES`` of goals, and a case reopened again and again keeps every one, so
listed whole they would take the answer past gRPC's 4 MiB, which never reaches the caller."""


def _list_previous_plans(view: planning_pb2.GetCaseViewResponse, plans: list[Document]) -> None:
    """The latest of ``plans`` that fit in ``PREVIOUS_PLANS_BYTES``, oldest first, and whether
    that is all of them."""
    listed: list[planning_pb2.PlanView] = []
    size = 0
    for plan in reversed(plans):
        message = _plan(plan)
        size += message.ByteSize()
        if size > PREVIOUS_PLANS_BYTES:
            break
        listed.append(message)
    view.previous_plans.extend(reversed(listed))
    view.previous_plans_total = len(plans)
    view.previous_plans_truncated = len(listed) < len(plans)


VIEW_SERVICES = Cap(1000, 1536 * 1024)
VIEW_REFERRALS = Cap(100, 256 * 1024)
"""What a case view lists at most of its services and referrals, which grow with the case (a
service about 1.2 KB at most, 2.6 KB with four-byte characters; a referral 1.1 KB, 2.9 KB)."""


def cut_case_view(view: planning_pb2.GetCaseViewResponse) -> None:
    """Keep in ``view`` (what the caller may read of the case) the services and referrals that
    matter most, within their caps, in their order, with ``*_truncated`` and ``*_total``: the
    services still scheduled, the soonest first, then the others, the latest first; the
    referrals still running, then the others, the latest first."""
    view.services_truncated, view.services_total = cut(
        view.services, VIEW_SERVICES, lambda _, service: _service_rank(service)
    )
    view.referrals_truncated, view.referrals_total = cut(
        view.referrals,
        VIEW_REFERRALS,
        lambda index, referral: (referral.status not in OPEN_REFERRAL_STATUSES, -index),
    )


def _service_rank(service: planning_pb2.ServiceView) -> tuple[int, float]:
    starts = datetime.fromisoformat(service.starts_at).timestamp() if service.starts_at else 0.0
    return (0, starts) if service.status == "scheduled" else (1, -starts)


def case_summary(document: Document, *, special: bool) -> planning_pb2.CaseSummary:
    """The case's summary; ``special``: whether the reader may see sensitive values, without
    which its counts leave out what the case's view withholds (``scheduled_and_running``)."""
    scheduled, running = scheduled_and_running(document, special=special)
    return planning_pb2.CaseSummary(
        case_id=document["case_id"],
        client_id=document["client_id"] or "",
        status=document["status"],
        stage=document["stage"],
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


def _plan(plan: Document) -> planning_pb2.PlanView:
    return planning_pb2.PlanView(
        plan_id=plan["plan_id"],
        version=plan["version"],
        agreed_version=plan["agreed_version"],
        agreement_status=plan["agreement_status"],
        goals=[
            planning_pb2.GoalView(
                goal=goal_message(entry["goal"]),
                status=entry["status"],
                latest_rating=entry["latest_rating"] or "",
            )
            for entry in plan["goals"]
        ],
        last_evaluated_on=plan["last_evaluated_on"] or "",
        adjustment_needed=plan["adjustment_needed"],
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
