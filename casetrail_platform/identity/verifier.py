"""Checking a bearer token: signature with the issuer's published key, then issuer, audience,
expiry and not-before (small clock skew), then the claims casetrail reads."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from casetrail_platform.identity.claims import (
    SUBJECT,
    UNIT_RULE,
    invalid_claim,
    principal_from_claims,
)
from casetrail_platform.identity.errors import InvalidCredential
from casetrail_platform.identity.keys import SIGNING_ALGORITHMS, IssuerKeys
from casetrail_platform.identity.principal import Principal

MAX_TOKEN_BYTES = 8192
MAX_HEADER_CHARACTERS = 1024
DEFAULT_LEEWAY_SECONDS = 30.0
DEFAULT_MAX_LIFETIME_SECONDS = 24 * 3600.0
"""The longest a token may be valid (``exp`` after ``iat``, or after now without ``iat``):
a token minted for a century would otherwise outlive any key rotation or revocation."""
MAX_TIMESTAMP = 253_402_300_799
"""9999-12-31T23:59:59Z: a time claim beyond it is no moment the services can store."""
TIME_CLAIMS = ("exp", "iat", "nbf")
TIME_CLAIM_RULE = "must be a number of seconds up to the year 9999"
_MISTYPED_TIME_CLAIM = re.compile(r"\((exp|iat|nbf)\) must be an integer")
"""How PyJWT tells a time claim that is no number (a DecodeError for ``exp`` and ``nbf``, an
InvalidIssuedAtError for ``iat``), which it checks before ours: named like ours, not as a
malformed token."""
ACCESS_TOKEN_TYPE_SUFFIX = "at+jwt"
"""A declared ``typ`` header must be ``JWT`` or end with ``at+jwt`` (RFC 9068 §2.1's
``at+jwt`` / ``application/at+jwt``, and issuers' own access-token types such as
``application/okta-internal-at+jwt``), compared without case. Any other declared type
(``logout+jwt``, ``secevent+jwt``, ``dpop+jwt``...) is a token the issuer minted for another use,
signed by the same key: replayed here it must not authenticate. A token with no ``typ`` is taken
as a plain JWT, as most issuers mint them."""

_REFUSALS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt_errors.ExpiredSignatureError, "TOKEN_EXPIRED", "the token has expired"),
    (jwt_errors.ImmatureSignatureError, "TOKEN_NOT_YET_VALID", "the token is not valid yet"),
    (jwt_errors.InvalidIssuerError, "TOKEN_WRONG_ISSUER", "the token is from another issuer"),
    (jwt_errors.InvalidAudienceError, "TOKEN_WRONG_AUDIENCE", "the token is not for casetrail"),
    (jwt_errors.MissingRequiredClaimError, "TOKEN_CLAIM_MISSING", "the token lacks a claim"),
    (jwt_errors.InvalidSignatureError, "TOKEN_BAD_SIGNATURE", "the token's signature is wrong"),
    (jwt_errors.InvalidAlgorithmError, "TOKEN_ALGORITHM_REFUSED", "the algorithm is refused"),
    (jwt_errors.DecodeError, "TOKEN_MALFORMED", "the token is not a well-formed JWT"),
    (jwt_errors.PyJWTError, "TOKEN_INVALID", "the bearer token is not valid"),
)
"""PyJWT's errors, most specific first, as our reasons and messages."""


def is_token_text(token: str) -> bool:
    """Printable ASCII without spaces, as every bearer token is (RFC 6750's ``b64token``; a
    JWT is base64url and dots). Anything else is refused before PyJWT, which encodes the text
    as UTF-8: a byte of a header that is not UTF-8 (aiohttp keeps it as a lone surrogate) raised
    UnicodeEncodeError there, a 500."""
    return token.isascii() and token.isprintable() and " " not in token


def _header_of(token: str) -> dict[str, Any]:
    """The token's header, read only to choose the key (PyJWT checks it again, with the
    signature). Our own few lines: PyJWT's reader validates the whole token's base64 a
    character at a time, and would do so twice per token (bench/RESULTS.md, issue 9)."""
    segments = token.split(".")
    if len(segments) != 3 or not segments[0] or len(segments[0]) > MAX_HEADER_CHARACTERS:
        raise InvalidCredential("TOKEN_MALFORMED", "the bearer token is not a well-formed JWT")
    try:
        encoded = segments[0].encode("ascii")
        header = json.loads(base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4)))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise InvalidCredential(
            "TOKEN_MALFORMED", "the bearer token's header is not base64url JSON"
        ) from None
    if not isinstance(header, dict):
        raise InvalidCredential("TOKEN_MALFORMED", "the bearer token's header is not an object")
    return header


def _mistyped_time_claim(error: jwt_errors.PyJWTError) -> str | None:
    """The time claim ``error`` refuses for not being a number, if that is what it says."""
    if not isinstance(error, jwt_errors.DecodeError | jwt_errors.InvalidIssuedAtError):
        return None
    found = _MISTYPED_TIME_CLAIM.search(str(error))
    return None if found is None else found.group(1)


def _access_token_type(declared: str) -> bool:
    lowered = declared.lower()
    return lowered == "jwt" or lowered.endswith(ACCESS_TOKEN_TYPE_SUFFIX)


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    expires_at: float
    keys_version: int


class TokenVerifier:
    """Turns a bearer token into the ``Principal`` it proves, or refuses it.

    A verified token is remembered (by its exact text) until it expires or the issuer's keys
    change, so a caller's later calls cost a dictionary look-up instead of a signature check;
    any other text, a tampered one included, is checked in full. A remembered token still
    keeps the keys on their refresh schedule, so once its key is withdrawn it is refused.
    Tokens valid for longer than ``max_lifetime`` seconds are refused.
    """

    def __init__(
        self,
        keys: IssuerKeys,
        audience: str,
        *,
        leeway: float = DEFAULT_LEEWAY_SECONDS,
        max_lifetime: float = DEFAULT_MAX_LIFETIME_SECONDS,
        remembered: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = keys.issuer
        self.audience = audience
        self.keys = keys
        self._keys = keys
        self._leeway = leeway
        self._max_lifetime = max_lifetime
        self._remembered_max = remembered
        self._remembered: OrderedDict[str, _Verified] = OrderedDict()
        self._clock = clock

    @classmethod
    def for_issuer(cls, issuer: str, audience: str, jwks_url: str = "") -> TokenVerifier:
        return cls(IssuerKeys(issuer, jwks_url), audience)

    async def verify(self, token: str) -> Principal:
        remembered = self._remembered.get(token)
        if remembered is not None:
            # A remembered token never reaches the keys' look-up: expired keys refuse it here.
            await self._keys.require_fresh()
            if (
                remembered.keys_version == self._keys.version
                and self._clock() < remembered.expires_at + self._leeway
            ):
                # Stale keys are refreshed in the background; if the refresh drops this
                # token's key, the version changes and the next call checks it in full.
                self._keys.refresh_if_stale()
                return remembered.principal
            # Several calls may have awaited the refresh with this token: the first forgets it.
            self._remembered.pop(token, None)
        principal, expires_at = await self._check(token)
        self._remember(token, _Verified(principal, expires_at, self._keys.version))
        return principal

    async def _check(self, token: str) -> tuple[Principal, float]:
        if not token:
            raise InvalidCredential("TOKEN_MISSING", "a bearer token is required")
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidCredential(
                "TOKEN_MALFORMED", f"the bearer token is longer than {MAX_TOKEN_BYTES} bytes"
            )
        if not is_token_text(token):
            raise InvalidCredential(
                "TOKEN_MALFORMED", "the bearer token is not printable ASCII without spaces"
            )
        header = _header_of(token)
        algorithm = header.get("alg")
        # A list or an object is no member of the set, and cannot even be looked up in it
        # (TypeError: the call failed as UNKNOWN with the exception's text, logged as a fault).
        if not isinstance(algorithm, str) or algorithm not in SIGNING_ALGORITHMS:
            raise InvalidCredential(
                "TOKEN_ALGORITHM_REFUSED",
                "the bearer token must be signed with one of: "
                + ", ".join(sorted(SIGNING_ALGORITHMS)),
            )
        token_type = header.get("typ", "JWT")
        if not isinstance(token_type, str) or not _access_token_type(token_type):
            raise InvalidCredential(
                "TOKEN_TYPE_REFUSED", "the bearer token is not an access token (header 'typ')"
            )
        key_id = header.get("kid")
        if not isinstance(key_id, str) or not key_id:
            raise InvalidCredential("TOKEN_KEY_UNKNOWN", "the bearer token names no key id")
        key = await self._keys.key(key_id)
        if key is None:
            raise InvalidCredential(
                "TOKEN_KEY_UNKNOWN", "the bearer token names a key the issuer does not publish"
            )
        if key.algorithm_name != algorithm:
            raise InvalidCredential(
                "TOKEN_ALGORITHM_REFUSED", "the token's algorithm does not match its key"
            )
        claims = self._decode(token, key, algorithm)
        expires_at = self._check_times(claims)
        return principal_from_claims(claims, self.issuer), expires_at

    def _check_times(self, claims: dict[str, Any]) -> float:
        """``exp`` as a float, once every time claim is a finite moment before the year 10000
        and the token's lifetime is within the maximum. PyJWT accepts any integer (10**400,
        which no float holds), and any lifetime."""
        for name in TIME_CLAIMS:
            value = claims.get(name)
            if value is None and name != "exp":
                continue
            # Compared, never converted: 10**400 has no float, and nan or inf fail the range.
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= MAX_TIMESTAMP
            ):
                raise invalid_claim(name, TIME_CLAIM_RULE)
        expires_at = float(claims["exp"])
        issued = claims.get("iat")
        start = self._clock() if issued is None else float(issued)
        if expires_at - start > self._max_lifetime:
            raise invalid_claim(
                "exp",
                f"the token is valid for longer than {self._max_lifetime / 3600:g} hours"
                + ("" if issued is None else " after 'iat'"),
            )
        return expires_at

    def _decode(self, token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt_errors.PyJWTError as error:
            claim = _mistyped_time_claim(error)
            if claim is not None:
                raise invalid_claim(claim, TIME_CLAIM_RULE) from None
            if isinstance(error, jwt_errors.InvalidSubjectError):
                # A ``sub`` that is no text: PyJWT checks it before ``principal_from_claims``.
                raise invalid_claim(SUBJECT, UNIT_RULE) from None
            for kind, reason, message in _REFUSALS:
                if isinstance(error, kind):
                    raise InvalidCredential(reason, message) from None
            raise  # unreachable: PyJWTError is the last entry
        return claims

    def _remember(self, token: str, verified: _Verified) -> None:
        self._remembered[token] = verified
        if len(self._remembered) > self._remembered_max:
            self._remembered.popitem(last=False)
