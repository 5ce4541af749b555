"""Who may read the caseload views: a verified bearer token, and audit's decision.

The views name cases (which worker holds which, whose follow-ups are overdue), so they answer
only an authenticated caller, as the gRPC services do: the token comes from the ``Authorization``
header, never from the query, and is checked by ``casetrail_platform.identity``'s verifier. The
access policy's decision (``Action.READ_CASELOADS``: auditors, for a confidentiality review) is
audit's, made when it records the read (``recording``), so that refusals are on record too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from casetrail_platform.identity.errors import (
    CERTIFICATE_MISMATCH,
    InvalidCredential,
    IssuerUnavailable,
)
from casetrail_platform.identity.grpc_auth import AUTHORIZATION, bearer_token
from casetrail_platform.identity.principal import Principal
from casetrail_platform.identity.verifier import TokenVerifier
from events.catalog.access import AccessPurpose

DEFAULT_PURPOSE = AccessPurpose.CONFIDENTIALITY_REVIEW


class Refused(Exception):
    """Why a view is not answered: the HTTP status, the words, the rule or reason code, and
    when to ask again (``Retry-After``) if the refusal says."""

    def __init__(
        self, status: int, message: str, code: str, retry_after_seconds: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True)
class Caller:
    """A verified reader: who, the token that says so (sent on to audit) and the purpose."""

    principal: Principal
    token: str
    purpose: AccessPurpose


@dataclass
class CaseloadGate:
    verifier: TokenVerifier | None
    """``None``: no issuer configured, so nobody can be authenticated and every view refuses."""

    async def admit(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Caller:
        """The verified caller and the purpose they state; else ``Refused``."""
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
        if principal.certificate_thumbprint is not None:
            # Such a token is good only with its certificate (cnf, RFC 8705), which nothing
            # here can check: the read goes on to audit over caseload's own client certificate,
            # so a token bound to that one would work for whoever sent it (as at the console).
            raise Refused(
                401,
                "the token is bound to a client certificate (cnf), which the caseload views"
                " cannot present for it: use a token not bound to a certificate",
                CERTIFICATE_MISMATCH,
            )
        text = query.get("purpose") or DEFAULT_PURPOSE.value
        try:
            purpose = AccessPurpose(text)
        except ValueError:
            known = ", ".join(p.value for p in AccessPurpose)
            raise Refused(400, f"purpose must be one of {known}", "PURPOSE_UNKNOWN") from None
        return Caller(principal, token, purpose)
