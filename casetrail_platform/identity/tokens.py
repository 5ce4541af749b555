"""Signing keys and tokens for issuers casetrail runs itself: the local development issuer and
the tests' issuer. Production tokens come from the organisation's OIDC provider instead."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from casetrail_platform.identity import claims

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


@dataclass(frozen=True)
class SigningKey:
    """A private key, its algorithm and its key id (the RFC 7638 thumbprint of its public
    half, so the same key always has the same id)."""

    private_key: PrivateKey
    algorithm: str

    @classmethod
    def generate(cls, algorithm: str = "ES256") -> SigningKey:
        if algorithm == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()), algorithm)
        if algorithm == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate(), algorithm)
        if algorithm == "RS256":
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm)
        raise ValueError(f"no signing key for {algorithm}")

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return cls(key, "ES256")
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return cls(key, "EdDSA")
        if isinstance(key, rsa.RSAPrivateKey):
            return cls(key, "RS256")
        raise ValueError("the signing key must be a P-256, Ed25519 or RSA private key")

    def pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK with ``kid``, ``alg`` and ``use``."""
        public = self.private_key.public_key()
        jwk: dict[str, Any]
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ed25519.Ed25519PublicKey):
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
        thumbprint = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=")
        return jwk | {"kid": thumbprint.decode(), "alg": self.algorithm, "use": "sig"}

    @property
    def key_id(self) -> str:
        return str(self.public_jwk()["kid"])


def mint(
    key: SigningKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    role: str,
    agency: str,
    team: str | None = None,
    entitlements: Iterable[str] = (),
    lifetime_seconds: float = 3600.0,
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A signed token carrying casetrail's claims (see ``casetrail_platform.identity.claims``)."""
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        claims.SUBJECT: subject,
        claims.ROLE: role,
        claims.AGENCY: agency,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime_seconds),
        "jti": uuid.uuid4().hex,
    }
    if team is not None:
        payload[claims.TEAM] = team
    granted = sorted(entitlements)
    if granted:
        payload[claims.ENTITLEMENTS] = granted
    payload.update(extra or {})
    return jwt.encode(
        payload,
        key.private_key,
        algorithm=key.algorithm,
        headers={"kid": key.key_id, "typ": "at+jwt"},
    )
