"""The caseload views' gate: a verified bearer token and the access policy (no Kafka needed)."""

from __future__ import annotations

import pytest

from services.caseload.access import CaseloadGate, Refused
from tests.support.identity import TestIssuer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refusal(gate: CaseloadGate, headers: dict[str, str], query: dict[str, str]) -> Refused:
    with pytest.raises(Refused) as refused:
        await gate.admit(headers, query)
    return refused.value


async def test_an_auditor_is_admitted_for_a_confidentiality_review(issuer: TestIssuer) -> None:
    gate = CaseloadGate(issuer.verifier())
    principal = await gate.admit(bearer(issuer.mint("james.liu", "auditor")), {})
    assert (principal.subject, principal.role.value) == ("james.liu", "auditor")


async def test_everyone_else_is_refused_with_the_reason(issuer: TestIssuer) -> None:
    gate = CaseloadGate(issuer.verifier())
    auditor = bearer(issuer.mint("james.liu", "auditor"))
    cases = [
        ({}, {}, 401, "TOKEN_MISSING"),
        ({"Authorization": "Basic abc"}, {}, 401, "TOKEN_MALFORMED"),
        (bearer(issuer.mint("maria", "coordinator")), {}, 403, "ROLE_NOT_ALLOWED"),
        (bearer(issuer.mint("kim", "auditor", agency="elsewhere")), {}, 403, "NO_RELATIONSHIP"),
        (auditor, {"purpose": "supervision"}, 403, "PURPOSE_NOT_PERMITTED"),
        (auditor, {"purpose": "gossip"}, 400, "PURPOSE_UNKNOWN"),
    ]
    for headers, query, status, code in cases:
        refused = await refusal(gate, headers, query)
        assert (refused.status, refused.code) == (status, code), (headers, query)


async def test_without_an_issuer_nobody_is_admitted(issuer: TestIssuer) -> None:
    refused = await refusal(CaseloadGate(None), bearer(issuer.mint("j", "auditor")), {})
    assert (refused.status, refused.code) == (503, "ISSUER_NOT_CONFIGURED")
