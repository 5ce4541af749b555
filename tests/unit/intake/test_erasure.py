"""EraseClient and retention holds through intake's API (embedded service, real gRPC)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.commands import RuleBroken
from casetrail_platform.grpc_platform.errors import status_for
from casetrail_platform.keys.keyring import ClientErasedError
from casetrail_platform.keys.port import KeyUnavailableError
from cli.rpc import Person
from events.catalog.clients import ClientRegistered, PersonName
from events.catalog.erasure import ClientErased, RetentionHoldPlaced, RetentionHoldReleased
from events.sealed_values import ERASED_CODE, ERASED_TEXT
from services.intake.domain.erasure import CLIENT_ERASED, decide_erasure, decide_release
from tests.support.grpc import details, refusal, violated_fields
from tests.support.identity import acting
from tests.unit.intake.requests import assessing, command, erasing, granting, marco, opening, query
from tests.unit.intake.support import Intake, recorded

CANARY = "CANARY-0b1c-fears-falling"
HOLD_CANARY = "CANARY-hold-5e2d-inquiry"


def _files_holding(intake: Intake, canary: str) -> list[Path]:
    """The files of the service's data directory (SQLite and its journal) holding ``canary``."""
    return [
        path
        for path in intake.infra.data_dir.rglob("*")
        if path.is_file() and canary.encode() in path.read_bytes()
    ]


async def assessed_client(intake: Intake) -> tuple[str, str]:
    client = await intake.stub.RegisterClient(marco())
    case = opening(client.client_id)
    # Personal (case.opened v3): who referred the client, erased too.
    case.referral_source.name = f"Dr {CANARY}"
    opened = await intake.stub.OpenCase(case)
    request = assessing(opened.result.case_id)
    request.factors.psychological = CANARY
    # Personal (initial_assessment.recorded v2): the client's private life, erased too.
    request.factors.social = f"Lives alone, {CANARY}"
    request.factors.economic = f"Pension, {CANARY}"
    request.resources.append(f"Flat, {CANARY}")
    await intake.stub.RecordInitialAssessment(request)
    return client.client_id, opened.result.case_id


async def case_record(intake: Intake, case_id: str) -> intake_pb2.CaseRecord:
    answer: intake_pb2.GetCaseResponse = await intake.stub.GetCase(
        intake_pb2.GetCaseRequest(context=query(), case_id=case_id)
    )
    return answer.record


async def test_erasure_leaves_the_case_with_its_sensitive_fields_erased(intake: Intake) -> None:
    client_id, case_id = await assessed_client(intake)
    before = await case_record(intake, case_id)
    assert before.referral_source.name == f"Dr {CANARY}"
    entitled = before.assessments[0]
    assert entitled.factors.psychological == CANARY
    assert entitled.factors.social == f"Lives alone, {CANARY}"
    assert entitled.factors.economic == f"Pension, {CANARY}"
    assert list(entitled.strengths) == ["Good relationship with his daughter"]
    assert list(entitled.resources)[-1] == f"Flat, {CANARY}"

    request = erasing(client_id)
    erased = await intake.stub.EraseClient(request)

    assert list(erased.erased_case_ids) == [case_id]
    assert erased.keys_destroyed >= 1
    record = await case_record(intake, case_id)
    assessment = record.assessments[0]
    assert assessment.factors.psychological == ERASED_TEXT
    assert [need.category for need in record.presenting_needs] == [ERASED_CODE]
    assert assessment.risks[0].description == ERASED_TEXT
    # The social and economic factors, strengths and resources are personal: erased, each
    # item of a list on its own (the list keeps its length).
    assert assessment.factors.social == ERASED_TEXT
    assert assessment.factors.economic == ERASED_TEXT
    assert list(assessment.strengths) == [ERASED_TEXT]
    assert set(assessment.resources) == {ERASED_TEXT}
    assert len(assessment.resources) == len(entitled.resources)
    assert record.referral_source.name == ERASED_TEXT
    # What is neither sensitive nor personal stays.
    assert record.referral_source.kind == "hospital"
    assert assessment.risks[0].severity == "high"
    # A retry answers as the first call did; a new request records nothing more.
    again = await intake.stub.EraseClient(request)
    assert again.result == erased.result
    assert again.keys_destroyed == 0
    later = await intake.stub.EraseClient(erasing(client_id))
    assert list(later.result.event_ids) == list(erased.result.event_ids)


async def test_a_retention_hold_refuses_erasure_naming_the_hold(intake: Intake) -> None:
    client_id, case_id = await assessed_client(intake)
    held = await intake.stub.PlaceRetentionHold(
        intake_pb2.PlaceRetentionHoldRequest(
            context=command("supervisor"),
            client_id=client_id,
            legal_basis=f"litigation 2026-CV-113, {HOLD_CANARY}",
            until="2030-01-31",
        )
    )
    # Personal (retention_hold_placed v2): the basis tells of the client's circumstances, so
    # it is sealed at rest like the rest of who they are.
    assert not _files_holding(intake, HOLD_CANARY)

    code, status = await refusal(intake.stub.EraseClient(erasing(client_id)))

    assert code == grpc.StatusCode.FAILED_PRECONDITION
    [info] = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "RETENTION_HOLD"
    assert info.metadata["hold_id"] == held.hold_id
    assert held.hold_id in status.message
    # The basis is sealed personal data: an error message, which logs and callers keep, never
    # quotes it; the hold is named by its id and the day it ends.
    assert "litigation" not in status.message
    assert HOLD_CANARY not in status.message
    assert all("litigation" not in value for value in info.metadata.values())
    assert "2030-01-31" in status.message
    assert info.metadata["until"] == "2030-01-31"
    assert (await case_record(intake, case_id)).assessments[0].factors.psychological == CANARY

    await intake.stub.ReleaseRetentionHold(
        intake_pb2.ReleaseRetentionHoldRequest(
            context=command("supervisor"),
            client_id=client_id,
            hold_id=held.hold_id,
            reason=f"Proceedings closed, {HOLD_CANARY}",
        )
    )
    assert not _files_holding(intake, HOLD_CANARY)
    await intake.stub.EraseClient(erasing(client_id))
    assert (await case_record(intake, case_id)).assessments[0].factors.psychological == (
        ERASED_TEXT
    )


async def test_bad_erasure_requests_are_refused_clearly(intake: Intake) -> None:
    code, _ = await refusal(intake.stub.EraseClient(erasing("no-such-client")))
    assert code == grpc.StatusCode.NOT_FOUND
    client_id, _ = await assessed_client(intake)
    code, _ = await refusal(
        intake.stub.EraseClient(
            intake_pb2.EraseClientRequest(
                context=command("intake_worker"),
                client_id=client_id,
                request_reference="dms://privacy/requests/7",
            )
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, status = await refusal(
        intake.stub.EraseClient(
            intake_pb2.EraseClientRequest(context=command("supervisor"), client_id=client_id)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details(status, error_details_pb2.BadRequest)[0].field_violations] == [
        "request_reference"
    ]
    code, _ = await refusal(
        intake.stub.ReleaseRetentionHold(
            intake_pb2.ReleaseRetentionHoldRequest(
                context=command("supervisor"), client_id=client_id, hold_id="hold-unknown"
            )
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("failing", [1, 2], ids=["client-key", "case-key"])
async def test_an_erasure_that_fails_midway_completes_when_sent_again(
    intake: Intake, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    """Cut off at the first key to destroy (the client's) or the next (their case's own)."""
    client_id, case_id = await assessed_client(intake)
    keyring = intake.infra.keyring
    assert keyring is not None
    destroy = keyring.table.destroy
    failures = iter([False] * (failing - 1) + [True])

    def destroy_once_unavailable(owner: str) -> int:
        if next(failures, False):
            raise KeyUnavailableError("data-key table")
        return destroy(owner)

    monkeypatch.setattr(keyring.table, "destroy", destroy_once_unavailable)
    cases_of = keyring.table.cases_of
    asked_from: list[int] = []

    def noting_cases_of(client: str) -> list[str]:
        asked_from.append(threading.get_ident())
        return cases_of(client)

    monkeypatch.setattr(keyring.table, "cases_of", noting_cases_of)

    code, _ = await refusal(intake.stub.EraseClient(erasing(client_id, "erase-1")))
    assert code == grpc.StatusCode.UNAVAILABLE

    erased = await intake.stub.EraseClient(erasing(client_id, "erase-1"))
    assert erased.keys_destroyed == (1 if failing == 1 else 0)
    # The key table is a database: never asked on the event loop (which runs this test).
    assert asked_from
    assert threading.get_ident() not in asked_from
    for owner in keyring.owners_of_client(client_id):
        stored = keyring.table.current(owner)
        assert stored is not None, owner
        assert stored.wrapped is None, owner
    assert (await case_record(intake, case_id)).assessments[0].factors.psychological == (
        ERASED_TEXT
    )


async def test_nothing_more_is_recorded_about_an_erased_client(intake: Intake) -> None:
    """Opening a case, assessing, reopening, a consent to disclose and breaking the glass are
    refused FAILED_PRECONDITION CLIENT_ERASED, as placing a hold is (no INTERNAL: the keys
    are gone, so nothing could be sealed for them anyway)."""
    client_id, _ = await assessed_client(intake)
    unassessed = (await intake.stub.OpenCase(opening(client_id))).result.case_id
    await intake.stub.EraseClient(erasing(client_id))
    on_call = acting(
        Person("sw-on-call", "social_worker", entitlements=("break_glass",)),
        common_pb2.CommandContext(idempotency_key="glass-1"),
    )
    calls = {
        "open case": intake.stub.OpenCase(opening(client_id)),
        "assess": intake.stub.RecordInitialAssessment(assessing(unassessed)),
        "consent": intake.stub.GrantConsent(granting(unassessed)),
        "break the glass": intake.stub.OpenEmergencyAccess(
            intake_pb2.OpenEmergencyAccessRequest(
                context=on_call, case_id=unassessed, reason="Found unresponsive at home"
            )
        ),
    }
    for what, call in calls.items():
        code, status = await refusal(call)
        assert code == grpc.StatusCode.FAILED_PRECONDITION, (what, status.message)
        assert details(status, error_details_pb2.ErrorInfo)[0].reason == "CLIENT_ERASED", what


def test_a_client_erased_while_a_command_was_decided_is_refused_not_internal() -> None:
    # The backstop: the erasure lands between the decision and the sealing of the new event.
    status = status_for(ClientErasedError("client-1"))
    assert status.code == code_pb2.FAILED_PRECONDITION
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == CLIENT_ERASED
    assert "client-1" not in status.message


def test_a_hold_whose_until_has_passed_no_longer_forbids_erasure() -> None:
    # The catalog: "When the obligation ends ... (it is released then)", released or not.
    until = date(2026, 3, 31)
    events = [
        ClientRegistered(
            client_id="c1", name=PersonName(given_names="Marco", family_name="Bellini")
        ),
        RetentionHoldPlaced(client_id="c1", hold_id="h1", legal_basis="statutory", until=until),
        RetentionHoldPlaced(client_id="c1", hold_id="h2", legal_basis="audit", until=None),
        RetentionHoldReleased(client_id="c1", hold_id="h2"),
    ]
    history = [recorded(event, "client-c1", n) for n, event in enumerate(events, start=1)]
    erasure = ClientErased(client_id="c1", case_ids=(), request_reference="dms://dsr/1")
    with pytest.raises(RuleBroken) as refused:
        decide_erasure(history, erasure, today=until, occurred_at=None)  # its last day
    assert refused.value.details["hold_id"] == "h1"
    after = until + timedelta(days=1)
    assert decide_erasure(history, erasure, today=after, occurred_at=None) == [erasure]


async def test_a_hold_cannot_be_placed_already_ended(intake: Intake) -> None:
    client_id, _ = await assessed_client(intake)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    code, status = await refusal(
        intake.stub.PlaceRetentionHold(
            intake_pb2.PlaceRetentionHoldRequest(
                context=command("supervisor"),
                client_id=client_id,
                legal_basis="statutory retention ended",
                until=yesterday.isoformat(),
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["until"]
    # Nothing was held: the client may be erased.
    await intake.stub.EraseClient(erasing(client_id))


async def test_the_erasure_marker_is_not_accepted_as_live_text(intake: Intake) -> None:
    # A live client named "[erased]" would read as erased; so would a need described so.
    named = marco(family=ERASED_TEXT)
    code, status = await refusal(intake.stub.RegisterClient(named))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["name.family_name"]
    assert "only marks erased data" in status.message

    client = await intake.stub.RegisterClient(marco())
    described = opening(client.client_id)
    described.presenting_needs[0].description = ERASED_TEXT
    code, status = await refusal(intake.stub.OpenCase(described))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["presenting_needs[0].description"]
    # Sealed since case.opened v3, consent.granted v4 and retention_hold_placed v2: the same.
    referred = opening(client.client_id)
    referred.referral_source.name = ERASED_TEXT
    code, status = await refusal(intake.stub.OpenCase(referred))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["referral_source.name"]
    case_id = (await intake.stub.OpenCase(opening(client.client_id))).result.case_id
    to_nobody = granting(case_id)
    to_nobody.recipient.name = ERASED_TEXT
    for field, request in (
        ("recipient.name", to_nobody),
        ("document_reference", granting(case_id, document_reference=ERASED_TEXT)),
    ):
        code, status = await refusal(intake.stub.GrantConsent(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(status) == [field]
    code, status = await refusal(
        intake.stub.PlaceRetentionHold(
            intake_pb2.PlaceRetentionHoldRequest(
                context=command("supervisor"), client_id=client.client_id, legal_basis=ERASED_TEXT
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["legal_basis"]


def test_a_hold_is_not_released_after_the_erasure() -> None:
    """A hold that had ended (its ``until`` past) lets the erasure through unreleased; releasing
    it afterwards records nothing about the erased client, with a reason or without (before:
    without a reason the release was recorded, with one the destroyed key refused it)."""
    until = date(2026, 3, 31)
    events = [
        ClientRegistered(
            client_id="c1", name=PersonName(given_names="Marco", family_name="Bellini")
        ),
        RetentionHoldPlaced(client_id="c1", hold_id="h1", legal_basis="statutory", until=until),
        ClientErased(client_id="c1", case_ids=(), request_reference="dms://dsr/1"),
    ]
    history = [recorded(event, "client-c1", n) for n, event in enumerate(events, start=1)]
    for reason in (None, "proceedings closed"):
        with pytest.raises(RuleBroken) as refused:
            decide_release(history, "c1", "h1", reason, occurred_at=None)
        assert refused.value.rule == CLIENT_ERASED


async def test_an_emergency_access_on_an_erased_clients_case_is_still_reviewed(
    intake: Intake,
) -> None:
    """The duty to review outlives the erasure, but a note could only be sealed under the
    destroyed key: one is refused INVALID_ARGUMENT naming ``note`` and saying why, and the
    review without it is recorded (before: FAILED_PRECONDITION CLIENT_ERASED, "nothing more is
    recorded about them", which tells the reviewer the access cannot be reviewed at all)."""
    client_id, case_id = await assessed_client(intake)
    on_call = acting(
        Person("sw-on-call", "social_worker", entitlements=("break_glass",)),
        common_pb2.CommandContext(idempotency_key="glass-1"),
    )
    opened = await intake.stub.OpenEmergencyAccess(
        intake_pb2.OpenEmergencyAccessRequest(
            context=on_call, case_id=case_id, reason="Found unresponsive at home"
        )
    )
    await intake.stub.EraseClient(erasing(client_id))

    def review(key: str, note: str) -> intake_pb2.ReviewEmergencyAccessRequest:
        return intake_pb2.ReviewEmergencyAccessRequest(
            context=acting(
                Person("aud-1", "auditor"), common_pb2.CommandContext(idempotency_key=key)
            ),
            case_id=case_id,
            emergency_access_id=opened.emergency_access_id,
            outcome="justified",
            note=note,
        )

    code, status = await refusal(intake.stub.ReviewEmergencyAccess(review("r1", "Alarm on record")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["note"]
    reviewed = await intake.stub.ReviewEmergencyAccess(review("r2", ""))
    assert len(reviewed.result.event_ids) == 1


async def test_a_consent_is_still_revoked_after_the_erasure(intake: Intake) -> None:
    """Withdrawing a consent stays possible after the erasure (what is left of the case is
    still decided on it), but a reason could only be sealed under the destroyed key: one is
    refused INVALID_ARGUMENT naming ``reason``, and the revocation without it is recorded
    (before: CLIENT_ERASED with a reason, "nothing more is recorded about them")."""
    client_id, case_id = await assessed_client(intake)
    consent = await intake.stub.GrantConsent(granting(case_id))
    await intake.stub.EraseClient(erasing(client_id))

    def revoking(key: str, reason: str) -> intake_pb2.RevokeConsentRequest:
        return intake_pb2.RevokeConsentRequest(
            context=command(key=key),
            case_id=case_id,
            consent_id=consent.consent_id,
            reason=reason,
        )

    code, status = await refusal(intake.stub.RevokeConsent(revoking("v1", "Changed her mind")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["reason"]
    revoked = await intake.stub.RevokeConsent(revoking("v2", ""))
    assert len(revoked.result.event_ids) == 1


async def test_an_erasure_is_not_dated_before_intakes_work_on_the_clients_cases(
    intake: Intake,
) -> None:
    """The erasure ends the client's cases too: dated after the registration but before the
    case was assessed, it was accepted, and audit's state as it happened showed the case
    opened and assessed for a client already erased (which intake refuses)."""
    now = datetime.now(UTC)
    registering = marco()
    registering.context.occurred_at.FromDatetime(now - timedelta(hours=5))
    client_id = (await intake.stub.RegisterClient(registering)).client_id
    opened = opening(client_id)
    opened.context.occurred_at.FromDatetime(now - timedelta(hours=3))
    case_id = (await intake.stub.OpenCase(opened)).result.case_id
    assessed = assessing(case_id)
    assessed.context.occurred_at.FromDatetime(now - timedelta(hours=1))
    await intake.stub.RecordInitialAssessment(assessed)

    for stated in (now - timedelta(hours=4), now - timedelta(hours=2)):
        request = erasing(client_id)
        request.context.occurred_at.FromDatetime(stated)
        code, status = await refusal(intake.stub.EraseClient(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(status) == ["context.occurred_at"]
        assert f"the latest event of case {case_id}" in status.message

    request = erasing(client_id)
    request.context.occurred_at.FromDatetime(now - timedelta(minutes=30))
    erased = await intake.stub.EraseClient(request)
    assert list(erased.erased_case_ids) == [case_id]
