"""A case state's lists that grow with the case, cut to what one gRPC answer can carry."""

from __future__ import annotations

import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail_platform.grpc_platform.answer_caps import Cap
from cli.present import case_state_lines
from services.audit.entrypoints import responses
from services.console.pages import state_rows


def service(service_id: str, status: str, day: int) -> audit_pb2.ScheduledService:
    message = audit_pb2.ScheduledService(service_id=service_id, status=status)
    message.starts_at.seconds = 1_780_000_000 + day * 86_400
    return message


def test_the_entries_that_matter_most_are_kept_in_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("STATE_SERVICES", "STATE_REFERRALS", "STATE_CONSENTS"):
        monkeypatch.setattr(responses, name, Cap(2, 1024 * 1024))
    monkeypatch.setattr(responses, "STATE_RETENTION_HOLDS", 2)
    state = audit_pb2.CaseState(
        services=[
            service("delivered-early", "delivered", 1),
            service("cancelled-late", "cancelled", 5),
            service("rescheduled-soon", "rescheduled", 9),
            service("scheduled-later", "scheduled", 12),
        ],
        referrals=[
            audit_pb2.Referral(referral_id="r1", status="completed"),
            audit_pb2.Referral(referral_id="r2", status="declined"),
            audit_pb2.Referral(referral_id="r3", status="made"),
        ],
        consents=[
            audit_pb2.Consent(consent_id="c1", active=True),
            audit_pb2.Consent(consent_id="c2", active=False),
            audit_pb2.Consent(consent_id="c3", active=False),
        ],
        client_retention_hold_ids=["h1", "h2", "h3"],
    )

    responses.cut_state(state)

    assert [s.service_id for s in state.services] == ["rescheduled-soon", "scheduled-later"]
    assert [r.referral_id for r in state.referrals] == ["r2", "r3"]
    assert [c.consent_id for c in state.consents] == ["c1", "c3"]
    assert list(state.client_retention_hold_ids) == ["h2", "h3"]
    assert (state.services_truncated, state.services_total) == (True, 4)
    assert (state.referrals_truncated, state.referrals_total) == (True, 3)
    assert (state.consents_truncated, state.consents_total) == (True, 3)
    assert (state.client_retention_holds_truncated, state.client_retention_holds_total) == (
        True,
        3,
    )


def test_a_state_of_the_largest_entries_stays_well_under_4_mib() -> None:
    long_id = "i" * 64
    big_service = audit_pb2.ScheduledService(
        service_id=long_id, kind="substance_use_treatment", provider_id=long_id,
        status="rescheduled", referral_id=long_id,
    )  # fmt: skip
    big_service.starts_at.seconds = big_service.ends_at.seconds = 7_258_118_399
    big_service.starts_at.nanos = big_service.ends_at.nanos = 999_999_000
    referral = audit_pb2.Referral(
        referral_id=long_id, provider_id=long_id, need_category="substance_use", status="made"
    )
    consent = audit_pb2.Consent(
        consent_id=long_id, recipient_agency_id=long_id, scope=["identity"] * 12, active=True
    )
    state = audit_pb2.CaseState(
        services=[big_service] * 20_000,
        referrals=[referral] * 5_000,
        consents=[consent] * 5_000,
        client_retention_hold_ids=[long_id] * 50_000,
    )
    assert state.ByteSize() > 4 * 1024 * 1024

    responses.cut_state(state)

    assert state.ByteSize() < 1024 * 1024
    assert (state.services_total, len(state.services)) == (20_000, 1000)
    assert state.client_retention_holds_total == 50_000


def test_the_console_and_the_command_line_say_how_many_were_left_out() -> None:
    state = audit_pb2.CaseState(
        events_applied=3,
        services=[service("s1", "scheduled", 1)],
        services_total=1_250,
        services_truncated=True,
        consents=[audit_pb2.Consent(consent_id="c1")],
        consents_total=1,
    )

    lines = case_state_lines(state)
    rows = {row.key: row.value for row in state_rows(state)}

    assert "  1 of 1250 services listed (the timeline holds every one)" in lines
    assert not [line for line in lines if "consents listed" in line]
    assert rows["listed:services"] == "1 of 1250 (the timeline holds every one)"
    assert "listed:consents" not in rows
