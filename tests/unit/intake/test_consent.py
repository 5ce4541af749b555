"""Consent through intake's API: granted with everything Part 2 asks for, revoked, and refused
whole (nothing written) when a field is missing or wrong; a revocation takes effect on the
next read, at once at intake."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.access import ConsentGranted, ConsentRevoked, RecordAccessDenied
from tests.support.grpc import details, refusal, violated_fields
from tests.support.identity import acting
from tests.unit.intake.requests import (
    PARTNER,
    a_case,
    command,
    granting,
    stamp,
)
from tests.unit.intake.support import Intake


async def stored(intake: Intake) -> list[Any]:
    store = await SqliteEventStore.open(
        intake.infra.data_dir / "intake" / "events.db", intake.infra.registry
    )
    try:
        return [r.event for r in await store.read_all(0)]
    finally:
        await store.close()


async def test_a_consent_is_granted_and_revoked(intake: Intake) -> None:
    case_id = await a_case(intake)
    granted = await intake.stub.GrantConsent(granting(case_id))
    assert granted.consent_id
    revoked = await intake.stub.RevokeConsent(
        intake_pb2.RevokeConsentRequest(
            context=command(),
            case_id=case_id,
            consent_id=granted.consent_id,
            reason="Client changed her mind",
        )
    )
    assert revoked.result.version == granted.result.version + 1
    events = await stored(intake)
    consent = next(e for e in events if isinstance(e, ConsentGranted))
    assert (consent.recipient.recipient_id, consent.purpose.value) == (PARTNER, "coordination")
    assert [c.value for c in consent.categories] == ["substance_use"]
    assert any(isinstance(e, ConsentRevoked) for e in events)

    again, status = await refusal(
        intake.stub.RevokeConsent(
            intake_pb2.RevokeConsentRequest(
                context=command(), case_id=case_id, consent_id=granted.consent_id
            )
        )
    )
    assert again is grpc.StatusCode.FAILED_PRECONDITION
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == "CONSENT_ALREADY_REVOKED"


async def test_bad_consents_name_the_field_and_write_nothing(intake: Intake) -> None:
    case_id = await a_case(intake)
    before = len(await stored(intake))
    cases = [
        (granting(case_id, recipient=None), ["recipient"]),
        (
            granting(case_id, expires_at=stamp(datetime.now(UTC) - timedelta(days=1))),
            ["expires_at"],
        ),
        (granting(case_id, expires_at=None), ["expires_at"]),
        (granting(case_id, purpose="curiosity"), ["purpose"]),
        (granting(case_id, document_reference=""), ["document_reference"]),
    ]
    for request, fields in cases:
        code, status = await refusal(intake.stub.GrantConsent(request))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, fields
        assert violated_fields(status) == fields
    scope = granting(case_id)
    scope.scope[:] = ["everything"]
    code, status = await refusal(intake.stub.GrantConsent(scope))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status)[0] == "scope[0]"
    assert len(await stored(intake)) == before


async def test_a_partner_without_referral_and_consent_is_refused_on_the_record(
    intake: Intake,
) -> None:
    """Without a referral it accepted and a consent in force, a partner agency reads nothing;
    the refusal is recorded without case content (tests/e2e/test_access.py walks the whole
    consent, referral, read, revoke, refused cycle across the services)."""
    case_id = await a_case(intake)
    granted = await intake.stub.GrantConsent(granting(case_id))
    await intake.stub.RevokeConsent(
        intake_pb2.RevokeConsentRequest(
            context=command(), case_id=case_id, consent_id=granted.consent_id
        )
    )
    partner = Person(PARTNER, "partner_agency", agency=PARTNER)
    partner_read = intake_pb2.GetCaseRequest(
        context=acting(partner, common_pb2.QueryContext(purpose="coordination")), case_id=case_id
    )
    code, _ = await refusal(intake.stub.GetCase(partner_read))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    denied = [e for e in await stored(intake) if isinstance(e, RecordAccessDenied)]
    assert [(d.accessor_id, d.case_id) for d in denied] == [(PARTNER, case_id)]


async def test_an_expired_consent_is_not_revoked(intake: Intake) -> None:
    """Past its expiry a consent discloses nothing more: its revocation is refused naming the
    rule and the expiry, nothing written (it was recorded as the client's withdrawal)."""
    case_id = await a_case(intake)
    expires_at = datetime.now(UTC) + timedelta(seconds=1)
    granted = await intake.stub.GrantConsent(granting(case_id, expires_at=stamp(expires_at)))
    await asyncio.sleep((expires_at - datetime.now(UTC)).total_seconds() + 0.05)
    before = len(await stored(intake))
    code, status = await refusal(
        intake.stub.RevokeConsent(
            intake_pb2.RevokeConsentRequest(
                context=command(), case_id=case_id, consent_id=granted.consent_id
            )
        )
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    [info] = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "CONSENT_EXPIRED"
    assert info.metadata["expires_at"] == expires_at.isoformat()
    assert len(await stored(intake)) == before
