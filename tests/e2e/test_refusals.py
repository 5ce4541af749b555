"""The rules, seen from an API client: each refusal has its status code and its details, and
writes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from cli.rpc import Person, command, eventually, not_known_yet, query, refused, timestamp
from cli.walk.story import (
    AUDITOR,
    CASE_MANAGER_ID,
    COORDINATOR,
    INTAKE_WORKER,
    RECEPTIONIST,
    SOCIAL_WORKER,
)
from tests.e2e.conftest import Casetrail
from tests.e2e.support import consent, new_case, next_week, schedule
from tests.support.cases import key, registration

pytestmark = pytest.mark.asyncio(loop_scope="package")

BAY_RECOVERY = Person("bay-recovery", "partner_agency", agency="bay-recovery")

SUPERVISOR = Person("helen.morris", "supervisor")
CASE_MANAGER = Person(CASE_MANAGER_ID, "case_manager")


async def test_a_role_that_may_not_act_is_permission_denied(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "home_care")
    stubs = casetrail.stubs
    refusals = [
        await refused(
            stubs.as_(RECEPTIONIST).intake.RecordInitialAssessment(
                intake_pb2.RecordInitialAssessmentRequest(
                    context=command(key()),
                    case_id=case.case_id,
                    factors=intake_pb2.AssessmentFactors(social="Lives alone"),
                    needs=[intake_pb2.AssessedNeed(category="home_care", urgency="soon")],
                )
            )
        ),
        await refused(
            stubs.as_(CASE_MANAGER).coordination.AssignCase(
                co.AssignCaseRequest(
                    context=command(key()),
                    case_id=case.case_id,
                    worker_id=CASE_MANAGER_ID,
                )
            )
        ),
        await refused(
            stubs.as_(SOCIAL_WORKER).audit.GetTimeline(
                audit_pb2.GetTimelineRequest(context=query("direct_care"), case_id=case.case_id)
            )
        ),
    ]
    for refusal in refusals:
        assert refusal.code == grpc.StatusCode.PERMISSION_DENIED, refusal
        assert refusal.reason == "ROLE_NOT_ALLOWED"


SUNRISE = "sunrise-home-care"
"""A partner agency's id: its staff hold roles that name a job, not this agency's."""


def _foreign(role: str) -> Person:
    return Person(f"{role}.sunrise", role, agency=SUNRISE)


async def test_another_agencys_staff_may_not_act_on_this_agencys_records(
    casetrail: Casetrail,
) -> None:
    """A command is for the staff of the agency the services serve: another agency's supervisor
    may not erase a client or release a legal hold, its social worker may not record a consent
    naming itself, its coordinator may not assign a case; each refused NO_RELATIONSHIP before
    any field is looked at, and nothing is written."""
    case = await new_case(casetrail, "home_care")
    stubs = casetrail.stubs
    hold = await stubs.as_(SUPERVISOR).intake.PlaceRetentionHold(
        intake_pb2.PlaceRetentionHoldRequest(
            context=command(key()), client_id=case.client_id, legal_basis="litigation 2026-CV-113"
        )
    )
    forged = intake_pb2.GrantConsentRequest(
        context=command(key()),
        case_id=case.case_id,
        recipient=intake_pb2.ConsentRecipient(kind="agency", recipient_id=SUNRISE, name="Sunrise"),
        purpose="coordination",
        scope=["identity", "assessment", "referrals", "services"],
        categories=["substance_use", "mental_health"],
        expires_at=timestamp(datetime.now(UTC) + timedelta(days=365)),
        document_reference="forged",
    )
    read_case = intake_pb2.GetCaseRequest(
        context=query("confidentiality_review"), case_id=case.case_id
    )
    before = (await stubs.as_(AUDITOR).intake.GetCase(read_case)).record.version
    supervisor = stubs.as_(_foreign("supervisor"))
    refusals = {
        "erase": await refused(
            supervisor.intake.EraseClient(
                intake_pb2.EraseClientRequest(
                    context=command(key()), client_id=case.client_id, request_reference="x"
                )
            )
        ),
        "release hold": await refused(
            supervisor.intake.ReleaseRetentionHold(
                intake_pb2.ReleaseRetentionHoldRequest(
                    context=command(key()), client_id=case.client_id, hold_id=hold.hold_id
                )
            )
        ),
        "consent (supervisor)": await refused(supervisor.intake.GrantConsent(forged)),
        "consent (social worker)": await refused(
            stubs.as_(_foreign("social_worker")).intake.GrantConsent(forged)
        ),
        "register": await refused(
            stubs.as_(_foreign("receptionist")).intake.RegisterClient(registration())
        ),
        "open case": await refused(
            stubs.as_(_foreign("receptionist")).intake.OpenCase(
                intake_pb2.OpenCaseRequest(
                    context=command(key()),
                    client_id=case.client_id,
                    referral_source=intake_pb2.ReferralSource(kind="self"),
                    presenting_needs=[intake_pb2.PresentingNeed(category="home_care")],
                )
            )
        ),
        "assign": await refused(
            stubs.as_(_foreign("coordinator")).coordination.AssignCase(
                co.AssignCaseRequest(
                    context=command(key()), case_id=case.case_id, worker_id=CASE_MANAGER_ID
                )
            )
        ),
        "close": await refused(
            supervisor.planning.CloseCase(
                pl.CloseCaseRequest(
                    context=command(key()), case_id=case.case_id, reason="client_withdrew"
                )
            )
        ),
        # Even a request with bad fields: the caller learns nothing of it.
        "bad fields": await refused(
            supervisor.intake.EraseClient(intake_pb2.EraseClientRequest(context=command("")))
        ),
    }
    for what, refusal in refusals.items():
        assert (refusal.code, refusal.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NO_RELATIONSHIP",
        ), what
    # Nothing was written: the hold still stands, so the client is not erased either.
    still = await refused(
        stubs.as_(SUPERVISOR).intake.EraseClient(
            intake_pb2.EraseClientRequest(
                context=command(key()), client_id=case.client_id, request_reference="dpo-1"
            )
        )
    )
    assert (still.code, still.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RETENTION_HOLD")
    # Nor was a consent, an assessment or another opening recorded on the case.
    assert (await stubs.as_(AUDITOR).intake.GetCase(read_case)).record.version == before


async def test_bad_fields_are_invalid_argument_naming_each_field(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "physical_therapy")
    stubs = casetrail.stubs
    bad_client = registration()
    bad_client.name.given_names = ""
    bad_client.contact.email = "nowhere"
    refusal = await refused(stubs.as_(RECEPTIONIST).intake.RegisterClient(bad_client))
    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"name.given_names", "contact.email"} <= set(refusal.field_violations)
    # A malformed day is refused at the edge, before the service's own checks.
    bad_client = registration()
    bad_client.date_of_birth = "14/03/1950"
    refusal = await refused(stubs.as_(RECEPTIONIST).intake.RegisterClient(bad_client))
    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(refusal.field_violations) == {"date_of_birth"}

    backwards = schedule(case, "physical_therapy", next_week(10))
    backwards.ends_at.CopyFrom(timestamp(next_week(9)))
    backwards.kind = "massage"
    refusal = await refused(stubs.as_(COORDINATOR).coordination.ScheduleService(backwards))
    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"kind", "ends_at"} <= set(refusal.field_violations), refusal.field_violations

    refusal = await refused(
        stubs.as_(AUDITOR).audit.GetTimeline(
            audit_pb2.GetTimelineRequest(context=query("curiosity"), case_id=case.case_id)
        )
    )
    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "context.purpose" in refusal.field_violations


async def test_a_duplicate_client_is_already_exists(casetrail: Casetrail) -> None:
    first = await casetrail.stubs.as_(RECEPTIONIST).intake.RegisterClient(registration("Esposito"))
    again = registration("ESPOSITO")  # another identifier, same folded name and birth date
    refusal = await refused(casetrail.stubs.as_(RECEPTIONIST).intake.RegisterClient(again))
    assert refusal.code == grpc.StatusCode.ALREADY_EXISTS
    (duplicates,) = refusal.details(intake_pb2.PossibleDuplicates)
    assert first.client_id in [candidate.client_id for candidate in duplicates.candidates]
    resources = refusal.details(error_details_pb2.ResourceInfo)
    assert first.client_id in [resource.resource_name for resource in resources]


async def test_what_does_not_exist_is_not_found(casetrail: Casetrail) -> None:
    stubs = casetrail.stubs
    unknown = uuid.uuid4().hex
    refusals = [
        await refused(
            stubs.as_(INTAKE_WORKER).intake.GetCase(
                intake_pb2.GetCaseRequest(context=query("direct_care"), case_id=unknown)
            )
        ),
        await refused(
            stubs.as_(COORDINATOR).coordination.AssignCase(
                co.AssignCaseRequest(
                    context=command(key()), case_id=unknown, worker_id=CASE_MANAGER_ID
                )
            )
        ),
        await refused(
            stubs.as_(COORDINATOR).planning.GetCaseView(
                pl.GetCaseViewRequest(context=query("coordination"), case_id=unknown)
            )
        ),
        await refused(
            stubs.as_(AUDITOR).audit.GetTimeline(
                audit_pb2.GetTimelineRequest(
                    context=query("confidentiality_review"), case_id=unknown
                )
            )
        ),
    ]
    for refusal in refusals:
        assert refusal.code == grpc.StatusCode.NOT_FOUND, refusal
    case = await new_case(casetrail, "home_care")
    refusal = await refused(
        stubs.as_(COORDINATOR).coordination.AssignCase(
            co.AssignCaseRequest(context=command(key()), case_id=case.case_id, worker_id="nobody")
        )
    )
    assert refusal.code == grpc.StatusCode.NOT_FOUND
    (resource,) = refusal.details(error_details_pb2.ResourceInfo)
    assert resource.resource_name == "nobody"


async def test_a_retried_command_returns_the_first_result_and_writes_nothing(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "physical_therapy")
    request = schedule(case, "physical_therapy", next_week(9))
    first = await stubs.as_(COORDINATOR).coordination.ScheduleService(request)
    again = await stubs.as_(COORDINATOR).coordination.ScheduleService(request)
    assert again == first
    listed = await stubs.as_(COORDINATOR).coordination.GetClientSchedule(
        co.GetClientScheduleRequest(context=query("coordination"), client_id=case.client_id)
    )
    assert [service.service_id for service in listed.services] == [first.service_id]

    registering = registration()
    registered = await stubs.as_(RECEPTIONIST).intake.RegisterClient(registering)
    assert await stubs.as_(RECEPTIONIST).intake.RegisterClient(registering) == registered


async def test_an_idempotency_key_reused_for_another_request_is_refused(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "physical_therapy")
    first_request = schedule(case, "physical_therapy", next_week(10))
    first = await stubs.as_(COORDINATOR).coordination.ScheduleService(first_request)
    other = schedule(case, "physical_therapy", next_week(12))
    other.context.CopyFrom(first_request.context)

    refusal = await refused(stubs.as_(COORDINATOR).coordination.ScheduleService(other))

    assert refusal.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.reason == "IDEMPOTENCY_KEY_REUSED"
    # Only the context may change between a request and its retry (a new correlation id).
    first_request.context.correlation_id = str(uuid.uuid4())
    assert await stubs.as_(COORDINATOR).coordination.ScheduleService(first_request) == first
    listed = await stubs.as_(COORDINATOR).coordination.GetClientSchedule(
        co.GetClientScheduleRequest(context=query("coordination"), client_id=case.client_id)
    )
    assert [service.service_id for service in listed.services] == [first.service_id]

    registering = registration()
    await stubs.as_(RECEPTIONIST).intake.RegisterClient(registering)
    renamed = registration()
    renamed.context.CopyFrom(registering.context)
    refusal = await refused(stubs.as_(RECEPTIONIST).intake.RegisterClient(renamed))
    assert refusal.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_an_overlapping_service_is_refused_naming_the_appointment(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "physical_therapy", "counseling")
    therapy = await stubs.as_(COORDINATOR).coordination.ScheduleService(
        schedule(case, "physical_therapy", next_week(14))
    )
    refusal = await refused(
        stubs.as_(COORDINATOR).coordination.ScheduleService(
            schedule(case, "counseling", next_week(14) + timedelta(minutes=30))
        )
    )
    assert refusal.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.reason == "SCHEDULE_CONFLICT"
    assert refusal.metadata["conflicting_service_id"] == therapy.service_id
    (failure,) = refusal.details(error_details_pb2.PreconditionFailure)
    assert failure.violations[0].type == "SCHEDULE_CONFLICT"
    # Right after the therapy ends, the counseling fits.
    await stubs.as_(COORDINATOR).coordination.ScheduleService(
        schedule(case, "counseling", next_week(15))
    )


async def test_counseling_needs_a_licensed_social_worker_unless_referred_out(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "home_care", "substance_use")
    assign = co.AssignCaseRequest(
        context=command(key()), case_id=case.case_id, worker_id=CASE_MANAGER_ID
    )
    # The coordinator is shown no substance use: the refusal says a credential is lacking,
    # not that the case calls for counseling (which would tell them of it). The case's worker
    # and their supervisor, who see the need, refer it out.
    refusal = await refused(stubs.as_(COORDINATOR).coordination.AssignCase(assign))
    assert refusal.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.reason == "WORKER_LACKS_REQUIRED_CREDENTIAL"
    assert refusal.metadata["suggested_action"] == "SuggestWorkers"

    referral = co.MakeReferralRequest(
        context=command(key()),
        case_id=case.case_id,
        provider=co.Provider(provider_id="bay-recovery", name="Bay Recovery Center"),
        need_category="substance_use",
        service="Outpatient addiction counseling",
        urgency="soon",
        reason="Alcohol use since bereavement",
    )
    coordinator = stubs.as_(COORDINATOR).coordination
    # Referring discloses substance-use data: refused without the client's consent naming it.
    no_consent = await refused(coordinator.MakeReferral(referral))
    assert no_consent.code == grpc.StatusCode.FAILED_PRECONDITION
    assert no_consent.reason == "CONSENT_REQUIRED"
    assert no_consent.metadata["recipient"] == "bay-recovery"
    # The category by the request's field, never by its value: substance use is special data,
    # and a refusal's message and details reach logs and proxies.
    assert no_consent.metadata["category_field"] == "need_category"
    assert "category" not in no_consent.metadata
    assert "substance_use" not in no_consent.message
    await consent(casetrail, case, "bay-recovery", categories=("substance_use",))
    made = await eventually(
        lambda: coordinator.MakeReferral(referral),
        what="coordination to learn the case",
        patience=casetrail.patience,
        retry=not_known_yet,
    )
    # A referral still pending leaves the need with the worker: the counselor may decline.
    assign.context.idempotency_key = key()
    pending = await refused(stubs.as_(COORDINATOR).coordination.AssignCase(assign))
    assert pending.reason == "WORKER_LACKS_REQUIRED_CREDENTIAL"
    await stubs.as_(BAY_RECOVERY).coordination.AcceptReferral(
        co.AcceptReferralRequest(
            context=command(key()),
            case_id=case.case_id,
            referral_id=made.referral_id,
            provider_id="bay-recovery",
        )
    )
    assign.context.idempotency_key = key()
    assigned = await stubs.as_(COORDINATOR).coordination.AssignCase(assign)
    assert list(assigned.matched_needs) == ["home_care"]


async def test_a_case_is_not_closed_while_services_are_scheduled(casetrail: Casetrail) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "physical_therapy")
    service = await stubs.as_(COORDINATOR).coordination.ScheduleService(
        schedule(case, "physical_therapy", next_week(11))
    )
    view = pl.GetCaseViewRequest(context=query("coordination"), case_id=case.case_id)
    await eventually(
        lambda: stubs.as_(COORDINATOR).planning.GetCaseView(view),
        lambda found: [s.service_id for s in found.services] == [service.service_id],
        what="planning to learn of the service",
        patience=casetrail.patience,
    )
    close = pl.CloseCaseRequest(
        context=command(key()), case_id=case.case_id, reason="client_withdrew"
    )
    refusal = await refused(stubs.as_(COORDINATOR).planning.CloseCase(close))
    assert refusal.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.reason == "SERVICES_STILL_SCHEDULED"
    assert refusal.metadata["service_ids"] == service.service_id

    await stubs.as_(COORDINATOR).coordination.CancelService(
        co.CancelServiceRequest(
            context=command(key()),
            case_id=case.case_id,
            service_id=service.service_id,
            cancelled_by="client",
            reason="Moving in with her son",
        )
    )
    await eventually(
        lambda: stubs.as_(COORDINATOR).planning.GetCaseView(view),
        lambda found: [s.status for s in found.services] == ["cancelled"],
        what="planning to learn of the cancellation",
        patience=casetrail.patience,
    )
    close.context.idempotency_key = key()
    closed = await stubs.as_(COORDINATOR).planning.CloseCase(close)
    assert closed.result.case_id == case.case_id


async def test_a_stale_expected_version_is_aborted(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "home_care")
    context = command(key())
    context.expected_version = 7
    refusal = await refused(
        casetrail.stubs.as_(INTAKE_WORKER).intake.RecordInitialAssessment(
            intake_pb2.RecordInitialAssessmentRequest(
                context=context,
                case_id=case.case_id,
                factors=intake_pb2.AssessmentFactors(social="Lives alone"),
                needs=[intake_pb2.AssessedNeed(category="home_care", urgency="soon")],
            )
        )
    )
    assert refusal.code == grpc.StatusCode.ABORTED
