"""Small cases for the e2e tests: a new client with an open case, known to coordination."""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from cli.rpc import command, eventually, query, timestamp
from cli.walk.story import AUDITOR, RECEPTIONIST, SOCIAL_WORKER
from tests.e2e.conftest import Casetrail
from tests.support.distributed import ENV, REPO


def key() -> str:
    return uuid.uuid4().hex


def registration(
    family_name: str = "", born: str = "1950-03-14"
) -> intake_pb2.RegisterClientRequest:
    return intake_pb2.RegisterClientRequest(
        context=command(key()),
        name=intake_pb2.PersonName(
            given_names="Giulia", family_name=family_name or f"Conti-{uuid.uuid4().hex[:8]}"
        ),
        date_of_birth=born,
        identifiers=[intake_pb2.PersonalIdentifier(scheme="national_id", value=key())],
    )


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
    coordination; its id."""
    granted = await casetrail.stubs.as_(SOCIAL_WORKER).intake.GrantConsent(
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
