"""Which issuer the services trust, from the environment (the distributed backend, or the
embedded one pointed at a real issuer):

- ``CASETRAIL_OIDC_ISSUER``: the issuer URL (``iss``); its discovery document
  (``/.well-known/openid-configuration``) names the JWKS.
- ``CASETRAIL_OIDC_AUDIENCE``: the audience (``aud``) tokens must be for.
- ``CASETRAIL_OIDC_JWKS_URL`` (optional): the JWKS URL, instead of discovery.
- ``CASETRAIL_OIDC_CA_FILE`` (optional): CA bundle for the issuer's HTTPS certificate.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from casetrail_platform.identity.keys import IssuerKeys, http_json, require_https
from casetrail_platform.identity.verifier import TokenVerifier


@dataclass(frozen=True)
class IssuerSettings:
    issuer: str
    audience: str
    jwks_url: str = ""
    ca_file: str = ""

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
        keys = IssuerKeys(self.issuer, self.jwks_url, fetch=http_json(context))
        return TokenVerifier(keys, self.audience)
