"""Who may read the caseload views: a verified bearer token and the one access policy.

The views name cases (which worker holds which, whose follow-ups are overdue), so they answer
an authenticated caller the policy allows ``Action.READ_CASELOADS`` (auditors, for a
confidentiality review), as the gRPC services do: the token comes from the ``Authorization``
header, never from the query, and is checked by ``casetrail_platform.identity``'s verifier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from casetrail_platform.identity.errors import InvalidCredential, IssuerUnavailable
from casetrail_platform.identity.grpc_auth import AUTHORIZATION, bearer_token
from casetrail_platform.identity.principal import Principal
from casetrail_platform.identity.verifier import TokenVerifier
from casetrail_platform.policy.decide import decide
from casetrail_platform.policy.guard import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.vocabulary import Action
from events.catalog.access import AccessPurpose

DEFAULT_PURPOSE = AccessPurpose.CONFIDENTIALITY_REVIEW


class Refused(Exception):
    """Why a view is not answered: the HTTP status, the words, the rule or reason code."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class CaseloadGate:
    verifier: TokenVerifier | None
    """``None``: no issuer configured, so nobody can be authenticated and every view refuses."""
    home_agency: str = DEFAULT_HOME_AGENCY
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def admit(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Principal:
        """The caller, if the policy lets them read the caseloads; else ``Refused``."""
        if self.verifier is None:
            raise Refused(
                503,
                "no token issuer is configured: set CASETRAIL_OIDC_ISSUER and"
                " CASETRAIL_OIDC_AUDIENCE",
                "ISSUER_NOT_CONFIGURED",
            )
        header = headers.get("Authorization")
        try:
            token = bearer_token([] if header is None else [(AUTHORIZATION, header)])
            principal = await self.verifier.verify(token)
        except InvalidCredential as error:
            raise Refused(401, str(error), error.reason) from None
        except IssuerUnavailable as error:
            raise Refused(503, str(error), "ISSUER_UNAVAILABLE") from None
        text = query.get("purpose") or DEFAULT_PURPOSE.value
        try:
            purpose = AccessPurpose(text)
        except ValueError:
            known = ", ".join(p.value for p in AccessPurpose)
            raise Refused(400, f"purpose must be one of {known}", "PURPOSE_UNKNOWN") from None
        decision = decide(
            principal,
            Action.READ_CASELOADS,
            purpose,
            None,
            home_agency=self.home_agency,
            now=self.clock(),
        )
        if not decision.allowed:
            raise Refused(403, decision.reason, decision.rule.upper().replace("-", "_"))
        return principal
