"""Coordination's gaps found in review, through the gRPC APIs: a coordinator (not entitled to
sensitive fields) never gets a sensitive need from a refusal, a suggestion or an assignment's
answer; the reason recorded for an assignment names no need (it is not sealed, so an erasure
could not forget it); refusals of coordination's reads are on the record; a refused role cannot
tell a real case from an unknown one; the front desk reads no schedule; a service whose kind
tells of a sensitive category comes from a referral only under a consent naming it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.policy.guard import NOTICE_KEY, REDACTED_KEY
from casetrail_platform.policy.vocabulary import REDISCLOSURE_NOTICE_TEXT
from cli.rpc import command, eventually, query, refused, timestamp
from cli.walk.story import (
    AUDITOR,
    CASE_MANAGER_ID,
    COORDINATOR,
    HOME_CARE,
    INTAKE_WORKER,
    RECEPTIONIST,
    SOCIAL_WORKER,
)
from tests.e2e.conftest import Casetrail
from tests.e2e.support import (
    PARTNER,
    Case,
    consent,
    home_care_referral,
    learning,
    new_case,
    next_week,
    referred_and_accepted,
)
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")

SENSITIVE = ("substance_use", "mental_health")


def _names_a_sensitive_need(text: str) -> bool:
    return any(need in text for need in SENSITIVE)


async def test_a_coordinator_gets_no_sensitive_need_and_the_record_keeps_none_in_words(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "substance_use", "home_care")
    coordination = casetrail.stubs.as_(COORDINATOR).coordination

    refusal = await refused(
        coordination.AssignCase(
            co.AssignCaseRequest(
                context=command(key()), case_id=case.case_id, worker_id=CASE_MANAGER_ID
            )
        )
    )
    # Shown no need calling for counseling, the coordinator is not told one does: that would
    # tell them of the substance use.
    assert refusal.reason == "WORKER_LACKS_REQUIRED_CREDENTIAL"
    assert CASE_MANAGER_ID in refusal.message
    assert not _names_a_sensitive_need(refusal.message)
    assert not _names_a_sensitive_need(str(refusal.status))
    assert "counsel" not in str(refusal.status).lower()

    suggesting = coordination.SuggestWorkers(
        co.SuggestWorkersRequest(context=query("coordination"), case_id=case.case_id)
    )
    suggested = await suggesting
    assert list(suggested.needs) == ["home_care"]
    assert dict(await suggesting.trailing_metadata())[REDACTED_KEY] == "needs"
    assert not any(_names_a_sensitive_need(r) for w in suggested.workers for r in w.reasons)
    assert not any("counsel" in r.lower() for w in suggested.workers for r in w.reasons)

    assigning = coordination.AssignCase(
        co.AssignCaseRequest(
            context=command(key()), case_id=case.case_id, worker_id=SOCIAL_WORKER.user_id
        )
    )
    assigned = await assigning
    assert list(assigned.matched_needs) == ["home_care"]
    assert dict(await assigning.trailing_metadata())[REDACTED_KEY] == "matched_needs"
    # The needs matched are the case's assessment, shown as a read would show them: recorded.
    shown = await _accesses(casetrail, case, COORDINATOR.user_id, "coordination")
    assert [(list(r.sections), list(r.redacted_fields)) for r in shown] == [
        (["assessment"], ["matched_needs"])
    ]

    # The needs matched are sealed (an erasure forgets them); the reason is kept in the clear
    # by audit, Kafka and exports for good, so it must not say them in words.
    recorded = await _assigned_event(casetrail, case)
    sealed = recorded["matched_needs"]
    assert isinstance(sealed, list)
    assert len(sealed) == 2
    assert all(str(value).startswith("ct1~") for value in sealed)
    reason = str(recorded["reason"])
    assert reason.startswith("LCSW licence fits the case's open needs; caseload ")
    assert not _names_a_sensitive_need(reason)


async def test_refused_reads_of_coordination_are_recorded_and_tell_nothing_of_the_case(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "home_care")
    stubs = casetrail.stubs

    suggest = await refused(
        stubs.as_(INTAKE_WORKER).coordination.SuggestWorkers(
            co.SuggestWorkersRequest(context=query("direct_care"), case_id=case.case_id)
        )
    )
    assert (suggest.code, suggest.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")

    for case_id in (case.case_id, f"no-such-case-{key()[:8]}"):
        read = await refused(
            stubs.as_(RECEPTIONIST).coordination.GetCaseCoordination(
                co.GetCaseCoordinationRequest(context=query("direct_care"), case_id=case_id)
            )
        )
        assert (read.code, read.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")

    first = await _refusals(casetrail, case, expect=2)
    assert sorted((r.accessor.user_id, r.action) for r in first) == [
        (RECEPTIONIST.user_id, "read a case"),
        (INTAKE_WORKER.user_id, "read a case"),
    ]

    # The front desk reads who a client is, never what their cases receive. (Asked once audit
    # has the refusals above: coordination's policy facts have long learnt the client's case,
    # under which the refusal is recorded.)
    schedule = await refused(
        stubs.as_(RECEPTIONIST).coordination.GetClientSchedule(
            co.GetClientScheduleRequest(context=query("direct_care"), client_id=case.client_id)
        )
    )
    assert (schedule.code, schedule.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_NOT_ALLOWED",
    )

    refusals = await _refusals(casetrail, case, expect=3)
    assert sorted((r.accessor.user_id, r.action, r.rule) for r in refusals) == [
        (RECEPTIONIST.user_id, "read a case", "role-not-allowed"),
        (RECEPTIONIST.user_id, "read a case", "role-not-allowed"),
        (INTAKE_WORKER.user_id, "read a case", "role-not-allowed"),
    ]


async def _assigned_event(casetrail: Casetrail, case: Case) -> dict[str, object]:
    request = audit_pb2.GetTimelineRequest(
        context=query("confidentiality_review"), case_id=case.case_id
    )
    timeline = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetTimeline(request),
        lambda answer: any(e.event_type == "casetrail.case.assigned" for e in answer.entries),
        what="audit to learn of the assignment",
        patience=casetrail.patience,
    )
    entry = next(e for e in timeline.entries if e.event_type == "casetrail.case.assigned")
    data: dict[str, object] = json.loads(entry.cloudevent_json)["data"]
    return data


async def test_a_sensitive_kind_is_booked_from_a_referral_only_under_a_consent_naming_it(
    casetrail: Casetrail,
) -> None:
    # MakeReferral refuses the substance-use need to a partner no consent names it for; an
    # addiction-counselling service booked from its home-care referral told it all the same.
    case = await new_case(casetrail, "home_care")
    await consent(casetrail, case, PARTNER)  # identity, referrals, services; no category
    referral_id = await referred_and_accepted(casetrail, case)
    coordination = casetrail.stubs.as_(COORDINATOR).coordination

    def booking(kind: str, hour: int) -> co.ScheduleServiceRequest:
        start = next_week(hour)
        return co.ScheduleServiceRequest(
            context=command(key()),
            case_id=case.case_id,
            kind=kind,
            provider=co.Provider(provider_id=PARTNER, name="Sunrise Home Care"),
            starts_at=timestamp(start),
            ends_at=timestamp(start + timedelta(hours=1)),
            location=co.ServiceLocation(kind="provider_site"),
            referral_id=referral_id,
        )

    refusal = await refused(coordination.ScheduleService(booking("addiction_counseling", 9)))
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONSENT_REQUIRED",
    )
    assert "addiction_counseling" not in str(refusal.status)
    assert not _names_a_sensitive_need(str(refusal.status))
    await coordination.ScheduleService(booking("home_care", 11))

    read = co.GetClientScheduleRequest(context=query("coordination"), client_id=case.client_id)
    schedule = await eventually(
        lambda: casetrail.stubs.as_(HOME_CARE).coordination.GetClientSchedule(read),
        lambda answer: len(answer.services) > 0,
        what="the partner to read its referral's services",
        patience=casetrail.patience,
        retry=learning,
    )
    assert [service.kind for service in schedule.services] == ["home_care"]


async def test_a_partner_shown_an_addiction_counselling_service_is_given_the_redisclosure_notice(
    casetrail: Casetrail,
) -> None:
    # 42 CFR 2.32: substance-use data disclosed under consent carries the notice. A service of
    # a kind telling of substance use, booked from a home-care referral under a consent naming
    # the category, was shown to the partner without it: the notice followed the referral's
    # need alone.
    case = await new_case(casetrail, "home_care")
    await consent(casetrail, case, PARTNER, categories=("substance_use",))
    referral_id = await referred_and_accepted(casetrail, case)
    start = next_week(9)
    await casetrail.stubs.as_(COORDINATOR).coordination.ScheduleService(
        co.ScheduleServiceRequest(
            context=command(key()),
            case_id=case.case_id,
            kind="addiction_counseling",
            provider=co.Provider(provider_id=PARTNER, name="Sunrise Home Care"),
            starts_at=timestamp(start),
            ends_at=timestamp(start + timedelta(hours=1)),
            location=co.ServiceLocation(kind="provider_site"),
            referral_id=referral_id,
        )
    )
    partner = casetrail.stubs.as_(HOME_CARE).coordination
    read = co.GetClientScheduleRequest(context=query("coordination"), client_id=case.client_id)

    async def schedule() -> tuple[co.GetClientScheduleResponse, dict[str, str]]:
        call = partner.GetClientSchedule(read)
        return await call, dict(await call.trailing_metadata())

    answer, trailer = await eventually(
        schedule,
        lambda read: len(read[0].services) > 0,
        what="the partner to read its referral's services",
        patience=casetrail.patience,
        retry=learning,
    )
    assert [service.kind for service in answer.services] == ["addiction_counseling"]
    assert trailer.get(NOTICE_KEY) == REDISCLOSURE_NOTICE_TEXT
    call = partner.GetCaseCoordination(
        co.GetCaseCoordinationRequest(context=query("coordination"), case_id=case.case_id)
    )
    case_answer = await call
    assert [service.kind for service in case_answer.services] == ["addiction_counseling"]
    assert dict(await call.trailing_metadata()).get(NOTICE_KEY) == REDISCLOSURE_NOTICE_TEXT


async def test_a_referral_on_the_emergency_basis_needs_the_callers_open_emergency_access(
    casetrail: Casetrail,
) -> None:
    # With no emergency access of the caller's, the basis fell back to a consent whose purpose
    # was emergency: the referral was made and recorded as disclosed in an emergency, with no
    # break-the-glass access for supervisors to review.
    case = await new_case(casetrail, "home_care")
    await casetrail.stubs.as_(INTAKE_WORKER).intake.GrantConsent(
        intake_pb2.GrantConsentRequest(
            context=command(key()),
            case_id=case.case_id,
            recipient=intake_pb2.ConsentRecipient(kind="agency", recipient_id=PARTNER, name="S"),
            purpose="emergency",
            scope=["identity", "referrals", "services"],
            expires_at=timestamp(datetime.now(UTC) + timedelta(days=90)),
            document_reference=f"scan://consents/{case.case_id}/emergency.pdf",
        )
    )
    request = home_care_referral(case)
    request.disclosure_basis = "emergency"
    refusal = await refused(casetrail.stubs.as_(COORDINATOR).coordination.MakeReferral(request))
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONSENT_REQUIRED",
    )


async def _accesses(
    casetrail: Casetrail, case: Case, accessor: str, purpose: str
) -> list[audit_pb2.AccessRecord]:
    request = audit_pb2.GetAccessLogRequest(
        context=query("confidentiality_review"), case_id=case.case_id, page_size=1000
    )

    def theirs(log: audit_pb2.GetAccessLogResponse) -> list[audit_pb2.AccessRecord]:
        return [r for r in log.records if (r.accessor.user_id, r.purpose) == (accessor, purpose)]

    log = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetAccessLog(request),
        lambda answer: len(theirs(answer)) >= 2,
        what="audit to learn of the coordinator's accesses",
        patience=casetrail.patience,
    )
    return theirs(log)[1:]


async def _refusals(casetrail: Casetrail, case: Case, expect: int) -> list[audit_pb2.AccessRefusal]:
    request = audit_pb2.GetAccessLogRequest(
        context=query("confidentiality_review"), case_id=case.case_id, page_size=1000
    )
    log = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetAccessLog(request),
        lambda answer: len(answer.refusals) >= expect,
        what="audit to learn of every refusal",
        patience=casetrail.patience,
    )
    return list(log.refusals)
