"""A command checked against the server's clock (a consent's expiry, a hold's last day), whose
first answer was lost and which is retried once the date has passed: the retry gets the first
answer, not a refusal of what was recorded; a new request is refused as before."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.intake.v1 import intake_pb2
from services.intake import bootstrap
from services.intake.entrypoints import grpc_server
from tests.support.grpc import details, refusal, violated_fields
from tests.unit.intake.requests import a_case, command, granting, marco, stamp
from tests.unit.intake.support import Intake


class _TwoDaysLater(datetime):
    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _TwoDaysLater:
        moment = datetime.now(tz) + timedelta(days=2)
        return cls.fromtimestamp(moment.timestamp(), tz)


async def test_a_consent_retried_after_it_expired_gets_its_first_answer(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = await a_case(intake)
    request = granting(case_id, expires_at=stamp(datetime.now(UTC) + timedelta(hours=1)))
    first = await intake.stub.GrantConsent(request)

    monkeypatch.setattr(grpc_server, "datetime", _TwoDaysLater)
    assert await intake.stub.GrantConsent(request) == first

    request.context.idempotency_key = "a-new-consent"
    code, status = await refusal(intake.stub.GrantConsent(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["expires_at"]
    # A retry of the key with another request is still told so, not answered.
    request.context.idempotency_key = first_key = "consent-key-reused"
    request.expires_at.CopyFrom(stamp(datetime.now(UTC) + timedelta(days=30)))
    monkeypatch.undo()
    await intake.stub.GrantConsent(request)
    monkeypatch.setattr(grpc_server, "datetime", _TwoDaysLater)
    request.expires_at.CopyFrom(stamp(datetime.now(UTC) + timedelta(hours=1)))
    request.context.idempotency_key = first_key
    code, status = await refusal(intake.stub.GrantConsent(request))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    [info] = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_a_hold_retried_after_its_last_day_gets_its_first_answer(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id = (await intake.stub.RegisterClient(marco())).client_id
    today = date.today()
    monkeypatch.setattr(bootstrap, "agency_today", lambda _: today)
    request = intake_pb2.PlaceRetentionHoldRequest(
        context=command("supervisor"),
        client_id=client_id,
        legal_basis="litigation 2026-CV-113",
        until=today.isoformat(),
    )
    first = await intake.stub.PlaceRetentionHold(request)

    monkeypatch.setattr(bootstrap, "agency_today", lambda _: today + timedelta(days=1))
    assert await intake.stub.PlaceRetentionHold(request) == first

    request.context.idempotency_key = "a-new-hold"
    code, status = await refusal(intake.stub.PlaceRetentionHold(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["until"]
