"""Referrals and scheduling through the real gRPC server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import SensitiveCategory
from events.catalog.values import NeedCategory
from tests.unit.coordination.rpc import (
    COUNSELING_CENTRE,
    HOME_CARE_CO,
    PT_CLINIC,
    refer,
    refused,
    schedule_request,
)
from tests.unit.coordination.support import (
    CASE_MANAGER,
    OPENED,
    IntakeFeed,
    Refusal,
    carried_by,
    command_context,
    query_context,
    timestamp,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

TUESDAY_10 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
NEEDS = [NeedCategory.HOME_CARE, NeedCategory.PHYSICAL_THERAPY]


def answer(
    kind: str,
    referral_id: str,
    provider_id: str = "harbor-counseling",
    agency: str = "harbor-counseling",
    **fields: str,
) -> Any:
    """``agency``: the partner's token's; ``provider_id``: the one the request names."""
    request_type = {
        "accept": pb.AcceptReferralRequest,
        "decline": pb.DeclineReferralRequest,
        "complete": pb.CompleteReferralRequest,
    }[kind]
    return request_type(
        context=command_context(fields.pop("role", "partner_agency"), agency=agency),
        case_id="case-1",
        referral_id=referral_id,
        provider_id=provider_id,
        **fields,
    )


async def test_a_referral_is_answered_by_its_provider_only(stub: Stub, intake: IntakeFeed) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING])
    await intake.consent("case-1", "client-1")
    referral_id = (await refer(stub, "case-1", "counseling")).referral_id

    refusal = await refused(stub.AcceptReferral(answer("accept", referral_id, role="coordinator")))
    assert refusal.code is grpc.StatusCode.PERMISSION_DENIED
    refusal = await refused(stub.AcceptReferral(answer("accept", referral_id, "someone-else")))
    assert refusal.rule == "REFERRAL_PROVIDER_MISMATCH"
    assert refusal.metadata["referral_provider_id"] == "harbor-counseling"
    # Another partner naming the right provider in its request is still not that provider:
    # who acts comes from the token, never from a request field.
    impostor = answer("accept", referral_id, agency="someone-else")
    refusal = await refused(stub.AcceptReferral(impostor))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_THE_PROVIDER")
    # Nor does another partner naming itself learn whom the client was referred to: it sees
    # only its own referrals.
    other = PT_CLINIC.provider_id
    refusal = await refused(stub.AcceptReferral(answer("accept", referral_id, other, other)))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_THE_PROVIDER")
    assert "referral_provider_id" not in refusal.metadata
    assert "harbor" not in refusal.message
    refusal = await refused(stub.CompleteReferral(answer("complete", referral_id, outcome="ok")))
    assert refusal.rule == "REFERRAL_NOT_ACCEPTED"

    await stub.AcceptReferral(answer("accept", referral_id, expected_start_date="2026-03-09"))
    refusal = await refused(stub.DeclineReferral(answer("decline", referral_id, reason="full")))
    assert (refusal.rule, refusal.metadata["status"]) == ("REFERRAL_NOT_PENDING", "accepted")
    await stub.CompleteReferral(answer("complete", referral_id, outcome="coping well"))

    view = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(context=query_context(), case_id="case-1")
    )
    assert [(r.referral_id, r.status) for r in view.referrals] == [(referral_id, "completed")]
    # A referral that does not exist is not addressed to it either: refused alike.
    refusal = await refused(stub.AcceptReferral(answer("accept", "no-such-referral")))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_THE_PROVIDER")


async def test_a_partner_learns_no_case_referral_or_service_it_was_not_sent(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Another agency probing ids gets one answer for another provider's referral or service, an
    # id that names none on a real case, and a case that does not exist; and a backdated
    # moment tells it nothing of when the case opened.
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING, *NEEDS])
    await carried_by(store, "case-1")
    await intake.consent("case-1", "client-1")
    referral_id = (await refer(stub, "case-1", "counseling")).referral_id
    service_id = (
        await stub.ScheduleService(
            schedule_request("case-1", "home_care", TUESDAY_10, provider=HOME_CARE_CO)
        )
    ).service_id
    before = await store.read_all()
    clinic = PT_CLINIC.provider_id
    long_ago = OPENED - timedelta(days=30)

    def partner(at: datetime = TUESDAY_10) -> Any:
        return command_context("partner_agency", agency=clinic, at=at)

    def asked(case_id: str, referral: str, service: str, at: datetime) -> list[Any]:
        return [
            stub.AcceptReferral(
                pb.AcceptReferralRequest(
                    context=partner(at), case_id=case_id, referral_id=referral, provider_id=clinic
                )
            ),
            stub.DeclineReferral(
                pb.DeclineReferralRequest(
                    context=partner(at),
                    case_id=case_id,
                    referral_id=referral,
                    provider_id=clinic,
                    reason="full",
                )
            ),
            stub.CancelService(
                pb.CancelServiceRequest(
                    context=partner(at),
                    case_id=case_id,
                    service_id=service,
                    cancelled_by="provider",
                    reason="no one free",
                )
            ),
            stub.RecordServiceDelivered(
                pb.RecordServiceDeliveredRequest(
                    context=partner(at),
                    case_id=case_id,
                    service_id=service,
                    starts_at=timestamp(TUESDAY_10),
                    ends_at=timestamp(TUESDAY_10 + timedelta(hours=1)),
                )
            ),
        ]

    def seen(refusal: Refusal, referral: str, service: str) -> tuple[Any, ...]:
        # The ids asked about are the caller's own words: compared as placeholders.
        text = refusal.message.replace(referral, "R").replace(service, "S")
        details = [str(d).replace(referral, "R").replace(service, "S") for d in refusal.details]
        return (refusal.code, text, details)

    answers: dict[str, list[tuple[Any, ...]]] = {}
    for probe, (case_id, referral, service, at) in {
        "another's": ("case-1", referral_id, service_id, TUESDAY_10),
        "backdated": ("case-1", referral_id, service_id, long_ago),
        "no such id": ("case-1", "no-such-referral", "no-such-service", TUESDAY_10),
        "no such case": ("case-nope", "no-such-referral", "no-such-service", TUESDAY_10),
    }.items():
        answers[probe] = [
            seen(await refused(call), referral, service)
            for call in asked(case_id, referral, service, at)
        ]
    first = answers["another's"]
    assert {code for code, _, _ in first} == {grpc.StatusCode.PERMISSION_DENIED}
    for probe, got in answers.items():
        assert got == first, probe
    assert await store.read_all() == before


async def test_services_clash_across_all_the_clients_cases(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", NEEDS)
    await intake.open_case("case-2", "client-1", [NeedCategory.COUNSELING])
    await intake.open_case("case-3", "client-2", [NeedCategory.COUNSELING])
    await carried_by(store, "case-1")
    await carried_by(store, "case-2")
    await carried_by(store, "case-3")
    therapy = await stub.ScheduleService(schedule_request("case-1", "physical_therapy", TUESDAY_10))
    # The client's id is client data: a command's answer, which records no read, leaves it out.
    assert therapy.client_id == ""

    half_past = TUESDAY_10 + timedelta(minutes=30)
    counseling = schedule_request("case-2", "counseling", half_past, provider=COUNSELING_CENTRE)
    refusal = await refused(stub.ScheduleService(counseling))
    assert refusal.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.rule == "SCHEDULE_CONFLICT"
    # Of another case the access policy does not let the caller read (its facts know of no
    # worker on case-1): not even the slot, which their schedule does not show them either.
    assert refusal.metadata == {"subject": "case/case-2"}
    assert "one you are not shown" in refusal.message
    # Of another case they may read: the slot it holds, enough to choose another time, and
    # nothing that names that case, its service or its kind (a refusal is no read recorded).
    await intake.policy_told_assigned("case-1", CASE_MANAGER, "team-east")
    refusal = await refused(stub.ScheduleService(counseling))
    assert refusal.metadata == {
        "subject": "case/case-2",
        "conflicting_starts_at": "2026-03-03T10:00:00+00:00",
        "conflicting_ends_at": "2026-03-03T11:00:00+00:00",
    }
    for named in (therapy.service_id, "case-1", "physical_therapy"):
        assert named not in refusal.message
    assert "another of the client's services, from 2026-03-03T10:00:00+00:00" in refusal.message
    # Of the same case, the appointment is named.
    refusal = await refused(
        stub.ScheduleService(schedule_request("case-1", "home_care", half_past))
    )
    assert refusal.metadata == {
        "subject": f"service/{therapy.service_id}",
        "conflicting_service_id": therapy.service_id,
        "conflicting_case_id": "case-1",
        "conflicting_kind": "physical_therapy",
        "conflicting_starts_at": "2026-03-03T10:00:00+00:00",
        "conflicting_ends_at": "2026-03-03T11:00:00+00:00",
    }
    assert f"overlaps physical_therapy service {therapy.service_id}" in refusal.message

    # Another client's counseling at the same time is no concern of this client's.
    await stub.ScheduleService(
        schedule_request("case-3", "counseling", half_past, provider=COUNSELING_CENTRE)
    )
    # Right after therapy is fine: slots are half-open.
    after = await stub.ScheduleService(
        schedule_request("case-2", "counseling", TUESDAY_10 + timedelta(hours=1))
    )
    schedule = await stub.GetClientSchedule(
        pb.GetClientScheduleRequest(context=query_context(), client_id="client-1")
    )
    assert [s.service_id for s in schedule.services] == [therapy.service_id, after.service_id]


async def test_moving_cancelling_and_delivering_services(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", NEEDS)
    await carried_by(store, "case-1")
    therapy = await stub.ScheduleService(schedule_request("case-1", "physical_therapy", TUESDAY_10))
    care = await stub.ScheduleService(
        schedule_request(
            "case-1",
            "home_care",
            TUESDAY_10 + timedelta(hours=2),
            provider=HOME_CARE_CO,
            location=pb.ServiceLocation(kind="client_home"),
        )
    )

    def move(service_id: str, start: datetime) -> pb.RescheduleServiceRequest:
        return pb.RescheduleServiceRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            service_id=service_id,
            starts_at=timestamp(start),
            ends_at=timestamp(start + timedelta(hours=1)),
            reason="therapist unavailable",
        )

    refusal = await refused(stub.RescheduleService(move(care.service_id, TUESDAY_10)))
    assert refusal.metadata["conflicting_service_id"] == therapy.service_id
    # A service may move within its own slot.
    await stub.RescheduleService(move(therapy.service_id, TUESDAY_10 + timedelta(minutes=15)))
    await stub.CancelService(
        pb.CancelServiceRequest(
            context=command_context("partner_agency", agency=PT_CLINIC.provider_id),
            case_id="case-1",
            service_id=therapy.service_id,
            cancelled_by="provider",
            reason="therapist ill",
        )
    )
    await stub.RescheduleService(move(care.service_id, TUESDAY_10))
    refusal = await refused(stub.RescheduleService(move(therapy.service_id, TUESDAY_10)))
    assert (refusal.rule, refusal.metadata["status"]) == ("SERVICE_NOT_SCHEDULED", "cancelled")
    await stub.RecordServiceDelivered(
        pb.RecordServiceDeliveredRequest(
            context=command_context("partner_agency", agency=HOME_CARE_CO.provider_id),
            case_id="case-1",
            service_id=care.service_id,
            starts_at=timestamp(TUESDAY_10),
            ends_at=timestamp(TUESDAY_10 + timedelta(minutes=50)),
        )
    )
    # The clinic provides no home care: it learns nothing of that service, not its status.
    refusal = await refused(
        stub.CancelService(
            pb.CancelServiceRequest(
                context=command_context("partner_agency", agency=PT_CLINIC.provider_id),
                case_id="case-1",
                service_id=care.service_id,
                cancelled_by="provider",
                reason="not ours",
            )
        )
    )
    assert (refusal.rule, "status" in refusal.metadata) == ("NOT_THE_PROVIDER", False)
    assert "delivered" not in refusal.message
    upcoming = await stub.GetClientSchedule(
        pb.GetClientScheduleRequest(context=query_context(), client_id="client-1")
    )
    assert list(upcoming.services) == []
    past = await stub.GetClientSchedule(
        pb.GetClientScheduleRequest(
            context=query_context(), client_id="client-1", include_past=True
        )
    )
    assert [(s.kind, s.status) for s in past.services] == [
        ("home_care", "delivered"),
        ("physical_therapy", "cancelled"),
    ]


async def test_a_service_of_another_case_is_not_found(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", NEEDS)
    await intake.open_case("case-2", "client-1", NEEDS)
    await carried_by(store, "case-1")
    therapy = await stub.ScheduleService(schedule_request("case-1", "physical_therapy", TUESDAY_10))
    refusal = await refused(
        stub.CancelService(
            pb.CancelServiceRequest(
                context=command_context("coordinator"),
                case_id="case-2",
                service_id=therapy.service_id,
                cancelled_by="agency",
                reason="wrong case",
            )
        )
    )
    assert refusal.code is grpc.StatusCode.NOT_FOUND


async def test_a_service_from_a_declined_referral_is_refused(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING])
    await carried_by(store, "case-1")
    await intake.consent("case-1", "client-1")
    referral_id = (await refer(stub, "case-1", "counseling")).referral_id
    await stub.DeclineReferral(answer("decline", referral_id, reason="waiting list full"))
    refusal = await refused(
        stub.ScheduleService(
            schedule_request("case-1", "counseling", TUESDAY_10, referral_id=referral_id)
        )
    )
    assert refusal.rule == "REFERRAL_NOT_USABLE"


async def test_a_slot_must_end_after_it_starts(stub: Stub, intake: IntakeFeed) -> None:
    await intake.open_case("case-1", "client-1", NEEDS)
    request = schedule_request("case-1", "physical_therapy", TUESDAY_10, hours=-1)
    request.kind = "aromatherapy"
    request.ClearField("location")
    refusal = await refused(stub.ScheduleService(request))
    assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(refusal.fields) == ["ends_at", "kind", "location"]


async def test_scheduling_needs_a_worker_role(stub: Stub, intake: IntakeFeed) -> None:
    await intake.open_case("case-1", "client-1", NEEDS)
    refusal = await refused(
        stub.ScheduleService(
            schedule_request("case-1", "physical_therapy", TUESDAY_10, role="client")
        )
    )
    assert refusal.code is grpc.StatusCode.PERMISSION_DENIED


async def test_no_service_starts_before_the_case_was_opened(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Backdated, a service would be care the case never gave, yet delivered and claimed.
    await intake.open_case("case-1", "client-1", NEEDS)
    await carried_by(store, "case-1")
    before = OPENED - timedelta(days=400)
    refusal = await refused(stub.ScheduleService(schedule_request("case-1", "home_care", before)))
    assert (refusal.code, refusal.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["starts_at"])
    care = await stub.ScheduleService(
        schedule_request("case-1", "home_care", TUESDAY_10, provider=HOME_CARE_CO)
    )
    written = await store.read_stream("schedule-client-1")

    def slot(kind: type[Any], **fields: Any) -> Any:
        return kind(
            context=command_context("partner_agency", agency=HOME_CARE_CO.provider_id),
            case_id="case-1",
            service_id=care.service_id,
            starts_at=timestamp(before),
            ends_at=timestamp(before + timedelta(hours=1)),
            **fields,
        )

    refusal = await refused(stub.RecordServiceDelivered(slot(pb.RecordServiceDeliveredRequest)))
    assert (refusal.code, refusal.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["starts_at"])
    moved = slot(pb.RescheduleServiceRequest, reason="earlier")
    moved.context.CopyFrom(command_context("coordinator"))
    refusal = await refused(stub.RescheduleService(moved))
    assert (refusal.code, refusal.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["starts_at"])
    assert await store.read_stream("schedule-client-1") == written


async def test_a_clash_never_names_a_sensitive_kind(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Not everyone on the case may see special data: addiction counseling tells of substance
    # use, and a refusal is no read the access policy decided and recorded.
    await intake.open_case("case-1", "client-1", [NeedCategory.SUBSTANCE_USE, *NEEDS])
    await carried_by(store, "case-1")
    # The case's worker, whom the policy shows the case's sensitive values.
    await intake.policy_told_assigned("case-1", CASE_MANAGER, "team-east")
    counseling = await stub.ScheduleService(
        schedule_request("case-1", "addiction_counseling", TUESDAY_10, provider=COUNSELING_CENTRE)
    )
    refusal = await refused(
        stub.ScheduleService(
            schedule_request("case-1", "home_care", TUESDAY_10, provider=HOME_CARE_CO)
        )
    )
    assert refusal.rule == "SCHEDULE_CONFLICT"
    # Told as another case's service is (the slot only): named, its kind would be in the
    # refusal's text, which reaches logs and proxies.
    assert refusal.metadata == {
        "subject": "case/case-1",
        "conflicting_starts_at": TUESDAY_10.isoformat(),
        "conflicting_ends_at": (TUESDAY_10 + timedelta(hours=1)).isoformat(),
    }
    assert counseling.service_id not in refusal.message
    assert "addiction" not in refusal.message
    assert "overlaps another of the client's services, from" in refusal.message


async def test_a_clash_tells_no_slot_of_a_service_withheld_from_the_caller(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # A coordinator reads every case of the agency without its special data: their schedule
    # lists no addiction counseling, so a slot told in a refusal where it lists nothing could
    # only be that. They learn that the time overlaps a service (the booking is refused), not
    # when that service is.
    await intake.open_case("case-1", "client-1", [NeedCategory.SUBSTANCE_USE, *NEEDS])
    await carried_by(store, "case-1")
    await intake.policy_told_assigned("case-1", CASE_MANAGER, "team-east")
    counseling = await stub.ScheduleService(
        schedule_request("case-1", "addiction_counseling", TUESDAY_10, provider=COUNSELING_CENTRE)
    )
    later = TUESDAY_10 + timedelta(hours=3)
    care = await stub.ScheduleService(
        schedule_request("case-1", "home_care", later, provider=HOME_CARE_CO)
    )
    schedule = await stub.GetClientSchedule(
        pb.GetClientScheduleRequest(context=query_context(), client_id="client-1")
    )
    assert [s.service_id for s in schedule.services] == [care.service_id]

    half_past = TUESDAY_10 + timedelta(minutes=30)
    starts_at, ends_at = timestamp(half_past), timestamp(half_past + timedelta(hours=1))
    as_coordinator = [
        stub.ScheduleService(
            schedule_request(
                "case-1", "physical_therapy", half_past, provider=PT_CLINIC, role="coordinator"
            )
        ),
        stub.RescheduleService(
            pb.RescheduleServiceRequest(
                context=command_context("coordinator"),
                case_id="case-1",
                service_id=care.service_id,
                reason="earlier",
                starts_at=starts_at,
                ends_at=ends_at,
            )
        ),
        # Recorded as given at a time the coordinator's schedule shows free.
        stub.RecordServiceDelivered(
            pb.RecordServiceDeliveredRequest(
                context=command_context("coordinator"),
                case_id="case-1",
                service_id=care.service_id,
                starts_at=starts_at,
                ends_at=ends_at,
            )
        ),
    ]
    for call in as_coordinator:
        refusal = await refused(call)
        assert (refusal.rule, refusal.metadata) == ("SCHEDULE_CONFLICT", {"subject": "case/case-1"})
        shown = [refusal.message, *map(str, refusal.details)]
        assert not [text for text in shown if TUESDAY_10.isoformat() in text], shown
        assert counseling.service_id not in refusal.message
        assert "overlaps another of the client's services, one you are not shown" in (
            refusal.message
        )
    # The case's worker, shown the service in their schedule, is told its slot.
    refusal = await refused(
        stub.ScheduleService(schedule_request("case-1", "physical_therapy", half_past))
    )
    assert refusal.metadata["conflicting_starts_at"] == TUESDAY_10.isoformat()


async def test_a_clash_with_a_shown_and_a_withheld_service_names_the_shown_one(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # A slot overlapping a service the coordinator's schedule shows and, earlier, one it
    # withholds: the refusal names the shown one. It named the earliest, as "one you are not
    # shown", telling of a withheld service between the slot's start and the shown one's.
    await intake.open_case("case-1", "client-1", [NeedCategory.SUBSTANCE_USE, *NEEDS])
    await carried_by(store, "case-1")
    await intake.policy_told_assigned("case-1", CASE_MANAGER, "team-east")
    await stub.ScheduleService(
        schedule_request("case-1", "addiction_counseling", TUESDAY_10, provider=COUNSELING_CENTRE)
    )
    eleven = TUESDAY_10 + timedelta(hours=1)
    care = await stub.ScheduleService(
        schedule_request("case-1", "home_care", eleven, provider=HOME_CARE_CO)
    )

    quarter_to = TUESDAY_10 + timedelta(minutes=45)
    refusal = await refused(
        stub.ScheduleService(
            schedule_request(
                "case-1", "physical_therapy", quarter_to, provider=PT_CLINIC, role="coordinator"
            )
        )
    )

    assert refusal.rule == "SCHEDULE_CONFLICT"
    assert refusal.metadata["conflicting_service_id"] == care.service_id
    assert refusal.metadata["conflicting_starts_at"] == eleven.isoformat()
    assert "not shown" not in refusal.message


async def test_a_clash_never_names_the_sensitive_kind_asked_either(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # The kind a command asks for is the case's special data too: a refusal's message travels
    # on into callers' logs and proxies, and names no sensitive value (README, "Access").
    await intake.open_case("case-1", "client-1", [NeedCategory.SUBSTANCE_USE, *NEEDS])
    await carried_by(store, "case-1")
    # Naming substance use: the addiction counselling booked from the referral discloses it.
    await intake.consent("case-1", "client-1", categories=[SensitiveCategory.SUBSTANCE_USE])
    referral_id = (await refer(stub, "case-1", "home_care", provider=COUNSELING_CENTRE)).referral_id
    await stub.ScheduleService(
        schedule_request("case-1", "home_care", TUESDAY_10, provider=HOME_CARE_CO)
    )
    later = TUESDAY_10 + timedelta(hours=3)
    counseling = await stub.ScheduleService(
        schedule_request(
            "case-1",
            "addiction_counseling",
            later,
            provider=COUNSELING_CENTRE,
            referral_id=referral_id,
        )
    )
    refusals = [
        await refused(
            stub.ScheduleService(
                schedule_request(
                    "case-1", "addiction_counseling", TUESDAY_10, provider=COUNSELING_CENTRE
                )
            )
        ),
        await refused(
            stub.RescheduleService(
                pb.RescheduleServiceRequest(
                    context=command_context("coordinator"),
                    case_id="case-1",
                    service_id=counseling.service_id,
                    starts_at=timestamp(TUESDAY_10),
                    ends_at=timestamp(TUESDAY_10 + timedelta(hours=1)),
                    reason="earlier",
                )
            )
        ),
        # The counseling centre records its delivery at the home care's hour.
        await refused(
            stub.RecordServiceDelivered(
                pb.RecordServiceDeliveredRequest(
                    context=command_context("partner_agency", agency=COUNSELING_CENTRE.provider_id),
                    case_id="case-1",
                    service_id=counseling.service_id,
                    starts_at=timestamp(TUESDAY_10),
                    ends_at=timestamp(TUESDAY_10 + timedelta(hours=1)),
                )
            )
        ),
    ]
    for refusal in refusals:
        assert refusal.rule == "SCHEDULE_CONFLICT"
        shown = [refusal.message, *map(str, refusal.details)]
        assert not [text for text in shown if "addiction" in text], shown
    # A kind that is no special data is still named, so the caller knows which it asked.
    plain = await refused(
        stub.ScheduleService(
            schedule_request("case-1", "physical_therapy", later, provider=COUNSELING_CENTRE)
        )
    )
    assert plain.message.startswith("SCHEDULE_CONFLICT: physical_therapy from ")


async def test_a_budget_refusal_never_names_the_sensitive_kind_of_the_service(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # As a clash: the service's kind is the case's special data, and the refusal's message and
    # details reach callers' logs and proxies (README, "Access").
    await intake.open_case("case-1", "client-1", [NeedCategory.SUBSTANCE_USE, *NEEDS])
    await carried_by(store, "case-1")

    def reserve(service_id: str) -> pb.ReserveBudgetRequest:
        return pb.ReserveBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="home-care-fy2026",
            amount=pb.Money(amount_minor_units=100, currency="USD"),
            service_id=service_id,
        )

    counseling = await stub.ScheduleService(
        schedule_request("case-1", "addiction_counseling", TUESDAY_10, provider=COUNSELING_CENTRE)
    )
    refusal = await refused(stub.ReserveBudget(reserve(counseling.service_id)))
    assert refusal.rule == "BUDGET_LINE_DOES_NOT_FUND_SERVICE"
    shown = [refusal.message, *map(str, refusal.details)]
    assert not [text for text in shown if "addiction" in text], shown
    assert refusal.message.endswith(f"pays only for home_care, not service {counseling.service_id}")
    # Nor is any other kind: naming it only when it is no special data ("not the service"
    # otherwise) told a caller not entitled to the kind which one it was.
    therapy = await stub.ScheduleService(
        schedule_request("case-1", "physical_therapy", TUESDAY_10 + timedelta(hours=3))
    )
    plain = await refused(stub.ReserveBudget(reserve(therapy.service_id)))
    assert plain.message.endswith(f"pays only for home_care, not service {therapy.service_id}")


async def test_a_delivered_service_keeps_its_slot(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Otherwise two services could be delivered, and claimed, for one hour of the client.
    await intake.open_case("case-1", "client-1", NEEDS)
    await carried_by(store, "case-1")
    care = await stub.ScheduleService(
        schedule_request("case-1", "home_care", TUESDAY_10, provider=HOME_CARE_CO)
    )
    later = TUESDAY_10 + timedelta(hours=3)
    therapy = await stub.ScheduleService(schedule_request("case-1", "physical_therapy", later))

    def delivered(
        service_id: str, agency: str, start: datetime
    ) -> pb.RecordServiceDeliveredRequest:
        return pb.RecordServiceDeliveredRequest(
            context=command_context("partner_agency", agency=agency),
            case_id="case-1",
            service_id=service_id,
            starts_at=timestamp(start),
            ends_at=timestamp(start + timedelta(hours=1)),
        )

    await stub.RecordServiceDelivered(
        delivered(care.service_id, HOME_CARE_CO.provider_id, TUESDAY_10)
    )
    written = await store.read_stream("schedule-client-1")
    clash = delivered(therapy.service_id, PT_CLINIC.provider_id, TUESDAY_10)
    refusal = await refused(stub.RecordServiceDelivered(clash))
    # The clinic sees only its own referrals' services: the other one is not named to it.
    assert (refusal.rule, refusal.metadata) == ("SCHEDULE_CONFLICT", {})
    assert care.service_id not in refusal.message
    assert "home_care" not in refusal.message
    clash.context.CopyFrom(command_context("case_manager"))
    refusal = await refused(stub.RecordServiceDelivered(clash))
    assert (refusal.rule, refusal.metadata["conflicting_service_id"]) == (
        "SCHEDULE_CONFLICT",
        care.service_id,
    )
    half_past = TUESDAY_10 + timedelta(minutes=30)
    refusal = await refused(
        stub.ScheduleService(schedule_request("case-1", "counseling", half_past))
    )
    assert (refusal.rule, refusal.metadata["conflicting_service_id"]) == (
        "SCHEDULE_CONFLICT",
        care.service_id,
    )
    assert await store.read_stream("schedule-client-1") == written
    # Where it was booked, or anywhere free, it is recorded.
    await stub.RecordServiceDelivered(delivered(therapy.service_id, PT_CLINIC.provider_id, later))


async def test_a_service_from_a_referral_is_provided_by_the_referral_s_agency(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Harbor reads the services of its referral (and the client consented to Harbor); the
    # physiotherapists would record and cancel a service they were never referred.
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING])
    await carried_by(store, "case-1")
    await intake.consent("case-1", "client-1")
    referral_id = (await refer(stub, "case-1", "counseling")).referral_id
    refusal = await refused(
        stub.ScheduleService(
            schedule_request(
                "case-1", "counseling", TUESDAY_10, provider=PT_CLINIC, referral_id=referral_id
            )
        )
    )
    assert (refusal.code, refusal.rule) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REFERRAL_PROVIDER_MISMATCH",
    )
    assert refusal.metadata["referral_provider_id"] == COUNSELING_CENTRE.provider_id
    assert await store.read_stream("schedule-client-1") == []
    await stub.ScheduleService(
        schedule_request(
            "case-1", "counseling", TUESDAY_10, provider=COUNSELING_CENTRE, referral_id=referral_id
        )
    )


async def test_a_partner_never_cancels_in_the_agency_s_name(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", NEEDS)
    await carried_by(store, "case-1")
    therapy = await stub.ScheduleService(schedule_request("case-1", "physical_therapy", TUESDAY_10))
    written = await store.read_stream("schedule-client-1")

    def cancel(cancelled_by: str) -> pb.CancelServiceRequest:
        return pb.CancelServiceRequest(
            context=command_context("partner_agency", agency=PT_CLINIC.provider_id),
            case_id="case-1",
            service_id=therapy.service_id,
            cancelled_by=cancelled_by,
            reason="no therapist that day",
        )

    refusal = await refused(stub.CancelService(cancel("agency")))
    assert (refusal.code, refusal.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["cancelled_by"])
    assert await store.read_stream("schedule-client-1") == written
    await stub.CancelService(cancel("client"))  # the client called the clinic
