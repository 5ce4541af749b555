"""The issuer's signing keys: its JWKS, found through OIDC discovery, fetched over HTTP in a
worker thread (never on the event loop), cached, and refreshed when stale or when a token names
a key id not seen yet (key rotation)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from casetrail_platform.identity.errors import IssuerUnavailable

log = logging.getLogger(__name__)

SIGNING_ALGORITHMS = frozenset({"ES256", "EdDSA", "RS256"})
"""Asymmetric only: a token's ``alg`` outside this set is refused before any key is looked at
(``none`` and every ``HS*``, which could otherwise be 'signed' with the public key)."""

_KEY_ALGORITHM: dict[tuple[object, object], str] = {
    ("EC", "P-256"): "ES256",
    ("OKP", "Ed25519"): "EdDSA",
    ("RSA", None): "RS256",
}
MAX_DOCUMENT_BYTES = 1 << 20

Fetch = Callable[[str], Mapping[str, Any]]
"""GET a URL and return its JSON object (blocking; run in a worker thread)."""


def http_json(ssl_context: ssl.SSLContext | None = None, timeout: float = 5.0) -> Fetch:
    """A ``Fetch`` over HTTP(S) with a timeout and a size limit."""

    def fetch(url: str) -> Mapping[str, Any]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout, context=ssl_context) as answer:
            body = answer.read(MAX_DOCUMENT_BYTES + 1)
        if len(body) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError(f"{url}: not a JSON object")
        return document

    return fetch


class IssuerKeys:
    """The signing keys of one issuer, by key id.

    ``jwks_url``: where the JWKS is; without it, the ``jwks_uri`` of the issuer's discovery
    document (``<issuer>/.well-known/openid-configuration``, whose ``issuer`` must match).
    Keys are kept ``max_age`` seconds, then refreshed in the background while the old ones keep
    answering; an unknown key id refreshes at once, at most every ``min_refresh_interval``
    seconds, so a stream of made-up key ids cannot make us hammer the issuer.
    """

    def __init__(
        self,
        issuer: str,
        jwks_url: str = "",
        *,
        fetch: Fetch | None = None,
        max_age: float = 300.0,
        min_refresh_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._jwks_url = jwks_url
        self._fetch = fetch or http_json()
        self._max_age = max_age
        self._min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()
        self._background: set[asyncio.Future[bool]] = set()
        self.version = 0
        """Goes up whenever the set of keys changes (verified-token caches drop their
        entries then: a key the issuer withdrew must stop working)."""

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    async def key(self, key_id: str) -> PyJWK | None:
        """The key named ``key_id``, or ``None`` when the issuer does not publish it;
        ``IssuerUnavailable`` while no key has been fetched at all."""
        now = self._clock()
        found = self._keys.get(key_id)
        if found is not None:
            if self._fetched_at is not None and now - self._fetched_at > self._max_age:
                self._refresh_in_background()
            return found
        # A refresh in flight (another call's, or a rotation's) may bring this key: wait for
        # it rather than refuse a good token because its call came a moment too early.
        if self._may_refresh(now) or self._lock.locked():
            await asyncio.to_thread(self._refresh, False)
        # One read of the keys: a worker thread replaces them whole, and deciding "unknown
        # key" vs "no keys yet" from two reads once refused a good token (UNAUTHENTICATED)
        # while the first fetch landed in between.
        keys = self._keys
        if not keys:
            raise IssuerUnavailable("the issuer's signing keys could not be fetched yet")
        return keys.get(key_id)

    async def refresh(self) -> bool:
        """Fetch the keys now (off the event loop); whether that succeeded."""
        return await asyncio.to_thread(self._refresh, True)

    def _may_refresh(self, now: float) -> bool:
        attempted = self._attempted_at
        return attempted is None or now - attempted >= self._min_refresh_interval

    def _refresh_in_background(self) -> None:
        if self._background or not self._may_refresh(self._clock()):
            return
        future = asyncio.ensure_future(asyncio.to_thread(self._refresh, False))
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    def _refresh(self, forced: bool) -> bool:
        with self._lock:  # one fetch at a time; the others then find fresh keys
            now = self._clock()
            if not forced and not self._may_refresh(now):
                return self._fetched_at is not None
            self._attempted_at = now
            try:
                keys = self._download()
            except Exception as error:  # the old keys keep working; the next try will tell
                log.warning("signing keys of %s not refreshed: %s", self.issuer, error)
                return False
            if set(keys) != set(self._keys):
                self.version += 1
            self._keys = keys
            self._fetched_at = now
            return True

    def _download(self) -> dict[str, PyJWK]:
        jwks_url = self._jwks_url
        if not jwks_url:
            discovery = self._fetch(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if discovery.get("issuer") != self.issuer:
                raise ValueError("the discovery document names another issuer")
            jwks_url = str(discovery.get("jwks_uri", ""))
            if not jwks_url:
                raise ValueError("the discovery document has no jwks_uri")
        return usable_keys(self._fetch(jwks_url))


def usable_keys(jwks: Mapping[str, Any]) -> dict[str, PyJWK]:
    """The JWKS's signature keys that have a key id and an algorithm we accept, by key id.
    Others (symmetric keys, encryption keys, unknown curves) are skipped."""
    keys: dict[str, PyJWK] = {}
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("a JWKS needs a 'keys' list")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        algorithm = _algorithm_of(entry)
        if algorithm is None:
            continue
        try:
            keys[entry["kid"]] = PyJWK(entry, algorithm)
        except PyJWKError as error:
            log.warning("skipping JWKS key %s: %s", entry["kid"], error)
    return keys


def _algorithm_of(entry: Mapping[str, Any]) -> str | None:
    kty = entry.get("kty")
    inferred = _KEY_ALGORITHM.get((kty, entry.get("crv") if kty != "RSA" else None))
    stated = entry.get("alg")
    if stated is None:
        return inferred
    return stated if stated == inferred and stated in SIGNING_ALGORITHMS else None
