"""What the console needs to run: where audit is, how tokens are checked, how sessions last."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from casetrail_platform.identity.development import DevelopmentSigner
from casetrail_platform.identity.keys import LOOPBACK
from casetrail_platform.identity.tls import ClientTls
from casetrail_platform.identity.verifier import TokenVerifier

DEFAULT_PORT = 7305
"""Next to the services' 7301-7304 (make run), below Linux's ephemeral range."""
SESSION_SECONDS = 30 * 60.0
"""A session ends 30 minutes after sign-in (or when its token expires, if sooner)."""
IDLE_SECONDS = 15 * 60.0
"""... and 15 minutes after its last request, if sooner (``CASETRAIL_CONSOLE_IDLE_MINUTES``)."""
IDLE_VARIABLE = "CASETRAIL_CONSOLE_IDLE_MINUTES"


def idle_seconds_from_env(environ: Mapping[str, str]) -> float:
    """The idle timeout ``CASETRAIL_CONSOLE_IDLE_MINUTES`` sets: whole minutes from 1 up to the
    session's own 30 (a longer one would never act); ``ValueError`` naming the variable."""
    text = environ.get(IDLE_VARIABLE, "").strip()
    if not text:
        return IDLE_SECONDS
    most = int(SESSION_SECONDS // 60)
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise ValueError(f"{IDLE_VARIABLE} must be a whole number of minutes from 1 to {most}")
    return int(text) * 60.0


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
    session_seconds: float = SESSION_SECONDS
    idle_seconds: float = IDLE_SECONDS
    secure_cookies: bool = False
    """Mark the session cookie ``Secure`` (set it whenever the console is behind HTTPS;
    ``start_console`` always does on a host other than loopback)."""
