"""Why a caller was not authenticated: each refusal names its reason for the status details."""

from __future__ import annotations

CERTIFICATE_MISMATCH = "TOKEN_CERTIFICATE_MISMATCH"
"""The reason for a token bound to a client certificate (``cnf`` ``x5t#S256``, RFC 8705) that
came without that certificate: the gRPC services' refusal, and the caseload views', which can
never check one (their reads are recorded in audit over caseload's own certificate)."""


class InvalidCredential(Exception):
    """The call carries no usable bearer token; answered as ``UNAUTHENTICATED``.

    ``reason`` is a stable code for ``google.rpc.ErrorInfo`` (``TOKEN_EXPIRED``, ...); the
    message says what is wrong in words, and never repeats the token or a claim's value.
    """

    def __init__(self, reason: str, message: str, claim: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.claim = claim
        """The claim that broke its rule (``TOKEN_CLAIM_INVALID``), when one did."""


class IssuerUnavailable(Exception):
    """The issuer's signing keys could not be fetched yet; answered as ``UNAVAILABLE`` (the
    caller may retry), since no token can be checked."""
