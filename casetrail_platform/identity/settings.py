"""Which issuer the services trust, from the environment (the distributed backend, or the
embedded one pointed at a real issuer):

- ``CASETRAIL_OIDC_ISSUER``: the issuer URL (``iss``); its discovery document
  (``/.well-known/openid-configuration``) names the JWKS.
- ``CASETRAIL_OIDC_AUDIENCE``: the audience (``aud``) tokens must be for.
- ``CASETRAIL_OIDC_JWKS_URL`` (optional): the JWKS URL, instead of discovery.
- ``CASETRAIL_OIDC_CA_FILE`` (optional): CA bundle for the issuer's HTTPS certificate.
- ``CASETRAIL_OIDC_KEYS_MAX_AGE`` (optional): seconds the last keys fetched keep checking
  tokens while the issuer cannot be reached (``DEFAULT_KEYS_MAX_AGE``, a day; from
  ``MIN_KEYS_MAX_AGE`` to ``MAX_KEYS_MAX_AGE``).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from casetrail_platform.identity.keys import (
    DEFAULT_KEYS_MAX_AGE,
    IssuerKeys,
    http_json,
    require_https,
)
from casetrail_platform.identity.verifier import TokenVerifier
from casetrail_platform.typed_numbers import ascii_decimal

MIN_KEYS_MAX_AGE = 600.0
"""Ten minutes: twice the keys' refresh period, so one failed refresh refuses no token."""
MAX_KEYS_MAX_AGE = 7 * 24 * 3600.0
"""A week: longer, a key the issuer withdrew would stay usable for longer than most agencies
allow a leaver's access to outlive them."""


@dataclass(frozen=True)
class IssuerSettings:
    issuer: str
    audience: str
    jwks_url: str = ""
    ca_file: str = ""
    keys_max_age: float = DEFAULT_KEYS_MAX_AGE

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> IssuerSettings | None:
        """The configured issuer, or ``None`` when ``CASETRAIL_OIDC_ISSUER`` is not set."""
        issuer = env.get("CASETRAIL_OIDC_ISSUER", "")
        if not issuer:
            return None
        settings = cls(
            issuer,
            env.get("CASETRAIL_OIDC_AUDIENCE", ""),
            env.get("CASETRAIL_OIDC_JWKS_URL", ""),
            env.get("CASETRAIL_OIDC_CA_FILE", ""),
            _keys_max_age(env.get("CASETRAIL_OIDC_KEYS_MAX_AGE", "")),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not self.audience:
            raise ValueError("CASETRAIL_OIDC_AUDIENCE is required with CASETRAIL_OIDC_ISSUER")
        for name, url in (("issuer", self.issuer), ("JWKS URL", self.jwks_url)):
            if url:
                require_https(url, name)

    def verifier(self) -> TokenVerifier:
        context = ssl.create_default_context(cafile=self.ca_file or None)
        keys = IssuerKeys(
            self.issuer, self.jwks_url, fetch=http_json(context), keys_max_age=self.keys_max_age
        )
        return TokenVerifier(keys, self.audience)


def _keys_max_age(text: str) -> float:
    if not text:
        return DEFAULT_KEYS_MAX_AGE
    seconds = ascii_decimal(text)
    if seconds is None or not MIN_KEYS_MAX_AGE <= seconds <= MAX_KEYS_MAX_AGE:
        raise ValueError(
            f"CASETRAIL_OIDC_KEYS_MAX_AGE must be a number of seconds from"
            f" {MIN_KEYS_MAX_AGE:g} to {MAX_KEYS_MAX_AGE:g}"
        )
    return seconds
