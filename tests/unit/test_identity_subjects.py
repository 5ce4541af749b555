"""A token's subject cannot be one of the services' own actors (review of identity, h-authrev):
the trail tells a service's follow-ups and ledger records from people's by that actor."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from casetrail_platform.identity.claims import SERVICE_ACTOR_IDS
from casetrail_platform.identity.errors import InvalidCredential
from tests.support.identity import TestIssuer

ROOT = Path(__file__).resolve().parents[2]
_SERVICE_ACTOR = re.compile(r'Actor\(\s*"([^"]+)",\s*Role\.SYSTEM\s*\)')


@pytest.mark.parametrize(
    ("subject", "role"),
    [
        ("coordination", "system"),
        ("audit-ledger-witness", "system"),
        ("stand-in", "system"),
        ("Coordination", "system"),
        ("coordination", "coordinator"),
    ],
)
async def test_a_token_naming_a_service_s_own_actor_is_refused(
    issuer: TestIssuer, subject: str, role: str
) -> None:
    with pytest.raises(InvalidCredential) as refused:
        await issuer.verifier().verify(issuer.mint(subject, role))
    assert (refused.value.reason, refused.value.claim) == ("TOKEN_CLAIM_INVALID", "sub")
    assert subject not in str(refused.value)


async def test_a_machine_client_with_a_name_of_its_own_is_accepted(issuer: TestIssuer) -> None:
    principal = await issuer.verifier().verify(issuer.mint("batch-runner", "system"))
    assert (principal.subject, principal.role.value) == ("batch-runner", "system")


def test_every_actor_a_service_records_under_is_reserved() -> None:
    """A service that starts recording under a new actor id must reserve it too."""
    found = {
        name
        for folder in ("services", "casetrail_platform")
        for path in (ROOT / folder).rglob("*.py")
        for name in _SERVICE_ACTOR.findall(path.read_text())
    }
    assert found, "no service actor found: the pattern no longer matches how they are made"
    assert found <= SERVICE_ACTOR_IDS, found - SERVICE_ACTOR_IDS
