"""What an issuer's JWKS may hold that must not sign anyone in (review of identity, h-authrev):
an RSA key under 2048 bits, a key whose ``key_ops`` does not allow ``verify``, a key id
published for two keys, a key replaced under the same key id, and what must not keep the good
keys out (the same key listed twice, a malformed entry). Each served by a real issuer over HTTP
on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from casetrail_platform.identity.errors import InvalidCredential
from casetrail_platform.identity.issuer_http import IssuerHttpServer
from casetrail_platform.identity.keys import IssuerKeys
from casetrail_platform.identity.tokens import SigningKey, mint
from casetrail_platform.identity.verifier import TokenVerifier

AUDIENCE = "casetrail-tests"


class Published:
    """A real issuer serving whatever JWKS entries the test puts in ``entries``."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._server = IssuerHttpServer(lambda: self.entries)
        self.url = self._server.url

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(IssuerKeys(self.url, min_refresh_interval=0.0), AUDIENCE)

    def token(self, key: SigningKey, key_id: str | None = None) -> str:
        token = mint(
            key, issuer=self.url, audience=AUDIENCE, subject="kim", role="auditor",
            agency="eastbay-dss",
        )  # fmt: skip
        if key_id is None:
            return token
        import jwt

        claims = jwt.decode(token, options={"verify_signature": False})
        headers = {"kid": key_id, "typ": "at+jwt"}
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)

    def stop(self) -> None:
        self._server.stop()


@contextmanager
def published(*entries: dict[str, Any]) -> Iterator[Published]:
    issuer = Published()
    issuer.entries.extend(entries)
    try:
        yield issuer
    finally:
        issuer.stop()


async def _reason(verifier: TokenVerifier, token: str) -> str:
    try:
        await verifier.verify(token)
    except InvalidCredential as refusal:
        return refusal.reason
    return "ACCEPTED"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_an_rsa_key_under_2048_bits_signs_nobody_in() -> None:
    short = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=1024), "RS256")
    good = SigningKey.generate("RS256")
    with published(short.public_jwk(), good.public_jwk()) as issuer:
        verifier = issuer.verifier()
        assert await _reason(verifier, issuer.token(good)) == "ACCEPTED"
        assert await _reason(verifier, issuer.token(short)) == "TOKEN_KEY_UNKNOWN"


@pytest.mark.parametrize(
    ("operations", "reason"),
    [
        (["verify"], "ACCEPTED"),
        (["sign", "verify"], "ACCEPTED"),
        (["encrypt"], "TOKEN_KEY_UNKNOWN"),
        (["wrapKey", "unwrapKey"], "TOKEN_KEY_UNKNOWN"),
        ([], "TOKEN_KEY_UNKNOWN"),
        ("verify", "TOKEN_KEY_UNKNOWN"),
    ],
)
async def test_a_key_whose_key_ops_do_not_allow_verify_signs_nobody_in(
    operations: object, reason: str
) -> None:
    key, other = SigningKey.generate("ES256"), SigningKey.generate("ES256")
    # Another key keeps the JWKS non-empty: the refusal is of this key, not of an empty set.
    with published(key.public_jwk() | {"key_ops": operations}, other.public_jwk()) as issuer:
        assert await _reason(issuer.verifier(), issuer.token(key)) == reason


async def test_the_same_key_listed_twice_still_signs_in() -> None:
    key, other = SigningKey.generate("ES256"), SigningKey.generate("ES256")
    with published(key.public_jwk(), other.public_jwk(), key.public_jwk()) as issuer:
        assert await _reason(issuer.verifier(), issuer.token(key)) == "ACCEPTED"


async def test_a_key_id_published_for_two_keys_signs_nobody_in() -> None:
    first, second, other = (SigningKey.generate("ES256") for _ in range(3))
    twice = first.key_id
    with published(
        first.public_jwk(), second.public_jwk() | {"kid": twice}, other.public_jwk()
    ) as issuer:
        verifier = issuer.verifier()
        assert await _reason(verifier, issuer.token(first)) == "TOKEN_KEY_UNKNOWN"
        assert await _reason(verifier, issuer.token(second, twice)) == "TOKEN_KEY_UNKNOWN"
        assert await _reason(verifier, issuer.token(other)) == "ACCEPTED"


async def test_a_remembered_token_is_refused_once_its_key_id_names_another_key() -> None:
    """The issuer replaces the key behind a key id (a rotation that reuses the id): tokens the
    old key signed must stop working, remembered or not."""
    old, new = SigningKey.generate("ES256"), SigningKey.generate("ES256")
    with published(old.public_jwk()) as issuer:
        keys = IssuerKeys(issuer.url, min_refresh_interval=0.0)
        verifier = TokenVerifier(keys, AUDIENCE)
        token = issuer.token(old)
        assert await _reason(verifier, token) == "ACCEPTED"
        issuer.entries[:] = [new.public_jwk() | {"kid": old.key_id}]
        assert await keys.refresh()
        assert await _reason(verifier, token) == "TOKEN_BAD_SIGNATURE"
        assert await _reason(verifier, issuer.token(new, old.key_id)) == "ACCEPTED"


@pytest.mark.parametrize(
    "odd",
    [
        {"kty": ["EC"], "crv": "P-256", "kid": "odd"},
        {"kty": "EC", "crv": {"name": "P-256"}, "kid": "odd"},
        {"kty": "EC", "crv": "P-256", "alg": ["ES256"], "kid": "odd"},
        {"kty": {"RSA": 1}, "kid": "odd"},
    ],
)
async def test_one_malformed_entry_leaves_the_issuer_s_other_keys_working(
    odd: dict[str, Any],
) -> None:
    key = SigningKey.generate("ES256")
    with published(odd, key.public_jwk()) as issuer:
        assert await _reason(issuer.verifier(), issuer.token(key)) == "ACCEPTED"
