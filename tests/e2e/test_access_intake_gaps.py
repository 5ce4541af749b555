"""Intake's reads through the gRPC APIs where the policy's decision and the answer could part:
a partner's referred scope without the client's identity, the possible duplicates a confirmed
registration names, a refused role probing for cases and clients, and an erased client's
emergency accesses; and a case's work (its assessment, its consents) by a worker who does not
carry it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from casetrail_platform.policy.guard import WITHHELD_SECTIONS_KEY
from cli.rpc import (
    Person,
    Refusal,
    command,
    eventually,
    not_known_yet,
    query,
    refused,
    timestamp,
)
from cli.walk.story import (
    AUDITOR,
    CASE_MANAGER_ID,
    COORDINATOR,
    HOME_CARE,
    INTAKE_WORKER,
    PHYSIO,
    RECEPTIONIST,
    SOCIAL_WORKER,
)
from events.sealed_values import ERASED_TEXT
from tests.e2e.conftest import Casetrail
from tests.e2e.support import (
    ON_CALL,
    PARTNER,
    Case,
    assessed,
    consent,
    home_care_referral,
    new_case,
    opening,
    referred_and_accepted,
)
from tests.support.cases import key, registration

pytestmark = pytest.mark.asyncio(loop_scope="package")

REVIEW = "confidentiality_review"
OUTSIDER = Person("desk-westside", "receptionist", agency="westside-dss")
"""The front desk of another agency: none of this agency's clients are its to see."""
SYSTEM = Person("batch-runner", "system")
"""A role no rule lets read a case or a client."""
DPO = Person("dpo-erin-walsh", "supervisor")


async def _access_log(
    casetrail: Casetrail, subject: str, done: Callable[[audit_pb2.GetAccessLogResponse], bool]
) -> audit_pb2.GetAccessLogResponse:
    """Audit's access log of ``subject`` (a case, or a client without one) once ``done`` holds
    of it: accesses travel to audit over the bus."""
    request = audit_pb2.GetAccessLogRequest(context=query(REVIEW), case_id=subject, page_size=1000)
    answer: audit_pb2.GetAccessLogResponse = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetAccessLog(request),
        done,
        what=f"audit to learn the accesses to {subject}",
        patience=casetrail.patience,
    )
    return answer


def _not_known_yet(refusal: Refusal) -> bool:
    """Until a service learns the case (NOT_FOUND) and the accepted referral over the bus, the
    partner has no relationship there."""
    return not_known_yet(refusal) or refusal.reason in ("NO_RELATIONSHIP", "CONSENT_REQUIRED")


async def _partner_case(casetrail: Casetrail, scope: tuple[str, ...]) -> Case:
    case = await new_case(casetrail, "home_care")
    await assessed(casetrail, case)
    await consent(casetrail, case, PARTNER, scope=scope)
    await referred_and_accepted(casetrail, case)
    return case


async def test_a_partner_whose_consent_leaves_out_the_identity_is_refused_it_and_recorded(
    casetrail: Casetrail,
) -> None:
    case = await _partner_case(casetrail, ("referrals",))
    partner = casetrail.stubs.as_(HOME_CARE).intake
    read_case = intake_pb2.GetCaseRequest(context=query("coordination"), case_id=case.case_id)
    at_case = await eventually(
        lambda: refused(partner.GetCase(read_case)),
        lambda refusal: not _not_known_yet(refusal),
        what="intake to learn the accepted referral",
        patience=casetrail.patience,
    )
    assert (at_case.code, at_case.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SECTIONS_NOT_COVERED",
    )
    at_client = await refused(
        partner.GetClient(
            intake_pb2.GetClientRequest(context=query("coordination"), client_id=case.client_id)
        )
    )
    assert (at_client.code, at_client.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SECTIONS_NOT_COVERED",
    )
    assert case.client_id not in at_client.message

    def both_refusals(log: audit_pb2.GetAccessLogResponse) -> bool:
        return sum(r.rule == "sections-not-covered" for r in log.refusals) >= 2

    log = await _access_log(casetrail, case.case_id, both_refusals)
    assert not [r for r in log.records if r.accessor.user_id == PARTNER]
    refusals = {(r.source, r.rule) for r in log.refusals if r.accessor.user_id == PARTNER} - {
        ("casetrail/intake", "no-relationship"),
        ("casetrail/intake", "consent-required"),
    }
    assert refusals == {("casetrail/intake", "sections-not-covered")}


async def test_a_partner_whose_consent_covers_the_identity_gets_only_that_recorded(
    casetrail: Casetrail,
) -> None:
    case = await _partner_case(casetrail, ("identity", "referrals", "services"))
    partner = casetrail.stubs.as_(HOME_CARE).intake
    read_case = intake_pb2.GetCaseRequest(context=query("coordination"), case_id=case.case_id)

    async def read() -> tuple[intake_pb2.GetCaseResponse, dict[str, str]]:
        call = partner.GetCase(read_case)
        return await call, dict(await call.trailing_metadata())

    answer, trailer = await eventually(
        read,
        what="intake to learn the accepted referral",
        patience=casetrail.patience,
        retry=_not_known_yet,
    )
    record = answer.record
    assert (record.client.client_id, record.client.name.given_names) == (case.client_id, "Giulia")
    # Of the case, nothing but who the client is: not how they came, their needs or assessment.
    assert not record.HasField("referral_source")
    assert (list(record.presenting_needs), list(record.assessments)) == ([], [])
    assert "assessment" in trailer[WITHHELD_SECTIONS_KEY].split(",")
    client = await partner.GetClient(
        intake_pb2.GetClientRequest(context=query("coordination"), client_id=case.client_id)
    )
    assert client.client.name.given_names == "Giulia"

    def partner_reads(log: audit_pb2.GetAccessLogResponse) -> list[audit_pb2.AccessRecord]:
        return [r for r in log.records if r.accessor.user_id == PARTNER]

    log = await _access_log(casetrail, case.case_id, lambda log: len(partner_reads(log)) >= 2)
    assert [(list(r.sections), r.rule, r.source) for r in partner_reads(log)] == [
        (["identity"], "referral-recipient", "casetrail/intake")
    ] * 2


async def test_a_consent_to_a_person_lets_no_partner_of_that_sub_read_the_client(
    casetrail: Casetrail,
) -> None:
    """A consent to the person dr.lee was matched on the caller's ``sub`` at any agency: at a
    partner holding a referral made under the legal-obligation exception, its caller dr.lee
    read the client's identity and date of birth while the agency's own account was refused."""
    case = await new_case(casetrail, "home_care")
    stubs = casetrail.stubs
    await stubs.as_(INTAKE_WORKER).intake.GrantConsent(
        intake_pb2.GrantConsentRequest(
            context=command(key()),
            case_id=case.case_id,
            recipient=intake_pb2.ConsentRecipient(
                kind="person", recipient_id="dr.lee", name="Dr Lee"
            ),
            purpose="coordination",
            scope=["identity", "referrals", "services"],
            expires_at=timestamp(datetime.now(UTC) + timedelta(days=90)),
            document_reference=f"scan://consents/{case.case_id}/dr-lee.pdf",
        )
    )
    referral = home_care_referral(case)
    referral.provider.provider_id = PHYSIO.agency
    referral.disclosure_basis = "legal_obligation"
    made = await eventually(
        lambda: stubs.as_(COORDINATOR).coordination.MakeReferral(referral),
        what="coordination to learn the case",
        patience=casetrail.patience,
    )
    await stubs.as_(PHYSIO).coordination.AcceptReferral(
        co.AcceptReferralRequest(
            context=command(key()),
            case_id=case.case_id,
            referral_id=made.referral_id,
            provider_id=PHYSIO.agency,
        )
    )
    reading = intake_pb2.GetClientRequest(context=query("coordination"), client_id=case.client_id)
    # The agency's own account is a referral recipient once intake learns the referral.
    account = await eventually(
        lambda: refused(stubs.as_(PHYSIO).intake.GetClient(reading)),
        lambda refusal: refusal.reason != "NO_RELATIONSHIP",
        what="intake to learn the accepted referral",
        patience=casetrail.patience,
    )
    assert account.reason == "CONSENT_REQUIRED"
    namesake = Person("dr.lee", "partner_agency", agency=PHYSIO.agency)
    for call in (
        stubs.as_(namesake).intake.GetClient(reading),
        stubs.as_(namesake).intake.GetCase(
            intake_pb2.GetCaseRequest(context=query("coordination"), case_id=case.case_id)
        ),
    ):
        refusal = await refused(call)
        assert (refusal.code, refusal.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "CONSENT_REQUIRED",
        )
        assert case.client_id not in refusal.message


async def test_a_confirmed_registration_names_only_the_duplicates_the_caller_may_see(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    first = registration()
    known = await stubs.as_(RECEPTIONIST).intake.RegisterClient(first)

    def again(*, confirmed: bool) -> intake_pb2.RegisterClientRequest:
        request = intake_pb2.RegisterClientRequest()
        request.CopyFrom(first)
        request.context.CopyFrom(command(key()))
        request.confirmed_not_duplicate = confirmed
        return request

    # Another agency's front desk registers nobody here (commands are for the agency's own
    # staff), so it never reaches the duplicate search: it learns nothing of who is registered.
    for confirmed in (False, True):
        outsider = await refused(
            stubs.as_(OUTSIDER).intake.RegisterClient(again(confirmed=confirmed))
        )
        assert (outsider.code, outsider.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NO_RELATIONSHIP",
        )

    # The agency's own front desk sees them, and each is recorded as read.
    home = await stubs.as_(RECEPTIONIST).intake.RegisterClient(again(confirmed=True))
    assert {c.client_id for c in home.acknowledged_duplicates} == {known.client_id}

    def settled(log: audit_pb2.GetAccessLogResponse) -> bool:
        return any(r.accessor.user_id == RECEPTIONIST.user_id for r in log.records)

    log = await _access_log(casetrail, known.client_id, settled)
    assert list(log.refusals) == []
    assert {(r.accessor.user_id, r.rule, tuple(r.sections)) for r in log.records} >= {
        (RECEPTIONIST.user_id, "front-desk", ("identity",))
    }
    assert not [r for r in log.records if r.accessor.user_id == OUTSIDER.user_id]


async def test_a_role_no_rule_lets_read_learns_not_whether_a_case_or_client_exists(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "housing")
    desk, system = casetrail.stubs.as_(RECEPTIONIST).intake, casetrail.stubs.as_(SYSTEM).intake
    for case_id in (case.case_id, f"no-such-case-{key()}"):
        refusal = await refused(
            desk.GetCase(intake_pb2.GetCaseRequest(context=query("direct_care"), case_id=case_id))
        )
        assert (refusal.code, refusal.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_NOT_ALLOWED",
        ), case_id
    for client_id in (case.client_id, f"no-such-client-{key()}"):
        refusal = await refused(
            system.GetClient(
                intake_pb2.GetClientRequest(context=query("direct_care"), client_id=client_id)
            )
        )
        assert (refusal.code, refusal.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_NOT_ALLOWED",
        ), client_id


async def test_an_erased_clients_emergency_accesses_keep_no_reason_or_note(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    canary = f"EA-CANARY-{uuid.uuid4().hex}"
    case = await new_case(casetrail, "housing")
    on_call = stubs.as_(ON_CALL).intake
    reviewed = await on_call.OpenEmergencyAccess(opening(case, reason=f"Reason {canary}"))
    pending = await on_call.OpenEmergencyAccess(opening(case, reason=f"Still {canary}"))
    auditor = stubs.as_(AUDITOR).intake
    await auditor.ReviewEmergencyAccess(
        intake_pb2.ReviewEmergencyAccessRequest(
            context=command(key()),
            case_id=case.case_id,
            emergency_access_id=reviewed.emergency_access_id,
            outcome="justified",
            note=f"Note {canary}",
        )
    )
    everything = intake_pb2.ListEmergencyAccessesRequest(
        context=query(REVIEW), case_id=case.case_id, include_reviewed=True
    )

    def texts(answer: intake_pb2.ListEmergencyAccessesResponse) -> dict[str, tuple[str, str]]:
        return {a.emergency_access_id: (a.reason, a.review.note) for a in answer.accesses}

    await eventually(
        lambda: auditor.ListEmergencyAccesses(everything),
        lambda answer: (
            texts(answer).get(reviewed.emergency_access_id)
            == (f"Reason {canary}", f"Note {canary}")
        ),
        what="the review to reach the queue",
        patience=casetrail.patience,
    )
    data_dir = casetrail.data_dir
    assert data_dir is not None
    if casetrail.backend == "embedded":  # the read models are files here
        assert _files_holding(data_dir, canary.encode())

    await stubs.as_(DPO).intake.EraseClient(
        intake_pb2.EraseClientRequest(
            context=command(key()), client_id=case.client_id, request_reference="dms://dsr/77"
        )
    )
    listed = await eventually(
        lambda: auditor.ListEmergencyAccesses(everything),
        lambda answer: canary not in str(answer),
        what="the review queue to forget the reasons and the note",
        patience=casetrail.patience,
    )
    assert texts(listed) == {
        reviewed.emergency_access_id: (ERASED_TEXT, ERASED_TEXT),
        pending.emergency_access_id: (ERASED_TEXT, ""),
    }
    # The duty to review stays: the access not yet reviewed is still in the queue.
    queue = await auditor.ListEmergencyAccesses(
        intake_pb2.ListEmergencyAccessesRequest(context=query(REVIEW), case_id=case.case_id)
    )
    assert [a.emergency_access_id for a in queue.accesses] == [pending.emergency_access_id]
    await eventually(
        lambda: asyncio.sleep(0, _files_holding(data_dir, canary.encode())),
        lambda holding: not holding,
        what="the read models' files to forget the canary",
        patience=casetrail.patience,
    )


def _files_holding(directory: Path, needle: bytes) -> list[str]:
    return [
        str(path) for path in directory.rglob("*") if path.is_file() and needle in path.read_bytes()
    ]


async def test_a_partner_still_reads_its_referral_in_the_case_view(casetrail: Casetrail) -> None:
    """The release refuses an answer showing a section it cannot withhold: every section of
    planning's case view must have its place there, progress included (within the plan)."""
    case = await _partner_case(casetrail, ("identity", "referrals", "services"))
    partner = casetrail.stubs.as_(HOME_CARE).planning
    view = await eventually(
        lambda: partner.GetCaseView(
            pl.GetCaseViewRequest(context=query("coordination"), case_id=case.case_id)
        ),
        lambda view: len(view.referrals) == 1,
        what="planning to learn the accepted referral",
        patience=casetrail.patience,
        retry=_not_known_yet,
    )
    assert [r.provider_id for r in view.referrals] == [PARTNER]
    assert (list(view.needs), view.HasField("plan"), view.HasField("worker")) == ([], False, False)


def _assessment(case_id: str) -> intake_pb2.RecordInitialAssessmentRequest:
    return intake_pb2.RecordInitialAssessmentRequest(
        context=command(key()),
        case_id=case_id,
        factors=intake_pb2.AssessmentFactors(social="Lives alone"),
        needs=[intake_pb2.AssessedNeed(category="substance_use", urgency="soon")],
    )


async def test_a_worker_not_on_the_case_records_none_of_its_work_and_learns_nothing_of_it(
    casetrail: Casetrail,
) -> None:
    """A case manager who carries none of the case (refused its GetCase and planning's
    LogContact) recorded its one initial assessment, revoked the assigned worker's consent and
    told an unknown id (NOT_FOUND) from a real one. Now: PERMISSION_DENIED NO_RELATIONSHIP,
    the same for an unknown id, on the record at audit; the worker the case was just assigned
    to records its assessment."""
    case = await new_case(casetrail, "home_care")
    stubs = casetrail.stubs
    await stubs.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(
            context=command(key()), case_id=case.case_id, worker_id=SOCIAL_WORKER.user_id
        )
    )
    consent_id = await consent(casetrail, case, PARTNER)
    stranger = stubs.as_(Person(CASE_MANAGER_ID, "case_manager")).intake
    answers = []
    for case_id in (case.case_id, f"no-such-case-{key()}"):
        answers.append(await refused(stranger.RecordInitialAssessment(_assessment(case_id))))
        revocation = intake_pb2.RevokeConsentRequest(
            context=command(key()), case_id=case_id, consent_id=consent_id
        )
        answers.append(await refused(stranger.RevokeConsent(revocation)))
    assert {(a.code, a.reason) for a in answers} == {
        (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    }
    assert [a.message for a in answers[:2]] == [a.message for a in answers[2:]]

    await stubs.as_(SOCIAL_WORKER).intake.RecordInitialAssessment(_assessment(case.case_id))
    log = await _access_log(
        casetrail,
        case.case_id,
        lambda log: len([r for r in log.refusals if r.accessor.user_id == CASE_MANAGER_ID]) == 2,
    )
    assert {
        (r.action, r.rule, r.purpose) for r in log.refusals if r.accessor.user_id == CASE_MANAGER_ID
    } == {
        ("record a case's initial assessment", "no-relationship", "direct_care"),
        ("record a client's consent or its revocation", "no-relationship", "direct_care"),
    }
