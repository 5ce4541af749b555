"""The identity edges a reviewer found (rev21): the issuer's keys under a slow or hung JWKS
endpoint, withdrawn keys and cached tokens, token lifetimes and numeric claims, TLS files that
are not what they claim, the development key's file mode, and a discovered JWKS URL in clear
text."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.identity.development import (
    KEY_FILE,
    DevelopmentIssuer,
    DevelopmentSigner,
    identity_dir,
)
from casetrail_platform.identity.errors import InvalidCredential, IssuerUnavailable
from casetrail_platform.identity.keys import IssuerKeys
from casetrail_platform.identity.tls import ClientTls, ServerTls
from casetrail_platform.identity.tokens import SigningKey, mint
from casetrail_platform.identity.verifier import TokenVerifier
from tests.support.certificates import Certificates
from tests.support.identity import TestIssuer

ISSUER = "https://issuer.example"
JWKS = "https://issuer.example/jwks"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _token(key: SigningKey, key_id: str | None = None, **fields: Any) -> str:
    fields.setdefault("lifetime_seconds", 3600.0)
    token = mint(
        key, issuer=ISSUER, audience="casetrail", subject="kim", role="auditor",
        agency="eastbay-dss", **fields,
    )  # fmt: skip
    if key_id is None:
        return token
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key_id})


# --- a slow or hung JWKS endpoint ----------------------------------------------------------------


async def test_a_hung_issuer_holds_one_fetch_and_no_worker_of_the_default_executor() -> None:
    """Requests with made-up key ids used to park one default-executor worker each on the
    refresh lock: twelve of them starved field sealing, which runs on the same pool."""
    key = SigningKey.generate()
    release = threading.Event()
    fetches = 0

    def hung(url: str) -> Mapping[str, Any]:
        nonlocal fetches
        fetches += 1
        release.wait(10)
        return {"keys": [key.public_jwk()]}

    keys = IssuerKeys(ISSUER, JWKS, fetch=hung, min_refresh_interval=0.0)
    verifier = TokenVerifier(keys, "casetrail")
    junk = [
        asyncio.create_task(verifier.verify(_token(key, key_id=f"made-up-{n}"))) for n in range(12)
    ]
    try:
        await asyncio.sleep(0.1)
        # The default executor still answers while the issuer hangs.
        await asyncio.wait_for(asyncio.to_thread(lambda: None), 2.0)
        assert fetches == 1  # the twelve callers share the one fetch in flight
    finally:
        release.set()
    outcomes = await asyncio.gather(*junk, return_exceptions=True)
    assert all(isinstance(outcome, InvalidCredential) for outcome in outcomes)
    assert fetches == 1


async def test_the_pause_between_fetches_counts_from_the_end_of_a_slow_fetch() -> None:
    """A fetch that outlasted ``min_refresh_interval`` once let every waiter start another."""
    key = SigningKey.generate()
    clock = Clock()
    fetches = 0

    def slow(url: str) -> Mapping[str, Any]:
        nonlocal fetches
        fetches += 1
        clock.now += 8.0  # longer than the 5 s pause
        return {"keys": [key.public_jwk()]}

    keys = IssuerKeys(ISSUER, JWKS, fetch=slow, min_refresh_interval=5.0, clock=clock)
    calls = [keys.key(f"made-up-{n}") for n in range(5)]
    assert await asyncio.gather(*calls) == [None] * 5
    assert await keys.key("made-up-after") is None  # just after the fetch ended
    assert fetches == 1
    clock.now += 5.0
    assert await keys.key("made-up-later") is None
    assert fetches == 2


async def test_a_fetch_is_given_up_after_the_fetch_timeout_and_fails_closed() -> None:
    release = threading.Event()

    def hung(url: str) -> Mapping[str, Any]:
        release.wait(10)
        return {"keys": []}

    keys = IssuerKeys(ISSUER, JWKS, fetch=hung, fetch_timeout=0.2)
    try:
        async with asyncio.timeout(3):
            with pytest.raises(IssuerUnavailable):
                await keys.key("any")
    finally:
        release.set()


# --- withdrawn keys, lifetimes, numeric claims --------------------------------------------------


async def test_a_remembered_token_is_refused_once_its_key_is_withdrawn() -> None:
    issuer = TestIssuer()
    clock = Clock()
    keys = IssuerKeys(issuer.url, min_refresh_interval=0.0, max_age=300.0, clock=clock)
    verifier = TokenVerifier(keys, issuer.audience)
    try:
        token = issuer.mint("kim", "auditor")
        assert (await verifier.verify(token)).subject == "kim"
        issuer.published[:] = [SigningKey.generate()]  # the key is withdrawn
        clock.now += 301.0  # and the keys are stale
        version = keys.version
        await verifier.verify(token)  # remembered: answered, and starts a refresh
        async with asyncio.timeout(5):
            # Polled: the background refresh signals nothing a test could wait on.
            while keys.version == version:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        with pytest.raises(InvalidCredential) as refused:
            await verifier.verify(token)
        assert refused.value.reason == "TOKEN_KEY_UNKNOWN"
    finally:
        issuer.stop()


@pytest.mark.parametrize(
    ("fields", "claim"),
    [
        ({"lifetime_seconds": 100 * 365 * 86400.0}, "exp"),
        ({"extra": {"exp": 10**400}}, "exp"),
        ({"extra": {"iat": -(10**400)}}, "iat"),
        ({"extra": {"nbf": -(10**400)}}, "nbf"),
        # Not numbers at all: PyJWT's own checks refused them first, as TOKEN_MALFORMED (nbf,
        # exp) or TOKEN_INVALID (iat), naming nothing.
        ({"extra": {"exp": "later"}}, "exp"),
        ({"extra": {"iat": "today"}}, "iat"),
        ({"extra": {"nbf": "soon"}}, "nbf"),
        ({"extra": {"nbf": [1]}}, "nbf"),
        ({"extra": {"sub": 7}}, "sub"),
    ],
)
async def test_time_claims_are_finite_and_the_lifetime_bounded_and_a_claim_of_the_wrong_type_named(
    issuer: TestIssuer, fields: dict[str, Any], claim: str
) -> None:
    token = issuer.mint("kim", "auditor", **fields)
    with pytest.raises(InvalidCredential) as refused:
        await issuer.verifier().verify(token)
    assert refused.value.reason == "TOKEN_CLAIM_INVALID"
    assert repr(claim) in str(refused.value)


async def test_a_token_of_a_day_is_accepted(issuer: TestIssuer) -> None:
    token = issuer.mint("kim", "auditor", lifetime_seconds=24 * 3600.0)
    assert (await issuer.verifier().verify(token)).subject == "kim"


@pytest.mark.parametrize(
    ("declared", "accepted"),
    [
        (None, True),
        ("JWT", True),
        ("at+jwt", True),
        ("application/at+JWT", True),
        ("application/okta-internal-at+jwt", True),
        ("logout+jwt", False),
        ("secevent+jwt", False),
        ("dpop+jwt", False),
        (7, False),
    ],
)
async def test_only_an_access_token_s_type_authenticates(
    issuer: TestIssuer, declared: object, accepted: bool
) -> None:
    import jwt

    claims = jwt.decode(issuer.mint("kim", "auditor"), options={"verify_signature": False})
    header: dict[str, Any] = {"kid": issuer.key.key_id}
    if declared is not None:
        header["typ"] = declared
    token = jwt.encode(
        claims, issuer.key.private_key, algorithm=issuer.key.algorithm, headers=header
    )
    if accepted:
        assert (await issuer.verifier().verify(token)).subject == "kim"
        return
    with pytest.raises(InvalidCredential) as refused:
        await issuer.verifier().verify(token)
    assert refused.value.reason == "TOKEN_TYPE_REFUSED"


@pytest.mark.parametrize("junk", ["\udcff", "é", " ", "\x00", "\t"])
async def test_a_token_that_is_not_printable_ascii_is_malformed_wherever_it_is(
    issuer: TestIssuer, junk: str
) -> None:
    """A byte of an HTTP header that is not UTF-8 reaches the verifier as a lone surrogate
    (aiohttp's surrogateescape): in the payload, past our own reading of the header, PyJWT
    encoded the token as UTF-8 and raised UnicodeEncodeError (review h-web: a 500 at the
    caseload views, with a traceback in the log). Now TOKEN_MALFORMED before any decoding, the
    CLI's rule (``is_token_text``)."""
    header, payload, signature = issuer.mint("kim", "auditor").split(".")
    for token in (
        f"{header}.{payload[:-1]}{junk}.{signature}",
        f"{header}.{payload}.{signature}{junk}",
    ):
        with pytest.raises(InvalidCredential) as refused:
            await issuer.verifier().verify(token)
        assert refused.value.reason == "TOKEN_MALFORMED"
        assert "printable ASCII" in str(refused.value)


# --- the discovered JWKS URL ---------------------------------------------------------------------


async def test_a_jwks_uri_in_clear_text_from_discovery_is_not_fetched() -> None:
    fetched: list[str] = []

    def fetch(url: str) -> Mapping[str, Any]:
        fetched.append(url)
        if url.endswith("openid-configuration"):
            return {"issuer": ISSUER, "jwks_uri": "http://keys.example/jwks"}
        return {"keys": []}

    keys = IssuerKeys(ISSUER, fetch=fetch)
    assert await keys.refresh() is False
    assert fetched == [ISSUER + "/.well-known/openid-configuration"]


# --- the development key's mode ------------------------------------------------------------------


def test_a_development_key_others_can_read_is_refused(tmp_path: Path) -> None:
    DevelopmentIssuer(tmp_path, port=0).stop()
    folder = identity_dir(tmp_path)
    assert folder.stat().st_mode & 0o777 == 0o700
    (folder / KEY_FILE).chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        DevelopmentIssuer(tmp_path, port=0)
    with pytest.raises(ValueError, match="readable by others"):
        DevelopmentSigner.load(tmp_path)
    (folder / KEY_FILE).chmod(0o600)
    DevelopmentSigner.load(tmp_path)


# --- TLS files -----------------------------------------------------------------------------------


def _files(tmp_path: Path, **contents: bytes) -> dict[str, str]:
    paths = {}
    for name, content in contents.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(content)
        paths[name] = str(path)
    return paths


def test_tls_files_are_checked_when_loaded(
    tmp_path: Path,
    certificates: Certificates,
) -> None:
    files = _files(
        tmp_path,
        garbage=b"not a pem\n",
        chain=certificates.server_chain,
        key=certificates.server_key,
        other_key=certificates.client_key,
        ca=certificates.ca,
        client_chain=certificates.client_chain,
        client_key=certificates.client_key,
    )
    good = {"CASETRAIL_TLS_CERT": files["chain"], "CASETRAIL_TLS_KEY": files["key"]}
    assert ServerTls.from_env(good) is not None
    for changes, named in (
        ({"CASETRAIL_TLS_CERT": files["garbage"], "CASETRAIL_TLS_KEY": files["garbage"]}, "CERT"),
        ({"CASETRAIL_TLS_KEY": files["other_key"]}, "CASETRAIL_TLS_KEY"),  # not its key
        ({"CASETRAIL_TLS_CLIENT_CA": files["garbage"]}, "CASETRAIL_TLS_CLIENT_CA"),
        ({"CASETRAIL_TLS_KEY": str(tmp_path / "missing.pem")}, "missing.pem"),
    ):
        with pytest.raises(ValueError, match=named):
            ServerTls.from_env(good | changes)

    client = {"CASETRAIL_TLS_CA": files["ca"]}
    assert ClientTls.from_env(client) is not None
    mutual = client | {
        "CASETRAIL_TLS_CLIENT_CERT": files["client_chain"],
        "CASETRAIL_TLS_CLIENT_KEY": files["client_key"],
    }
    assert ClientTls.from_env(mutual) is not None
    for env, named in (
        ({"CASETRAIL_TLS_CA": files["garbage"]}, "CASETRAIL_TLS_CA"),
        (client | {"CASETRAIL_TLS_CLIENT_CERT": files["client_chain"]}, "CLIENT_KEY"),
        (client | {"CASETRAIL_TLS_CLIENT_KEY": files["client_key"]}, "CLIENT_CERT"),
        (mutual | {"CASETRAIL_TLS_CLIENT_KEY": files["key"]}, "CASETRAIL_TLS_CLIENT_KEY"),
    ):
        with pytest.raises(ValueError, match=named):
            ClientTls.from_env(env)
