"""Keys the issuer could not confirm for too long check no token (review of keys, h-tls): while
the issuer cannot be reached, the last keys fetched kept working for good, so a key the issuer
withdrew stayed usable for as long as its refresh was blocked. Now, once no refresh has
succeeded for ``keys_max_age`` seconds, every token (a remembered one too) is refused
``ISSUER_KEYS_EXPIRED`` until a refresh succeeds, and health says so. Served by the real test
issuer over HTTP on 127.0.0.1; only the refresh's way out is cut."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from casetrail_platform.health import watch_issuer_keys
from casetrail_platform.identity.errors import InvalidCredential
from casetrail_platform.identity.keys import DEFAULT_KEYS_MAX_AGE, IssuerKeys, http_json
from casetrail_platform.identity.settings import IssuerSettings
from casetrail_platform.identity.verifier import TokenVerifier
from tests.support.identity import TestIssuer

MAX_AGE = 3600.0


class Cut:
    """The real issuer's documents, or an outage while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self._fetch = http_json()

    def __call__(self, url: str) -> Mapping[str, Any]:
        if self.down:
            raise ConnectionRefusedError("the issuer cannot be reached")
        return self._fetch(url)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _keys(issuer: TestIssuer, cut: Cut, clock: Clock) -> IssuerKeys:
    return IssuerKeys(
        issuer.url, fetch=cut, min_refresh_interval=0.0, keys_max_age=MAX_AGE, clock=clock
    )


async def _reason(verifier: TokenVerifier, token: str) -> str:
    try:
        await verifier.verify(token)
    except InvalidCredential as refusal:
        return refusal.reason
    return "ACCEPTED"


async def test_keys_no_refresh_confirmed_for_too_long_refuse_every_token(
    issuer: TestIssuer,
) -> None:
    cut, clock = Cut(), Clock()
    verifier = TokenVerifier(_keys(issuer, cut, clock), issuer.audience)
    remembered = issuer.mint("kim")
    assert await _reason(verifier, remembered) == "ACCEPTED"
    cut.down = True
    clock.now += MAX_AGE / 2  # stale (refresh fails) but within the bound: still accepted
    assert await _reason(verifier, remembered) == "ACCEPTED"
    assert await _reason(verifier, issuer.mint("lee")) == "ACCEPTED"
    clock.now += MAX_AGE
    assert await _reason(verifier, remembered) == "ISSUER_KEYS_EXPIRED"
    assert await _reason(verifier, issuer.mint("lee")) == "ISSUER_KEYS_EXPIRED"
    with pytest.raises(InvalidCredential, match="could not be refreshed for more than 1 hours"):
        await verifier.verify(remembered)
    cut.down = False  # the issuer is back: the next call refreshes and is accepted
    assert await _reason(verifier, remembered) == "ACCEPTED"
    assert not verifier.keys.expired


async def test_health_reports_expired_keys_and_their_return(issuer: TestIssuer) -> None:
    cut, clock = Cut(), Clock()
    keys = _keys(issuer, cut, clock)
    assert await keys.refresh()
    reported: list[int] = []

    async def look() -> None:
        """One look of the watcher: it stops after its report."""
        stop = asyncio.Event()

        class Health:
            async def set(self, name: str, status: int) -> None:
                assert name == "casetrail.intake.issuer"
                reported.append(status)
                stop.set()

        await watch_issuer_keys(keys, Health(), "casetrail.intake.issuer", stop)

    await look()
    cut.down = True
    clock.now += MAX_AGE + 1
    await look()
    assert reported == [
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    ]
    # The look started a refresh of the stale keys: it fails while the issuer is away (joined
    # here, so the next one is not the failed one still in flight).
    assert not await keys.refresh()
    cut.down = False
    assert await keys.refresh()
    await look()
    assert reported[-1] == health_pb2.HealthCheckResponse.SERVING


def test_the_bound_is_a_day_unless_set_and_refused_out_of_range() -> None:
    env = {"CASETRAIL_OIDC_ISSUER": "https://login.agency.org", "CASETRAIL_OIDC_AUDIENCE": "a"}
    settings = IssuerSettings.from_env(env)
    assert settings is not None
    assert settings.keys_max_age == DEFAULT_KEYS_MAX_AGE == 86400
    set_ = IssuerSettings.from_env(env | {"CASETRAIL_OIDC_KEYS_MAX_AGE": "3600"})
    assert set_ is not None
    assert set_.keys_max_age == 3600
    for bad in ("0", "599", "604801", "nan", "a day", "inf"):
        with pytest.raises(ValueError, match="CASETRAIL_OIDC_KEYS_MAX_AGE"):
            IssuerSettings.from_env(env | {"CASETRAIL_OIDC_KEYS_MAX_AGE": bad})


async def test_calls_that_waited_on_one_refresh_with_a_remembered_token_are_all_answered(
    issuer: TestIssuer,
) -> None:
    """Calls with one remembered token all awaited the refresh of expired keys; when it
    brought keys without the token's, each forgot the token, and every one after the first
    raised a KeyError naming the whole token (answered UNKNOWN with it, and logged)."""
    cut, clock = Cut(), Clock()
    verifier = TokenVerifier(_keys(issuer, cut, clock), issuer.audience)
    remembered = issuer.mint("kim")
    assert await _reason(verifier, remembered) == "ACCEPTED"
    clock.now += MAX_AGE * 2  # expired: the next calls wait on a refresh
    fetch = cut._fetch

    def rotated(url: str) -> Mapping[str, Any]:
        document = fetch(url)
        if "keys" not in document:
            return document
        return {"keys": [{**key, "kid": f"rotated-{key['kid']}"} for key in document["keys"]]}

    cut._fetch = rotated
    reasons = await asyncio.gather(*(_reason(verifier, remembered) for _ in range(3)))
    assert reasons == ["TOKEN_KEY_UNKNOWN"] * 3
