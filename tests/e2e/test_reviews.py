"""The need-to-know reviews through the gRPC APIs and the CLI, on both backends: the accounting
of disclosures of a client's record, and a case as a user saw it at a moment."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.policy.guard import RULE_KEY
from cli.rpc import Person, command, eventually, query, refused, timestamp
from cli.walk.story import AUDITOR, COORDINATOR, HOME_CARE, RECEPTIONIST, SOCIAL_WORKER
from tests.e2e.conftest import Casetrail
from tests.e2e.support import (
    ON_CALL,
    PARTNER,
    Case,
    assessed,
    casetrail_cli,
    consent,
    learning,
    new_case,
    opening,
    referred_and_accepted,
)
from tests.support.cases import key, registration

pytestmark = pytest.mark.asyncio(loop_scope="package")

REVIEW = "confidentiality_review"


async def read_case(casetrail: Casetrail, case: Case, person: Person, purpose: str) -> None:
    """``person`` reads the case at intake, once intake has learnt why they may."""
    request = intake_pb2.GetCaseRequest(context=query(purpose), case_id=case.case_id)
    reader = casetrail.stubs.as_(person)
    await eventually(
        lambda: reader.intake.GetCase(request),
        what="intake to learn the reader's relationship",
        patience=casetrail.patience,
        retry=learning,
    )


async def as_seen(
    casetrail: Casetrail, case: Case, user: str, at: datetime, rule: str, **claims: str
) -> audit_pb2.GetCaseAsSeenResponse:
    """U's view at ``at``, once audit has every event recorded up to then (the rule expected
    tells)."""
    if "user_role" not in claims:
        # U's role is then read from U's reads in audit's timeline, which a test that waited
        # on the accounting (audit's disclosure index, another consumer) may be ahead of.
        log_request = audit_pb2.GetAccessLogRequest(
            context=query(REVIEW), case_id=case.case_id, page_size=1000
        )
        await eventually(
            lambda: casetrail.stubs.as_(AUDITOR).audit.GetAccessLog(log_request),
            lambda log: any(r.accessor.user_id == user for r in log.records),
            what=f"audit's timeline to hold a read by {user}",
            patience=casetrail.patience,
        )
    request = audit_pb2.GetCaseAsSeenRequest(
        context=query(REVIEW), case_id=case.case_id, user_id=user, as_of=timestamp(at), **claims
    )
    answer: audit_pb2.GetCaseAsSeenResponse = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetCaseAsSeen(request),
        lambda seen: seen.entitlement.rule == rule,
        what=f"audit to know what {user} could see",
        patience=casetrail.patience,
    )
    return answer


async def test_the_accounting_and_the_as_seen_view_follow_consent_and_assignment(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    before_case = datetime.now(UTC)
    case = await new_case(casetrail, "home_care")
    await assessed(casetrail, case)
    before_assignment = datetime.now(UTC)
    await stubs.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(
            context=command(key()), case_id=case.case_id, worker_id=SOCIAL_WORKER.user_id
        )
    )
    # The assigned worker reads for direct care: a use inside the team, no disclosure.
    await read_case(casetrail, case, SOCIAL_WORKER, "direct_care")
    consent_id = await consent(casetrail, case, PARTNER)
    await referred_and_accepted(casetrail, case)
    # The partner agency reads the referred scope under the client's consent: a disclosure.
    await read_case(casetrail, case, HOME_CARE, "coordination")
    after_partner_read = datetime.now(UTC)
    await stubs.as_(SOCIAL_WORKER).intake.RevokeConsent(
        intake_pb2.RevokeConsentRequest(
            context=command(key()), case_id=case.case_id, consent_id=consent_id
        )
    )
    after_revocation = datetime.now(UTC)

    asked = audit_pb2.ListDisclosuresRequest(
        context=query(REVIEW), client_id=case.client_id, period_start=timestamp(before_case)
    )
    accounting = await eventually(
        lambda: stubs.as_(AUDITOR).audit.ListDisclosures(asked),
        lambda answer: any(d.event_type == "casetrail.record.accessed" for d in answer.disclosures),
        what="audit to learn of the partner's read",
        patience=casetrail.patience,
    )
    assert list(accounting.case_ids) == [case.case_id]
    by_type = {d.event_type: d for d in accounting.disclosures}
    read = by_type["casetrail.record.accessed"]
    assert (read.recipient.kind, read.recipient.recipient_id) == ("agency", PARTNER)
    assert (read.basis, read.consent_id, read.purpose) == ("consent", consent_id, "coordination")
    assert "identity" in read.sections
    assert "assessment" not in read.sections
    referral = by_type["casetrail.referral.made"]
    assert (referral.recipient.recipient_id, referral.consent_id) == (PARTNER, consent_id)
    assert SOCIAL_WORKER.user_id not in {d.disclosed_by.user_id for d in accounting.disclosures}
    later_call = stubs.as_(AUDITOR).audit.ListDisclosures(
        audit_pb2.ListDisclosuresRequest(
            context=query(REVIEW),
            client_id=case.client_id,
            period_start=timestamp(after_partner_read),
        )
    )
    later = await later_call
    assert list(later.disclosures) == []
    # Audit's answers name the rule that decided, as every service's do.
    assert dict(await later_call.trailing_metadata())[RULE_KEY] == "auditor-review"
    cases_call = stubs.as_(AUDITOR).audit.FindCasesOfClient(
        audit_pb2.FindCasesOfClientRequest(context=query(REVIEW), client_id=case.client_id)
    )
    assert list((await cases_call).case_ids) == [case.case_id]
    assert dict(await cases_call.trailing_metadata())[RULE_KEY] == "auditor-review"

    # The worker: nothing before she was assigned, the whole case after.
    before = await as_seen(
        casetrail,
        case,
        SOCIAL_WORKER.user_id,
        before_assignment,
        "no-relationship",
        user_role="social_worker",
        user_purpose="direct_care",
    )
    assert not before.state.client_id
    assert not before.reads
    after = await as_seen(
        casetrail, case, SOCIAL_WORKER.user_id, after_partner_read, "assigned-worker"
    )
    assert after.state.assignment.worker_id == SOCIAL_WORKER.user_id
    assert [n.category for n in after.state.assessed_needs] == ["home_care"]
    assert [r.rule for r in after.reads] == ["assigned-worker"]
    seen_call = stubs.as_(AUDITOR).audit.GetCaseAsSeen(
        audit_pb2.GetCaseAsSeenRequest(
            context=query(REVIEW),
            case_id=case.case_id,
            user_id=SOCIAL_WORKER.user_id,
            as_of=timestamp(after_partner_read),
        )
    )
    await seen_call
    assert dict(await seen_call.trailing_metadata())[RULE_KEY] == "auditor-review"
    assert "role=access_event" in after.user.derived_from

    # The partner: the referred scope under consent, nothing once it is revoked.
    consented = await as_seen(casetrail, case, PARTNER, after_partner_read, "referral-recipient")
    assert consented.entitlement.consent_id == consent_id
    assert consented.state.client_id == case.client_id
    assert not consented.state.HasField("assignment")
    assert [r.consent_id for r in consented.reads] == [consent_id]
    revoked = await as_seen(
        casetrail,
        case,
        PARTNER,
        after_revocation,
        "consent-required",
        user_role="partner_agency",
        user_agency_id=PARTNER,
        user_purpose="coordination",
    )
    assert not revoked.entitlement.allowed
    assert not revoked.state.referrals

    # The same through the CLI, as an auditor runs it.
    audit = ["--audit", casetrail.addresses["audit"], "--token", casetrail.tokens(AUDITOR)]
    status, out, err = await casetrail_cli(
        "disclosures", "--client", case.client_id, "--from", before_case.isoformat(), *audit
    )
    assert status == 0, err
    assert f"consent {consent_id}" in out
    assert "2 disclosures" in out
    status, out, err = await casetrail_cli(
        "as-seen", case.case_id, "--user", PARTNER, "--at", after_partner_read.isoformat(),
        "--json", *audit,
    )  # fmt: skip
    assert status == 0, err
    assert json.loads(out)["entitlement"]["rule"] == "referral-recipient"


async def test_bad_review_requests_name_the_field(casetrail: Casetrail) -> None:
    auditor = casetrail.stubs.as_(AUDITOR).audit
    case = await new_case(casetrail, "home_care")
    now = datetime.now(UTC)
    seven_years = timedelta(days=7 * 365)

    def accounting(start: datetime, end: datetime, client: str) -> audit_pb2.ListDisclosuresRequest:
        return audit_pb2.ListDisclosuresRequest(
            context=query(REVIEW),
            client_id=client,
            period_start=timestamp(start),
            period_end=timestamp(end),
        )

    too_long = await refused(auditor.ListDisclosures(accounting(now - seven_years, now, "c")))
    assert too_long.field_violations.keys() == {"period_start"}
    reversed_bounds = await refused(
        auditor.ListDisclosures(accounting(now, now - timedelta(days=1), case.client_id))
    )
    assert reversed_bounds.field_violations.keys() == {"period_end"}
    unknown = await refused(
        auditor.ListDisclosures(accounting(now - timedelta(days=1), now, f"client-{key()}"))
    )
    assert unknown.code == grpc.StatusCode.NOT_FOUND

    def seen(case_id: str, at: datetime) -> audit_pb2.GetCaseAsSeenRequest:
        return audit_pb2.GetCaseAsSeenRequest(
            context=query(REVIEW), case_id=case_id, user_id="someone", as_of=timestamp(at),
            user_role="social_worker",
        )  # fmt: skip

    await eventually(
        lambda: auditor.GetCaseAsSeen(seen(case.case_id, datetime.now(UTC))),
        what="audit to learn the case",
        patience=casetrail.patience,
        retry=lambda refusal: refusal.code == grpc.StatusCode.NOT_FOUND,
    )
    before_case = await refused(auditor.GetCaseAsSeen(seen(case.case_id, now - timedelta(days=1))))
    assert before_case.field_violations.keys() == {"as_of"}
    missing = await refused(auditor.GetCaseAsSeen(seen(f"case-{key()}", now)))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    not_an_auditor = await refused(
        casetrail.stubs.as_(COORDINATOR).audit.GetCaseAsSeen(seen(case.case_id, now))
    )
    assert not_an_auditor.code == grpc.StatusCode.PERMISSION_DENIED

    audit = ["--audit", casetrail.addresses["audit"], "--token", casetrail.tokens(AUDITOR)]
    status, _, err = await casetrail_cli(
        "as-seen", case.case_id, "--user", "someone", "--at", "yesterday-ish", *audit
    )
    assert status != 0
    assert "--at" in err
    status, _, err = await casetrail_cli(
        "disclosures", "--client", case.client_id, "--from", "2001-01-01", *audit
    )
    assert status == 1
    assert "period_start" in err


async def test_a_break_the_glass_read_is_accounted_for_and_seen_as_of_its_window(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "housing")
    before_opening = datetime.now(UTC)
    on_call = casetrail.stubs.as_(ON_CALL)
    opened = await on_call.intake.OpenEmergencyAccess(opening(case))
    # Intake holds the emergency access itself: the read is answered at once.
    await on_call.intake.GetCase(
        intake_pb2.GetCaseRequest(context=query("emergency"), case_id=case.case_id)
    )
    after_read = datetime.now(UTC)

    asked = audit_pb2.ListDisclosuresRequest(
        context=query(REVIEW), client_id=case.client_id, period_start=timestamp(before_opening)
    )
    accounting = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.ListDisclosures(asked),
        lambda answer: any(d.basis == "emergency" for d in answer.disclosures),
        what="audit to learn of the emergency read",
        patience=casetrail.patience,
    )
    (read,) = accounting.disclosures
    assert (read.recipient.kind, read.recipient.recipient_id) == ("person", ON_CALL.user_id)
    assert (read.emergency_access_id, read.purpose) == (opened.emergency_access_id, "emergency")

    inside = await as_seen(casetrail, case, ON_CALL.user_id, after_read, "break-glass")
    assert inside.entitlement.emergency_access_id == opened.emergency_access_id
    assert inside.state.client_id == case.client_id
    assert [r.emergency_access_id for r in inside.reads] == [opened.emergency_access_id]
    assert (inside.user.team, inside.user.purpose) == (ON_CALL.team, "emergency")
    assert "team=emergency_access" in inside.user.derived_from
    before = await as_seen(
        casetrail,
        case,
        ON_CALL.user_id,
        before_opening,
        "no-relationship",
        user_role="social_worker",
        user_purpose="emergency",
    )
    assert not before.entitlement.allowed


async def test_a_legal_obligation_read_of_a_client_with_no_case_is_in_their_accounting(
    casetrail: Casetrail,
) -> None:
    """Intake records a read of a client with no case under the client's id: the accounting
    looked under their cases' only, so it said NOT_FOUND while they had none, and left the
    read out once a case was opened."""
    since = datetime.now(UTC)
    client = await casetrail.stubs.as_(RECEPTIONIST).intake.RegisterClient(registration())
    court = casetrail.stubs.as_(AUDITOR)
    await court.intake.GetClient(
        intake_pb2.GetClientRequest(context=query("legal_obligation"), client_id=client.client_id)
    )
    asked = audit_pb2.ListDisclosuresRequest(
        context=query(REVIEW), client_id=client.client_id, period_start=timestamp(since)
    )
    caseless = await eventually(
        lambda: court.audit.ListDisclosures(asked),
        lambda answer: answer.total_disclosures == 1,
        what="audit to learn of the read of a client with no case",
        patience=casetrail.patience,
    )
    (read,) = caseless.disclosures
    assert list(caseless.case_ids) == []
    assert (read.case_id, read.basis, read.disclosed_by.user_id) == (
        client.client_id,
        "legal_obligation",
        AUDITOR.user_id,
    )

    opened = await casetrail.stubs.as_(RECEPTIONIST).intake.OpenCase(
        intake_pb2.OpenCaseRequest(
            context=command(key()),
            client_id=client.client_id,
            referral_source=intake_pb2.ReferralSource(kind="self"),
            presenting_needs=[intake_pb2.PresentingNeed(category="housing")],
        )
    )
    with_case = await eventually(
        lambda: court.audit.ListDisclosures(asked),
        lambda answer: opened.result.case_id in answer.case_ids,
        what="audit to learn of the case",
        patience=casetrail.patience,
    )
    assert with_case.total_disclosures == 1
    assert [d.event_id for d in with_case.disclosures] == [read.event_id]
