"""Between the wire (casetrail.coordination.v1) and the domain: requests become validated
commands, domain values become messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, TypeVar

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.grpc_platform.answer_caps import Cap, chosen, cut
from events.catalog.assignment import WorkerCredential
from events.catalog.scheduling import ServiceLocation
from events.catalog.values import Money, Provider
from events.envelope import RecordedEvent
from services.coordination.app.queries import CaseCoordination
from services.coordination.domain.agency import BudgetLine, Program, Worker
from services.coordination.domain.budget import BudgetLineState
from services.coordination.domain.case import RUNNING_REFERRAL_STATUSES
from services.coordination.domain.commands import Command
from services.coordination.domain.eligibility import describe_rules
from services.coordination.domain.schedule import Service, ServiceStatus
from services.coordination.domain.validation import validated

C = TypeVar("C", bound=Command)


def command(model: type[C], request: Message) -> C:
    """The command ``model`` from the request's fields (all but ``context``).

    Empty strings mean "not given" in proto3, so they are left out: a required field then reads
    "Field required" and an optional one takes its default. Zeros and empty lists are kept, so
    the rules about them (above zero, at least one) speak for themselves.
    """
    data = MessageToDict(
        request, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    data.pop("context", None)
    return validated(model, _without_empty_strings(data))


def result(case_id: str, recorded: Sequence[RecordedEvent]) -> common_pb2.CommandResult:
    return common_pb2.CommandResult(
        case_id=case_id,
        version=recorded[-1].sequence if recorded else 0,
        event_ids=[str(event.event_id) for event in recorded],
    )


def money(value: Money | None) -> pb.Money | None:
    if value is None:
        return None
    return pb.Money(amount_minor_units=value.amount_minor_units, currency=value.currency)


def minor_units(amount: int, currency: str) -> pb.Money:
    return pb.Money(amount_minor_units=amount, currency=currency)


def provider(value: Provider) -> pb.Provider:
    return pb.Provider(provider_id=value.provider_id, name=value.name)


def location(value: ServiceLocation) -> pb.ServiceLocation:
    return pb.ServiceLocation(kind=value.kind.value, address=value.address or "")


def credential(value: WorkerCredential) -> pb.Credential:
    return pb.Credential(
        kind=value.kind.value,
        name=value.name,
        issued_by=value.issued_by or "",
        valid_until=day(value.valid_until),
    )


def worker(value: Worker, caseload: int) -> pb.Worker:
    return pb.Worker(
        worker_id=value.worker_id,
        name=value.name,
        role=value.role.value,
        credentials=[credential(c) for c in value.credentials],
        caseload=caseload,
        caseload_capacity=value.caseload_capacity,
    )


def service(value: Service) -> pb.ScheduledService:
    return pb.ScheduledService(
        service_id=value.service_id,
        case_id=value.case_id,
        kind=value.kind.value,
        provider=provider(value.provider),
        starts_at=timestamp(value.starts_at),
        ends_at=timestamp(value.ends_at),
        location=location(value.location),
        status=value.status.value,
        referral_id=value.referral_id or "",
        goal_id=value.goal_id or "",
    )


def timestamp(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


def day(value: date | None) -> str:
    return "" if value is None else value.isoformat()


def _without_empty_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_empty_strings(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_without_empty_strings(item) for item in value]
    return value


def program(value: Program) -> pb.Program:
    return pb.Program(program_id=value.program_id, name=value.name, rules=describe_rules(value))


RESERVATIONS_LISTED = 1000
"""Reservations a budget line's answer lists at most, the latest: about 115 bytes each, so a
line funding an agency's year (tens of thousands) would outgrow gRPC's 4 MB answer."""


SCHEDULE_LISTED = 1000
"""Services a client's schedule lists at most: about 200 bytes each, so a client served daily
for years (``include_past``) would outgrow gRPC's 4 MB answer."""


def cut_schedule(
    parts: Sequence[pb.GetClientScheduleResponse], limit: int = SCHEDULE_LISTED
) -> bool:
    """Keep in ``parts`` (each case's part of a client's schedule) the ``limit`` services that
    matter most, within ``CASE_SERVICES``' bytes: the ones still scheduled, the soonest first,
    then the cancelled and delivered, the latest first. Whether any was left out."""
    services = [service for part in parts for service in part.services]
    # In bytes too: a count alone let 1,000 services of 4-byte characters take 4.4 MB.
    cap = Cap(limit, CASE_SERVICES.size)
    chosen_services = chosen(services, cap, lambda _, service: _schedule_rank(service))
    if len(chosen_services) == len(services):
        return False
    kept = {(services[i].case_id, services[i].service_id) for i in chosen_services}
    for part in parts:
        listed = [s for s in part.services if (s.case_id, s.service_id) in kept]
        del part.services[:]
        part.services.extend(listed)
    return True


def _schedule_rank(service: pb.ScheduledService) -> tuple[int, int, int]:
    starts = (service.starts_at.seconds, service.starts_at.nanos)
    if service.status == ServiceStatus.SCHEDULED.value:
        return (0, *starts)
    return (1, -starts[0], -starts[1])


CASE_SERVICES = Cap(SCHEDULE_LISTED, 1536 * 1024)
CASE_REFERRALS = Cap(100, 256 * 1024)
CASE_ELIGIBILITY = Cap(100, 384 * 1024)
CASE_CLAIMS = Cap(100, 768 * 1024)
"""What a case's coordination answer lists at most of each list that grows with the case. Each
bounded in count and in bytes: an entry's texts are bounded in characters (500), which are up to
4 bytes each, so a count alone would not keep the answer under gRPC's 4 MiB, past which it never
reaches the caller (the read recorded all the same). At most: a service about 1.4 KB (4.4 KB
with 4-byte characters), a referral 1.2 KB (4.2 KB), a decision 2.6 KB (10.1 KB), a claim 7.3 KB
(100 service ids; 8.8 KB). Together at most 2.9 MiB."""


def cut_case_coordination(answer: pb.GetCaseCoordinationResponse) -> None:
    """Keep in ``answer`` (what the caller may read of the case) the entries of each growing
    list that matter most, within its cap, in their order; set each list's ``*_truncated`` and
    ``*_total``. Services as ``cut_schedule`` chooses them, referrals still running and claims
    not yet decided before the others, each programme's latest decision before earlier ones,
    then the latest first."""
    answer.services_truncated, answer.services_total = cut(
        answer.services, CASE_SERVICES, lambda _, service: _schedule_rank(service)
    )
    running = {status.value for status in RUNNING_REFERRAL_STATUSES}
    answer.referrals_truncated, answer.referrals_total = cut(
        answer.referrals,
        CASE_REFERRALS,
        lambda index, referral: (referral.status not in running, -index),
    )
    latest = {decision.program_id: index for index, decision in enumerate(answer.eligibility)}
    answer.eligibility_truncated, answer.eligibility_total = cut(
        answer.eligibility,
        CASE_ELIGIBILITY,
        lambda index, decision: (latest[decision.program_id] != index, -index),
    )
    answer.claims_truncated, answer.claims_total = cut(
        answer.claims, CASE_CLAIMS, lambda index, claim: (claim.status != "filed", -index)
    )


def budget_line(line: BudgetLine, state: BudgetLineState) -> pb.GetBudgetLineResponse:
    currency = line.amount.currency
    reservations = list(state.reservations.values())
    listed = reservations[-RESERVATIONS_LISTED:]
    return pb.GetBudgetLineResponse(
        budget_line=line.budget_line,
        name=line.name,
        amount=money(line.amount),
        reserved=minor_units(state.committed, currency),
        available=minor_units(line.amount.amount_minor_units - state.committed, currency),
        funds_service_kinds=[kind.value for kind in line.funds_service_kinds],
        reservations=[
            pb.Reservation(
                reservation_id=r.reservation_id,
                case_id=r.case_id,
                service_id=r.service_id or "",
                amount=minor_units(r.remaining, currency),
            )
            for r in listed
        ],
        truncated=len(listed) < state.reservations_total,
        reservations_total=state.reservations_total,
    )


def case_coordination(view: CaseCoordination) -> pb.GetCaseCoordinationResponse:
    state = view.state
    return pb.GetCaseCoordinationResponse(
        case_id=view.facts.case_id,
        client_id=view.facts.client_id,
        needs=[need.value for need in view.facts.needs],
        closed=view.facts.closed,
        worker_id=state.worker_id or "",
        worker_role="" if state.worker_role is None else state.worker_role.value,
        referrals=[
            pb.Referral(
                referral_id=r.referral_id,
                provider=provider(r.provider),
                need_category=r.need_category.value,
                service=r.service,
                urgency=r.urgency,
                status=r.status.value,
            )
            for r in state.referrals.values()
        ],
        services=[service(s) for s in view.services],
        eligibility=[
            pb.EligibilityDecision(
                program_id=d.program_id,
                program_name=d.program_name,
                eligible=d.eligible,
                reasons=d.reasons,
                valid_until=day(d.valid_until),
            )
            for d in state.eligibility
        ],
        claims=[
            pb.Claim(
                claim_id=c.claim_id,
                insurer=provider(c.insurer),
                amount_claimed=money(c.amount_claimed),
                service_ids=c.service_ids,
                status=c.status,
                amount_approved=money(c.amount_approved),
            )
            for c in state.claims.values()
        ],
        version=state.version,
    )
