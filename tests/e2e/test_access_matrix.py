"""The authorization matrix (casetrail_platform/policy/matrix.py) row by row through the gRPC APIs,
on both backends: for each rule a caller who stands in its relationship reads with one of its
purposes and is answered (with or without the sensitive fields, as the row says) and recorded under
that rule; each refusal rule refuses a caller and names itself. Break-the-glass has its own tests
(it needs an emergency access opened first)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from casetrail_platform.policy import redaction
from casetrail_platform.policy.guard import REDACTED_KEY, RULE_KEY
from casetrail_platform.policy.matrix import REFUSALS, RULES
from cli.rpc import Person, Stubs, command, eventually, not_known_yet, query, refused
from cli.walk.story import (
    AUDITOR,
    COORDINATOR,
    HOME_CARE,
    INTAKE_WORKER,
    PARATRANSIT,
    RECEPTIONIST,
    SOCIAL_WORKER,
)
from services.coordination.entrypoints.grpc_server import CASE_SENSITIVE_PATHS as COORD_PATHS
from services.planning.entrypoints.grpc_server import CASE_VIEW_SENSITIVE_PATHS as VIEW_PATHS
from tests.e2e.conftest import Casetrail
from tests.e2e.support import Case, consent, learning, new_case, referred_and_accepted
from tests.support.cases import key

SUPERVISOR = Person("sup-grace-lee", "supervisor", team="team-east")
OTHER_WORKER = Person("sw-someone-else", "social_worker")
ON_CALL = Person("sw-on-call", "social_worker", team="team-west", entitlements=("break_glass",))
"""Not related to the case: reads it only under the emergency access opened for the test."""

Call = Callable[[Stubs, str, Case], Any]
"""One read RPC for a purpose on the case (a call, awaitable, with trailing metadata)."""


@dataclass(frozen=True)
class Read:
    call: Call
    source: str
    """The service that answers and records it."""
    paths: tuple[str, ...] | None
    """Where the sensitive fields sit in the answer (``None``: recorded per event type)."""


case_view = Read(
    lambda stubs, purpose, case: stubs.planning.GetCaseView(
        pl.GetCaseViewRequest(context=query(purpose), case_id=case.case_id)
    ),
    "casetrail/planning",
    VIEW_PATHS,
)
client = Read(
    lambda stubs, purpose, case: stubs.intake.GetClient(
        intake_pb2.GetClientRequest(context=query(purpose), client_id=case.client_id)
    ),
    "casetrail/intake",
    (),
)
timeline = Read(
    lambda stubs, purpose, case: stubs.audit.GetTimeline(
        audit_pb2.GetTimelineRequest(context=query(purpose), case_id=case.case_id)
    ),
    "casetrail/audit",
    None,
)
coordination = Read(
    lambda stubs, purpose, case: stubs.coordination.GetCaseCoordination(
        co.GetCaseCoordinationRequest(context=query(purpose), case_id=case.case_id)
    ),
    "casetrail/coordination",
    COORD_PATHS,
)
ledger_keys = Read(
    lambda stubs, purpose, case: stubs.audit.ListLedgerKeys(
        audit_pb2.ListLedgerKeysRequest(context=query(purpose))
    ),
    "casetrail/audit",
    None,
)


@dataclass(frozen=True)
class Row:
    rule: str
    who: Person | None
    """``None``: the case's client."""
    read: Read
    purpose: str
    sensitive: bool | None = None
    """Whether the answer keeps the sensitive fields (``None``: the read has none)."""
    recorded: bool = True


ROWS = [
    Row("assigned-worker", SOCIAL_WORKER, case_view, "direct_care", sensitive=True),
    Row("team-supervisor", SUPERVISOR, case_view, "supervision", sensitive=True),
    Row("agency-coordinator", COORDINATOR, case_view, "coordination", sensitive=False),
    Row("intake-worker", INTAKE_WORKER, case_view, "direct_care", sensitive=False),
    Row("front-desk", RECEPTIONIST, client, "direct_care"),
    Row("auditor-review", AUDITOR, timeline, "confidentiality_review"),
    Row("auditor-legal-obligation", AUDITOR, case_view, "legal_obligation", sensitive=True),
    Row("ledger-review", AUDITOR, ledger_keys, "confidentiality_review", recorded=False),
    Row("ledger-supervision", SUPERVISOR, ledger_keys, "supervision", recorded=False),
    # Its referral (home care) holds nothing sensitive; the needs are withheld as a section.
    Row("referral-recipient", HOME_CARE, coordination, "coordination", sensitive=True),
    Row("client-self", None, case_view, "client_request", sensitive=True),
    Row("break-glass", ON_CALL, case_view, "emergency", sensitive=True),
    Row("role-not-allowed", SOCIAL_WORKER, ledger_keys, "direct_care"),
    Row("no-relationship", OTHER_WORKER, case_view, "direct_care"),
    Row("purpose-not-permitted", COORDINATOR, case_view, "direct_care"),
]
"""One row per rule; consent-required is walked in test_access (grant, read, revoke, refused),
entitlement-required and emergency-access-expired in test_break_glass, sections-not-covered
in test_access_intake_gaps (a partner whose consent leaves out the client's identity),
sensitive-filter-not-permitted in test_access_planning_gaps (a coordinator's list filtered on a
sensitive need), and part-not-asked in tests/unit/test_caseload_access.py (a forged part of an
all-worker caseload view, recorded by audit for the caseload processor)."""


def test_every_rule_and_refusal_has_a_row() -> None:
    walked = {row.rule for row in ROWS}
    assert {rule.name for rule in RULES} <= walked
    assert set(REFUSALS) - walked == {
        "consent-required",
        "entitlement-required",
        "emergency-access-expired",
        "sections-not-covered",
        "sensitive-filter-not-permitted",
        "part-not-asked",
    }


@pytest.mark.asyncio(loop_scope="package")
async def test_every_row_through_the_grpc_apis(casetrail: Casetrail) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "home_care", "substance_use")
    await stubs.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(
            context=command(key()), case_id=case.case_id, worker_id=SOCIAL_WORKER.user_id
        )
    )
    await consent(casetrail, case, HOME_CARE.user_id)
    await referred_and_accepted(casetrail, case)
    the_client = Person(case.client_id, "client")
    await stubs.as_(ON_CALL).intake.OpenEmergencyAccess(
        intake_pb2.OpenEmergencyAccessRequest(
            context=command(key()),
            case_id=case.case_id,
            reason="Client found confused at home out of hours; need the medication notes",
        )
    )

    answered: dict[tuple[str, str, str], list[str] | None] = {}
    """(reader, rule, service) of each read answered and recorded: the sensitive paths shown."""
    for row in ROWS:
        caller = stubs.as_(row.who or the_client)
        if row.rule in REFUSALS:
            refusal = await refused(row.read.call(caller, row.purpose, case))
            assert refusal.code == grpc.StatusCode.PERMISSION_DENIED, row
            assert refusal.reason == row.rule.upper().replace("-", "_"), row
            continue

        async def answer(row: Row = row, caller: Stubs = caller) -> tuple[Any, dict[str, str]]:
            call = row.read.call(caller, row.purpose, case)
            response = await call
            return response, dict(await call.trailing_metadata())

        # Relationships travel over the bus (assignment, referral): wait until they are known.
        response, trailer = await eventually(
            answer, what=f"{row.rule} to hold", patience=casetrail.patience, retry=learning
        )
        # Every answer names the rule that decided, audit's (ledger's included) too.
        assert trailer[RULE_KEY] == row.rule, row
        if row.sensitive is not None:
            assert (REDACTED_KEY not in trailer) is row.sensitive, row
        if row.recorded:
            paths = row.read.paths
            shown = None if paths is None else redaction.present(response, paths)
            answered[((row.who or the_client).user_id, row.rule, row.read.source)] = shown

    # Every poll below adds a read of the log: one page holds them all (at most 1000).
    request = audit_pb2.GetAccessLogRequest(
        context=query("confidentiality_review"), case_id=case.case_id, page_size=1000
    )

    def reads(log: audit_pb2.GetAccessLogResponse) -> dict[tuple[str, str, str], list[str]]:
        return {
            (r.accessor.user_id, r.rule, r.source): sorted(r.fields)
            for r in log.records
            # Not the log reads themselves (the timeline shows the access log too).
            if list(r.sections) != ["access_log"]
        }

    log = await eventually(
        lambda: stubs.as_(AUDITOR).audit.GetAccessLog(request),
        lambda log: set(answered) <= set(reads(log)),
        what="audit to learn every access",
        patience=casetrail.patience,
    )
    recorded = reads(log)
    for read, shown in answered.items():
        if shown is not None:
            assert recorded[read] == sorted(shown), read
    # The ledger reads disclose no case content and are not recorded as accesses to it.
    assert not {rule for _, rule, _ in recorded} & {"ledger-review", "ledger-supervision"}


@pytest.mark.asyncio(loop_scope="package")
async def test_a_partner_sees_its_own_referral_and_nothing_of_another(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "home_care", "transportation")
    await consent(casetrail, case, HOME_CARE.user_id)
    await referred_and_accepted(casetrail, case)
    await consent(casetrail, case, PARATRANSIT.user_id)
    other = await eventually(
        lambda: stubs.as_(COORDINATOR).coordination.MakeReferral(
            co.MakeReferralRequest(
                context=command(key()),
                case_id=case.case_id,
                provider=co.Provider(provider_id=PARATRANSIT.user_id, name="Paratransit"),
                need_category="transportation",
                service="Rides to physiotherapy",
                urgency="routine",
                reason="Cannot drive since the fall",
            )
        ),
        what="coordination to learn the case",
        patience=casetrail.patience,
        retry=not_known_yet,
    )
    await stubs.as_(PARATRANSIT).coordination.AcceptReferral(
        co.AcceptReferralRequest(
            context=command(key()),
            case_id=case.case_id,
            referral_id=other.referral_id,
            provider_id=PARATRANSIT.user_id,
        )
    )
    everything = co.GetCaseCoordinationRequest(
        context=query("confidentiality_review"), case_id=case.case_id
    )
    await eventually(
        lambda: stubs.as_(AUDITOR).coordination.GetCaseCoordination(everything),
        lambda seen: [r.status for r in seen.referrals] == ["accepted", "accepted"],
        what="coordination to hold both referrals",
        patience=casetrail.patience,
    )
    for partner in (HOME_CARE, PARATRANSIT):

        async def read(partner: Person = partner) -> co.GetCaseCoordinationResponse:
            answer: co.GetCaseCoordinationResponse = await coordination.call(
                stubs.as_(partner), "coordination", case
            )
            return answer

        seen = await eventually(
            read,
            what=f"{partner.user_id}'s referral to be known",
            patience=casetrail.patience,
            retry=learning,
        )
        assert [r.provider.provider_id for r in seen.referrals] == [partner.user_id]
