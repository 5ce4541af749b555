"""The issuer's signing keys: its JWKS, found through OIDC discovery, fetched over HTTP on a
worker thread of its own (never on the event loop), cached, and refreshed when stale or when a
token names a key id not seen yet (key rotation)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from casetrail_platform.identity.errors import InvalidCredential, IssuerUnavailable

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
MIN_RSA_BITS = 2048
"""NIST SP 800-131A's floor: a shorter RSA key in the JWKS is skipped (it can be factored)."""
DEFAULT_FETCH_TIMEOUT = 10.0
"""Seconds a refresh waits for the issuer in all (discovery and JWKS) before giving up."""
DEFAULT_KEYS_MAX_AGE = 24 * 3600.0
"""Seconds the last keys fetched keep checking tokens while no refresh succeeds: an issuer
unreachable for longer (or a refresh blocked on purpose) would otherwise keep a key it has
withdrawn working for good. A day covers an issuer's outage overnight."""
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
"""Host names that never leave this machine."""

Fetch = Callable[[str], Mapping[str, Any]]
"""GET a URL and return its JSON object (blocking; run in a worker thread)."""


def http_json(ssl_context: ssl.SSLContext | None = None, timeout: float = 5.0) -> Fetch:
    """A ``Fetch`` over HTTP(S): the whole document within ``timeout`` seconds (an issuer that
    trickles it a byte at a time would otherwise hold the fetch thread for as long as it likes),
    at most ``MAX_DOCUMENT_BYTES``, redirects followed only within the URL's own origin."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl_context), _SameOriginRedirects()
    )

    def fetch(url: str) -> Mapping[str, Any]:
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        body = bytearray()
        with opener.open(request, timeout=timeout) as answer:
            while len(body) <= MAX_DOCUMENT_BYTES:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url}: document not received within {timeout:g} s")
                chunk = answer.read1(MAX_DOCUMENT_BYTES + 1 - len(body))
                if not chunk:
                    break
                body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError(f"{url}: not a JSON object")
        return document

    return fetch


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same scheme, host and port. Elsewhere would bypass the
    rule the configured and discovered URLs are held to (https, or http on loopback): an
    https JWKS redirected to http, or to any host at all, handed us whatever keys it served."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if _origin(newurl) != _origin(req.full_url):
            raise ValueError(f"{req.full_url}: redirected to another origin ({newurl})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)


_DEFAULT_PORTS = {"http": 80, "https": 443}


class IssuerKeys:
    """The signing keys of one issuer, by key id.

    ``jwks_url``: where the JWKS is; without it, the ``jwks_uri`` of the issuer's discovery
    document (``<issuer>/.well-known/openid-configuration``, whose ``issuer`` must match).
    Keys are kept ``max_age`` seconds, then refreshed in the background while the old ones keep
    answering; an unknown key id refreshes at once, at most every ``min_refresh_interval``
    seconds (counted from the end of the previous fetch), so a stream of made-up key ids cannot
    make us hammer the issuer. Concurrent callers share the one fetch in flight, which runs on
    this issuer's own worker thread and is given up after ``fetch_timeout`` seconds.
    Keys no refresh has confirmed for ``keys_max_age`` seconds check no token any more
    (``InvalidCredential`` ``ISSUER_KEYS_EXPIRED``) until a refresh succeeds.
    """

    def __init__(
        self,
        issuer: str,
        jwks_url: str = "",
        *,
        fetch: Fetch | None = None,
        max_age: float = 300.0,
        min_refresh_interval: float = 5.0,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
        keys_max_age: float = DEFAULT_KEYS_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._jwks_url = jwks_url
        self._fetch = fetch or http_json()
        self._max_age = max_age
        self._min_refresh_interval = min_refresh_interval
        self._fetch_timeout = fetch_timeout
        self.keys_max_age = keys_max_age
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._in_flight: asyncio.Task[bool] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.version = 0
        """Goes up whenever a key id is added or withdrawn or names another key (verified-token
        caches drop their entries then: a key the issuer withdrew must stop working)."""

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    @property
    def expired(self) -> bool:
        """Whether keys were fetched once but no refresh has confirmed them for longer than
        ``keys_max_age`` seconds (no key checks a token then)."""
        fetched = self._fetched_at
        return fetched is not None and self._clock() - fetched > self.keys_max_age

    async def key(self, key_id: str) -> PyJWK | None:
        """The key named ``key_id``, or ``None`` when the issuer does not publish it;
        ``IssuerUnavailable`` while no key has been fetched at all; ``InvalidCredential``
        (``ISSUER_KEYS_EXPIRED``) while the keys are ``expired``."""
        await self.require_fresh()
        found = self._keys.get(key_id)
        if found is not None:
            self.refresh_if_stale()
            return found
        # A refresh in flight (another call's, or a rotation's) may bring this key: wait for
        # it rather than refuse a good token because its call came a moment too early.
        if self._running_refresh() is not None or self._may_refresh(self._clock()):
            await self._shared_refresh(forced=False)
        # One read of the keys: deciding "unknown key" vs "no keys yet" from two reads once
        # refused a good token (UNAUTHENTICATED) while the first fetch landed in between.
        keys = self._keys
        if not keys:
            raise IssuerUnavailable("the issuer's signing keys could not be fetched yet")
        return keys.get(key_id)

    async def require_fresh(self) -> None:
        """``InvalidCredential`` (``ISSUER_KEYS_EXPIRED``) while the keys are ``expired``,
        after one more try to refresh them (at most every ``min_refresh_interval``)."""
        if not self.expired:
            return
        await self._shared_refresh(forced=False)
        if self.expired:
            raise InvalidCredential(
                "ISSUER_KEYS_EXPIRED",
                f"the issuer's signing keys could not be refreshed for more than"
                f" {self.keys_max_age / 3600:g} hours; no token is accepted until they are",
            )

    async def refresh(self) -> bool:
        """Fetch the keys now (or join the fetch in flight); whether that succeeded."""
        return await self._shared_refresh(forced=True)

    def refresh_if_stale(self) -> None:
        """Start a background refresh when the keys are older than ``max_age`` (needs a
        running event loop). Verified-token caches call it on every hit: without it a quiet
        service never refetched, and tokens of a withdrawn key kept working."""
        fetched = self._fetched_at
        if fetched is None or self._clock() - fetched <= self._max_age:
            return
        if self._running_refresh() is None and self._may_refresh(self._clock()):
            self._start_refresh()

    def _may_refresh(self, now: float) -> bool:
        attempted = self._attempted_at
        return attempted is None or now - attempted >= self._min_refresh_interval

    def _running_refresh(self) -> asyncio.Task[bool] | None:
        task = self._in_flight
        # A task of another (perhaps closed) event loop can never be awaited from this one.
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    def _start_refresh(self) -> asyncio.Task[bool]:
        self._attempted_at = self._clock()
        task = asyncio.get_running_loop().create_task(self._refresh())
        self._in_flight = task
        return task

    async def _shared_refresh(self, *, forced: bool) -> bool:
        task = self._running_refresh()
        if task is None:
            if not forced and not self._may_refresh(self._clock()):
                return self._fetched_at is not None
            task = self._start_refresh()
        # Shielded: a caller that gives up (its call cancelled) must not cancel the fetch
        # the other callers wait for.
        return await asyncio.shield(task)

    async def _refresh(self) -> bool:
        if self._executor is None:
            # Its own thread, not the default executor's: a slow or hung issuer then holds
            # this one thread, never the workers that field sealing and the stores use.
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="casetrail-jwks")
        limit = asyncio.timeout(self._fetch_timeout)
        try:
            async with limit:
                keys = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._download
                )
        except Exception as error:  # the old keys keep working; the next try will tell
            # A socket's own timeout is a TimeoutError too: only ours is reported as ours.
            reason = f"no answer within {self._fetch_timeout:g} s" if limit.expired() else error
            log.warning("signing keys of %s not refreshed: %s", self.issuer, reason)
            return False
        finally:
            # The pause before the next fetch counts from this one's end: a fetch that took
            # longer than the pause must not let every waiter start another at once.
            self._attempted_at = self._clock()
        if _public_keys(keys) != _public_keys(self._keys):
            self.version += 1
        self._keys = keys
        self._fetched_at = self._clock()
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
            # The same rule as for a configured JWKS URL: keys in clear text could be swapped.
            require_https(jwks_url, "discovery document's jwks_uri")
        return usable_keys(self._fetch(jwks_url))


def _public_keys(keys: Mapping[str, PyJWK]) -> dict[str, bytes]:
    """Each key id's public key, encoded: a key replaced under the same key id is a change of
    keys too (tokens remembered under the old key must be checked again)."""
    return {key_id: _encoded(key) for key_id, key in keys.items()}


def _encoded(key: PyJWK) -> bytes:
    return bytes(key.key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def require_https(url: str, what: str) -> None:
    """``ValueError`` unless ``url`` is https, or http on a loopback host."""
    parts = urlsplit(url)
    # Keys fetched in clear text could be swapped on the way: HTTPS, except on loopback.
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK):
        raise ValueError(f"the {what} must be an https URL (http only on 127.0.0.1)")


def usable_keys(jwks: Mapping[str, Any]) -> dict[str, PyJWK]:
    """The JWKS's signature keys that have a key id and an algorithm we accept, by key id.
    Others (symmetric keys, encryption keys, unknown curves, a ``key_ops`` without ``verify``,
    RSA under ``MIN_RSA_BITS``) are skipped, and so is every key of a key id published for
    different keys: which of them signed a token could not be told."""
    keys: dict[str, PyJWK] = {}
    repeated: set[str] = set()
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("a JWKS needs a 'keys' list")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig" or not _verifies(entry):
            continue
        algorithm = _algorithm_of(entry)
        if algorithm is None:
            continue
        key_id: str = entry["kid"]
        try:
            key = PyJWK(entry, algorithm)
        except PyJWKError as error:
            log.warning("skipping JWKS key %r: %s", key_id, error)
            continue
        if isinstance(key.key, rsa.RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
            log.warning("skipping JWKS key %r: RSA under %d bits", key_id, MIN_RSA_BITS)
            continue
        known = keys.get(key_id)
        if known is not None and _encoded(known) == _encoded(key):
            continue  # the same key listed twice: nothing to choose between
        if known is not None or key_id in repeated:
            # Keeping the last one refused the other's tokens as a bad signature, and let the
            # last one sign in under a key id the issuer also gave another key: not ours to pick.
            log.warning("skipping JWKS key id %r: published for different keys", key_id)
            repeated.add(key_id)
            keys.pop(key_id, None)
            continue
        keys[key_id] = key
    return keys


def _verifies(entry: Mapping[str, Any]) -> bool:
    """Whether the key may check signatures: RFC 7517's ``key_ops``, when present, lists
    ``verify`` (a key the issuer marked for encryption or wrapping only must not sign in)."""
    operations = entry.get("key_ops")
    return operations is None or (isinstance(operations, list) and "verify" in operations)


def _algorithm_of(entry: Mapping[str, Any]) -> str | None:
    kty, crv = entry.get("kty"), entry.get("crv") if entry.get("kty") != "RSA" else None
    # Text only: a list or an object cannot be looked up (TypeError), and one such entry
    # failed the whole refresh, the issuer's good keys with it.
    if not isinstance(kty, str) or not isinstance(crv, str | None):
        return None
    inferred = _KEY_ALGORITHM.get((kty, crv))
    stated = entry.get("alg")
    if stated is None:
        return inferred
    return stated if stated == inferred and stated in SIGNING_ALGORITHMS else None
