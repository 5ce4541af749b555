"""What the console needs to run: where audit is, how tokens are checked, how sessions last."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from casetrail_platform.grpc_platform.server import require_tls_beyond_loopback
from casetrail_platform.identity.development import DevelopmentSigner
from casetrail_platform.identity.keys import LOOPBACK
from casetrail_platform.identity.tls import (
    ClientTls,
    ServerTls,
    require_tls_beyond_loopback_target,
)
from casetrail_platform.identity.verifier import TokenVerifier
from casetrail_platform.typed_numbers import ascii_whole_number

DEFAULT_PORT = 7305
"""Next to the services' 7301-7304 (make run), below Linux's ephemeral range."""
SESSION_SECONDS = 30 * 60.0
"""A session ends 30 minutes after sign-in (or when its token expires, if sooner)."""
IDLE_SECONDS = 15 * 60.0
"""... and 15 minutes after its last request, if sooner (``CASETRAIL_CONSOLE_IDLE_MINUTES``)."""
IDLE_VARIABLE = "CASETRAIL_CONSOLE_IDLE_MINUTES"
AUDIT_CALL_SECONDS = 30.0
"""How long a page waits for each of audit's answers (the export's stream aside): a page of the
timeline takes well under a second, a whole case's state a few (bench/RESULTS.md)."""
ALLOW_PLAINTEXT = "CASETRAIL_CONSOLE_ALLOW_PLAINTEXT"
"""``1``: the console may serve plain HTTP beyond loopback (a reverse proxy or ingress serves
it over HTTPS in front); ``0`` or unset: without a certificate it listens on loopback only."""


def idle_seconds_from_env(environ: Mapping[str, str]) -> float:
    """The idle timeout ``CASETRAIL_CONSOLE_IDLE_MINUTES`` sets: whole minutes from 1 up to the
    session's own 30 (a longer one would never act); ``ValueError`` naming the variable."""
    text = environ.get(IDLE_VARIABLE, "").strip()
    if not text:
        return IDLE_SECONDS
    most = int(SESSION_SECONDS // 60)
    minutes = ascii_whole_number(text)
    if minutes is None or not 1 <= minutes <= most:
        raise ValueError(f"{IDLE_VARIABLE} must be a whole number of minutes from 1 to {most}")
    return minutes * 60.0


def development_sign_in_refusal(host: str) -> str | None:
    """Why the development sign-in must not be served on ``host`` (``None``: it may be).

    The development sign-in mints a token for any name typed in: anyone who can reach the
    page could then read every case as an auditor. So it is served on loopback only, by
    ``casetrail console``, by ``casetrail serve`` and by ``start_console`` itself.
    """
    if host in LOOPBACK:
        return None
    return (
        f"refusing to serve the development sign-in on {host}: it is served on loopback only"
        f" ({', '.join(sorted(LOOPBACK))}); set CASETRAIL_OIDC_ISSUER (and _AUDIENCE) to sign"
        " in with a real issuer elsewhere"
    )


def require_https_beyond_loopback(
    host: str, https: ServerTls | None, *, plaintext_allowed: bool
) -> None:
    """``PlaintextRefused`` (a ``ValueError``) for plain HTTP on a host other than loopback
    without ``ALLOW_PLAINTEXT``: the sign-in form carries a bearer token and every request the
    session cookie, which anyone on the way could read and use. The gRPC servers' rule
    (``CASETRAIL_GRPC_ALLOW_PLAINTEXT``), with the console's own setting."""
    require_tls_beyond_loopback(
        host,
        https,
        plaintext_allowed=plaintext_allowed,
        listener="the audit console",
        setting=ALLOW_PLAINTEXT,
        terminated_by="a reverse proxy or ingress serves it over HTTPS in front",
        certificate_from="CASETRAIL_TLS_CERT/_KEY, or casetrail serve's --tls-cert/--tls-key",
    )


@dataclass(frozen=True)
class ConsoleSettings:
    """``verifier`` checks sign-in tokens exactly as the services check every call's token.

    ``development_signer`` is set only on the embedded default: the sign-in page then also
    offers a DEVELOPMENT ONLY form that mints a token with the development issuer's key.
    """

    audit_address: str
    verifier: TokenVerifier
    development_signer: DevelopmentSigner | None = None
    tls: ClientTls | None = None
    """How the console reaches audit (``CASETRAIL_TLS_CA``, client certificate for mutual TLS)."""
    audit_plaintext_allowed: bool = False
    """Audit beyond loopback may be dialled without ``tls``
    (``CASETRAIL_GRPC_ALLOW_PLAINTEXT=1``: a mesh's sidecar terminates TLS on the way);
    otherwise such settings are refused (``PlaintextRefused``) as they are made: every
    auditor's bearer token goes to audit."""
    https: ServerTls | None = None
    """The console's own listener over HTTPS: the services' certificate settings
    (``CASETRAIL_TLS_CERT``/``_KEY``, mutual with ``CASETRAIL_TLS_CLIENT_CA``)."""
    plaintext_allowed: bool = False
    """Plain HTTP beyond loopback allowed (``ALLOW_PLAINTEXT``)."""
    audit_seconds: float = AUDIT_CALL_SECONDS
    """Each unary call to audit is given up after this long (the page then says so, 504)."""
    session_seconds: float = SESSION_SECONDS
    idle_seconds: float = IDLE_SECONDS
    secure_cookies: bool = False
    """Mark the session cookie ``Secure`` (set it whenever the console is behind HTTPS;
    ``start_console`` always does with ``https`` or on a host other than loopback)."""

    def __post_init__(self) -> None:
        require_tls_beyond_loopback_target(
            self.audit_address, self.tls, plaintext_allowed=self.audit_plaintext_allowed
        )
