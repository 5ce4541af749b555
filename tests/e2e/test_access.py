"""Need-to-know through the gRPC APIs: consent gates what a partner agency sees, a revocation
refuses its next read, and every read answered is on the record with exactly the sensitive
fields it showed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from casetrail_platform.policy import redaction
from casetrail_platform.policy.guard import REDACTED_KEY
from cli.rpc import command, eventually, query, refused
from cli.walk.story import (
    AUDITOR,
    COORDINATOR,
    HOME_CARE,
    INTAKE_WORKER,
    RECEPTIONIST,
    SOCIAL_WORKER,
)
from services.coordination.entrypoints.grpc_server import CASE_SENSITIVE_PATHS as COORD_PATHS
from services.intake.entrypoints.grpc_server import CASE_SENSITIVE_PATHS as INTAKE_PATHS
from services.planning.entrypoints.grpc_server import CASE_VIEW_SENSITIVE_PATHS as VIEW_PATHS
from tests.e2e.conftest import Casetrail
from tests.e2e.support import (
    PARTNER,
    Case,
    assessed,
    consent,
    learning,
    new_case,
    referred_and_accepted,
)
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_consent_gates_the_partner_and_revocation_refuses_its_next_read(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "home_care")
    await assessed(casetrail, case)
    consent_id = await consent(casetrail, case, PARTNER)
    await referred_and_accepted(casetrail, case)

    # The partner sees the referred scope only: its referral and services, not the needs,
    # the assessment or who carries the case.
    partner_read = co.GetCaseCoordinationRequest(
        context=query("coordination"), case_id=case.case_id
    )
    partner = stubs.as_(HOME_CARE)
    seen = await eventually(
        lambda: partner.coordination.GetCaseCoordination(partner_read),
        what="coordination to learn the accepted referral",
        patience=casetrail.patience,
        retry=learning,
    )
    assert [r.provider.provider_id for r in seen.referrals] == [PARTNER]
    assert (list(seen.needs), seen.worker_id) == ([], "")

    at_intake = intake_pb2.GetCaseRequest(context=query("coordination"), case_id=case.case_id)
    record = (
        await eventually(
            lambda: partner.intake.GetCase(at_intake),
            what="intake to learn the accepted referral",
            patience=casetrail.patience,
            retry=learning,
        )
    ).record
    assert record.client.client_id == case.client_id
    assert (list(record.assessments), list(record.presenting_needs)) == ([], [])
    await stubs.as_(INTAKE_WORKER).intake.RevokeConsent(
        intake_pb2.RevokeConsentRequest(
            context=command(key()), case_id=case.case_id, consent_id=consent_id
        )
    )
    # Intake holds the consent: the very next read is refused, and the refusal recorded.
    refusal = await refused(partner.intake.GetCase(at_intake))
    assert refusal.code == grpc.StatusCode.PERMISSION_DENIED
    assert refusal.reason == "CONSENT_REQUIRED"

    who = audit_pb2.WhoDidWhatRequest(
        context=query("confidentiality_review"), case_id=case.case_id, actor_id=PARTNER
    )
    auditor = stubs.as_(AUDITOR)
    activity = await eventually(
        lambda: auditor.audit.WhoDidWhat(who),
        lambda answer: (
            [a.event_type for a in answer.activities].count("casetrail.record.accessed") >= 2
            and any(a.event_type == "casetrail.record.access_denied" for a in answer.activities)
        ),
        what="audit to learn of the refusal",
        patience=casetrail.patience,
    )
    kinds = [a.event_type for a in activity.activities]
    assert kinds.count("casetrail.record.accessed") >= 2
    log = await auditor.audit.GetAccessLog(
        audit_pb2.GetAccessLogRequest(
            context=query("confidentiality_review"), case_id=case.case_id, page_size=1000
        )
    )
    partner_reads = [r for r in log.records if r.accessor.user_id == PARTNER]
    assert partner_reads
    assert {r.consent_id for r in partner_reads} == {consent_id}
    assert {r.rule for r in partner_reads} == {"referral-recipient"}


async def test_every_read_answered_is_recorded_with_the_sensitive_fields_it_showed(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "home_care", "substance_use")
    await assessed(casetrail, case)
    view = pl.GetCaseViewRequest(context=query("confidentiality_review"), case_id=case.case_id)
    auditor, coordinator = stubs.as_(AUDITOR), stubs.as_(COORDINATOR)
    await eventually(
        lambda: auditor.planning.GetCaseView(view),
        lambda found: len(found.needs) == 2,
        what="planning to learn the case",
        patience=casetrail.patience,
    )
    started = datetime.now(UTC)

    answered: list[tuple[str, list[str], list[str]]] = []
    """(reader, sensitive fields shown, fields withheld) for every read answered."""

    async def read(reader: str, call: Any, paths: tuple[str, ...]) -> Any:
        response = await call
        trailer = dict(await call.trailing_metadata())
        withheld = [p for p in trailer.get(REDACTED_KEY, "").split(",") if p]
        answered.append((reader, redaction.present(response, paths), withheld))
        return response

    await read(
        AUDITOR.user_id,
        auditor.intake.GetCase(
            intake_pb2.GetCaseRequest(context=query("confidentiality_review"), case_id=case.case_id)
        ),
        INTAKE_PATHS,
    )
    await read(
        COORDINATOR.user_id,
        coordinator.intake.GetCase(
            intake_pb2.GetCaseRequest(context=query("coordination"), case_id=case.case_id)
        ),
        INTAKE_PATHS,
    )
    await read(AUDITOR.user_id, auditor.planning.GetCaseView(view), VIEW_PATHS)
    await read(
        COORDINATOR.user_id,
        coordinator.coordination.GetCaseCoordination(
            co.GetCaseCoordinationRequest(context=query("coordination"), case_id=case.case_id)
        ),
        COORD_PATHS,
    )
    # Who a client is, and the duplicate search that finds them, are reads of the case too.
    client = (
        await read(
            AUDITOR.user_id,
            auditor.intake.GetClient(
                intake_pb2.GetClientRequest(
                    context=query("confidentiality_review"), client_id=case.client_id
                )
            ),
            (),
        )
    ).client
    found = await read(
        RECEPTIONIST.user_id,
        stubs.as_(RECEPTIONIST).intake.FindPossibleDuplicates(
            intake_pb2.FindPossibleDuplicatesRequest(
                context=query("direct_care"), identifiers=client.identifiers
            )
        ),
        (),
    )
    assert [c.client_id for c in found.candidates] == [case.client_id]
    # A read refused is no read answered (it is recorded as refused).
    await refused(
        stubs.as_(SOCIAL_WORKER).planning.GetCaseView(
            pl.GetCaseViewRequest(context=query("direct_care"), case_id=case.case_id)
        )
    )

    # What the auditor saw has its sensitive fields; what the coordinator saw has none of them
    # and is told which were withheld.
    assert answered[0][1]
    assert not answered[0][2]
    assert not answered[1][1]
    assert answered[1][2]
    new = await recorded_accesses(casetrail, case, since=started, expect=len(answered))
    assert sorted(
        (r.accessor.user_id, sorted(r.fields), sorted(r.redacted_fields)) for r in new
    ) == sorted((reader, sorted(shown), sorted(withheld)) for reader, shown, withheld in answered)


async def recorded_accesses(
    casetrail: Casetrail, case: Case, *, since: datetime, expect: int
) -> list[audit_pb2.AccessRecord]:
    """The case's accesses since ``since`` as audit has them (once ``expect`` have arrived),
    not counting the log reads themselves."""
    # Every poll below adds a read of the log: one page holds them all (at most 1000).
    request = audit_pb2.GetAccessLogRequest(
        context=query("confidentiality_review"), case_id=case.case_id, page_size=1000
    )

    def new(log: audit_pb2.GetAccessLogResponse) -> list[audit_pb2.AccessRecord]:
        return [
            r
            for r in log.records
            if "access_log" not in r.sections and r.occurred_at.ToDatetime(tzinfo=UTC) >= since
        ]

    log = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetAccessLog(request),
        lambda answer: len(new(answer)) >= expect,
        what="audit to learn of every access",
        patience=casetrail.patience,
    )
    return new(log)
