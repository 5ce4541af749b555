"""Small cases for the e2e tests: a new client with an open case, known to coordination; an
assessment, a referral the partner accepted, an emergency access asked for, a service scheduled
next week."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.duration_pb2 import Duration

from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from cli.rpc import (
    Person,
    Refusal,
    command,
    eventually,
    not_known_yet,
    query,
    timestamp,
)
from cli.walk.story import AUDITOR, COORDINATOR, HOME_CARE, INTAKE_WORKER, RECEPTIONIST
from tests.e2e.conftest import Casetrail
from tests.support.cases import key, registration
from tests.support.distributed import ENV, REPO


@dataclass(frozen=True)
class Case:
    client_id: str
    case_id: str


async def new_case(casetrail: Casetrail, *needs: str, born: str = "1950-03-14") -> Case:
    """A new client (born on ``born``) with a case that coordination already knows, with
    ``needs`` assessed."""
    stubs = casetrail.stubs
    client = await stubs.as_(RECEPTIONIST).intake.RegisterClient(registration(born=born))
    opened = await stubs.as_(RECEPTIONIST).intake.OpenCase(
        intake_pb2.OpenCaseRequest(
            context=command(key()),
            client_id=client.client_id,
            referral_source=intake_pb2.ReferralSource(kind="self"),
            presenting_needs=[intake_pb2.PresentingNeed(category=need) for need in needs],
        )
    )
    case_id = opened.result.case_id
    # The auditor sees every need (a coordinator does not see substance use, say).
    request = co.GetCaseCoordinationRequest(
        context=query("confidentiality_review"), case_id=case_id
    )
    await eventually(
        lambda: stubs.as_(AUDITOR).coordination.GetCaseCoordination(request),
        lambda case: set(needs) <= set(case.needs),
        what="coordination to learn the case",
        patience=casetrail.patience,
    )
    return Case(client.client_id, case_id)


async def consent(
    casetrail: Casetrail,
    case: Case,
    recipient: str,
    *,
    categories: tuple[str, ...] = (),
    scope: tuple[str, ...] = ("identity", "referrals", "services"),
) -> str:
    """The client's consent (Intake.GrantConsent) to disclose ``scope`` to ``recipient`` for
    coordination, recorded by the intake worker (a case-carrying worker records one only on
    the case they carry); its id."""
    granted = await casetrail.stubs.as_(INTAKE_WORKER).intake.GrantConsent(
        intake_pb2.GrantConsentRequest(
            context=command(key()),
            case_id=case.case_id,
            recipient=intake_pb2.ConsentRecipient(
                kind="agency", recipient_id=recipient, name=recipient
            ),
            purpose="coordination",
            scope=list(scope),
            categories=list(categories),
            expires_at=timestamp(datetime.now(UTC) + timedelta(days=90)),
            document_reference=f"scan://consents/{case.case_id}/{recipient}.pdf",
        )
    )
    consent_id: str = granted.consent_id
    return consent_id


async def casetrail_cli(*arguments: str, token: str | None = None) -> tuple[int, str, str]:
    """``token``: passed as CASETRAIL_TOKEN, as the README recommends (``--token`` in
    ``arguments`` works too, with a warning on standard error)."""
    env = ENV if token is None else {**ENV, "CASETRAIL_TOKEN": token}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *arguments,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


PARTNER = HOME_CARE.user_id


def learning(refusal: Refusal) -> bool:
    """Facts travel over the bus: a relationship just formed may not be known yet."""
    return refusal.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


async def assessed(casetrail: Casetrail, case: Case) -> None:
    """The case's initial assessment, taken at intake (before any worker carries it)."""
    await casetrail.stubs.as_(INTAKE_WORKER).intake.RecordInitialAssessment(
        intake_pb2.RecordInitialAssessmentRequest(
            context=command(key()),
            case_id=case.case_id,
            factors=intake_pb2.AssessmentFactors(
                psychological="Low mood since the fall", social="Lives alone"
            ),
            needs=[intake_pb2.AssessedNeed(category="home_care", urgency="soon")],
        )
    )


def home_care_referral(case: Case) -> co.MakeReferralRequest:
    """The case's referral to the partner agency for morning personal care."""
    return co.MakeReferralRequest(
        context=command(key()),
        case_id=case.case_id,
        provider=co.Provider(provider_id=PARTNER, name="Sunrise Home Care"),
        need_category="home_care",
        service="Morning personal care",
        urgency="soon",
        reason="Cannot wash or dress alone since the fall",
    )


async def referred_and_accepted(casetrail: Casetrail, case: Case) -> str:
    """The case referred to the partner agency, which accepted: the referral's id. The client's
    consent must have been answered already (``consent``): only a case coordination has not
    learnt yet is asked again."""
    stubs = casetrail.stubs
    request = home_care_referral(case)
    made = await eventually(
        lambda: stubs.as_(COORDINATOR).coordination.MakeReferral(request),
        what="coordination to learn the case",
        patience=casetrail.patience,
        retry=not_known_yet,
    )
    await stubs.as_(HOME_CARE).coordination.AcceptReferral(
        co.AcceptReferralRequest(
            context=command(key()),
            case_id=case.case_id,
            referral_id=made.referral_id,
            provider_id=PARTNER,
        )
    )
    referral_id: str = made.referral_id
    return referral_id


BREAK_GLASS = ("break_glass",)
REASON = "Client found confused at home out of hours; need the medication and risk notes"
ON_CALL = Person("sw-luis-ortega", "social_worker", team="team-east", entitlements=BREAK_GLASS)


def opening(
    case: Case, reason: str = REASON, seconds: int = 0
) -> intake_pb2.OpenEmergencyAccessRequest:
    request = intake_pb2.OpenEmergencyAccessRequest(
        context=command(key()), case_id=case.case_id, reason=reason
    )
    if seconds:
        request.duration.CopyFrom(Duration(seconds=seconds))
    return request


def schedule(case: Case, kind: str, start: datetime, hours: int = 1) -> co.ScheduleServiceRequest:
    return co.ScheduleServiceRequest(
        context=command(key()),
        case_id=case.case_id,
        kind=kind,
        provider=co.Provider(provider_id="eastside-pt", name="Eastside Physical Therapy"),
        starts_at=timestamp(start),
        ends_at=timestamp(start + timedelta(hours=hours)),
        location=co.ServiceLocation(kind="provider_site"),
    )


def next_week(hour: int) -> datetime:
    day = datetime.now(UTC).date() + timedelta(days=7)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
