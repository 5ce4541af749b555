"""A refusal of MakeReferral never names the need's category: a sensitive one (substance use,
mental health, health, domestic violence) is special data, and a refusal's message and details
reach callers' logs and proxies. The caller sent the category; the refusal names its field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import SensitiveCategory
from events.catalog.values import NeedCategory
from tests.unit.coordination.rpc import COUNSELING_CENTRE, refused
from tests.unit.coordination.support import IntakeFeed, Refusal, carried_by, command_context

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

SENSITIVE = [category.value for category in SensitiveCategory]
NEEDS = [need for need in SENSITIVE if need in set(NeedCategory)]
"""The sensitive categories a referral's need may be."""


def _referral(case_id: str, need: str, role: str = "case_manager", **fields: Any) -> Any:
    return pb.MakeReferralRequest(
        context=command_context(role),
        case_id=case_id,
        provider=COUNSELING_CENTRE,
        need_category=need,
        service="weekly sessions",
        urgency=fields.pop("urgency", "soon"),
        reason="asked for help",
        **fields,
    )


def _said(refusal: Refusal) -> str:
    """Everything a refusal tells: its message and each of its details."""
    return " ".join([refusal.message, *(str(detail) for detail in refusal.details)])


async def test_no_refusal_of_a_referral_names_a_sensitive_category(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1")
    await intake.open_case("case-closed", "client-2", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-closed")
    await intake.close_case("case-closed")

    for need in NEEDS:
        refusals = {
            # No consent at all, then one that covers the referral but names no category.
            "no consent": await refused(stub.MakeReferral(_referral("case-1", need))),
            "closed": await refused(stub.MakeReferral(_referral("case-closed", need))),
            "not theirs": await refused(
                stub.MakeReferral(_referral("case-1", need, role="social_worker"))
            ),
            "bad field": await refused(
                stub.MakeReferral(_referral("case-1", need, urgency="whenever"))
            ),
        }
        assert refusals["no consent"].rule == "CONSENT_REQUIRED"
        assert refusals["no consent"].metadata["category_field"] == "need_category"
        assert refusals["closed"].rule == "CASE_CLOSED"
        assert refusals["not theirs"].code is grpc.StatusCode.PERMISSION_DENIED
        assert refusals["bad field"].fields == ["urgency"]
        for what, refusal in refusals.items():
            for category in SENSITIVE:
                assert category not in _said(refusal), (need, what, category)

    await intake.consent("case-1", "client-1")
    for need in NEEDS:
        refusal = await refused(stub.MakeReferral(_referral("case-1", need)))
        assert refusal.rule == "CONSENT_REQUIRED", need
        for category in SENSITIVE:
            assert category not in _said(refusal), (need, category)


async def test_a_consent_refusal_reads_alike_whatever_the_need(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Were a sensitive need refused in other words than housing, the refusal would tell it.
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1")
    answers = {
        need: await refused(stub.MakeReferral(_referral("case-1", need)))
        for need in ("housing", "substance_use")
    }
    housing, substance_use = answers["housing"], answers["substance_use"]
    assert housing.rule == "CONSENT_REQUIRED"
    assert (substance_use.message, substance_use.metadata) == (housing.message, housing.metadata)
