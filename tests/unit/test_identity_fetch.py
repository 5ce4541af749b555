"""How the issuer's documents are fetched (review of identity, h-authrev): a redirect to another
origin is not followed (it would bypass the https rule of the configured and discovered URLs),
and a document that trickles in is given up once the fetch's time is spent, not only when one
read waits too long; a token's own headers never name where its key is (jku, x5u, jwk), and a
critical header extension refuses it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest

from casetrail_platform.identity.errors import InvalidCredential, IssuerUnavailable
from casetrail_platform.identity.keys import IssuerKeys, http_json
from casetrail_platform.identity.tokens import SigningKey, mint
from casetrail_platform.identity.verifier import TokenVerifier
from tests.support.identity import TestIssuer

AUDIENCE = "casetrail-tests"


@contextmanager
def serving(host: str, answer: Any) -> Iterator[str]:
    """An HTTP server on ``host`` whose GETs ``answer(handler)`` answers; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _json(handler: BaseHTTPRequestHandler, document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.mark.parametrize("redirect", [301, 302, 307, 308])
async def test_a_jwks_redirected_to_another_origin_is_not_fetched(redirect: int) -> None:
    """The issuer (http on 127.0.0.1, allowed) redirects its JWKS to http on 127.0.0.2, a host
    whose keys would never be fetched in clear text if named: following the redirect signed in
    whoever holds that host's key."""
    key = SigningKey.generate("ES256")
    with serving("127.0.0.2", lambda h: _json(h, {"keys": [key.public_jwk()]})) as elsewhere:

        def issuer_answer(handler: BaseHTTPRequestHandler) -> None:
            if handler.path.endswith("/openid-configuration"):
                _json(handler, {"issuer": issuer, "jwks_uri": issuer + "/jwks.json"})
                return
            handler.send_response(redirect)
            handler.send_header("Location", elsewhere + "/jwks.json")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with serving("127.0.0.1", issuer_answer) as issuer:
            verifier = TokenVerifier(IssuerKeys(issuer, fetch=http_json(timeout=2.0)), AUDIENCE)
            token = mint(
                key, issuer=issuer, audience=AUDIENCE, subject="kim", role="auditor",
                agency="eastbay-dss",
            )  # fmt: skip
            with pytest.raises(IssuerUnavailable):
                await verifier.verify(token)


def test_a_redirect_within_the_origin_is_followed() -> None:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        if handler.path == "/moved":
            handler.send_response(302)
            handler.send_header("Location", "/keys")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        else:
            _json(handler, {"keys": []})

    with serving("127.0.0.1", answer) as url:
        assert http_json(timeout=2.0)(url + "/moved") == {"keys": []}


def test_a_document_that_trickles_in_is_given_up_after_the_timeout() -> None:
    """One byte every 0.2 s: each read answers well within the timeout, the whole never does."""
    stop = threading.Event()

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        body = b'{"keys": []}' + b" " * 200
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for byte in body:
            if stop.wait(0.2):
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()

    with serving("127.0.0.1", trickle) as url:
        started = time.monotonic()
        try:
            with pytest.raises(TimeoutError):
                http_json(timeout=1.0)(url + "/jwks.json")
            assert time.monotonic() - started < 3.0
        finally:
            stop.set()


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk"])
async def test_a_token_naming_its_own_key_is_not_believed(header: str) -> None:
    """A token signed by a key of the caller's own, naming it (``jwk``) or where to fetch it
    (``jku``, ``x5u``) under the issuer's key id or its own: the key is the issuer's JWKS's,
    always, and the place the token names is never asked."""
    good, forged = SigningKey.generate("ES256"), SigningKey.generate("ES256")
    asked: list[str] = []

    def attacker(handler: BaseHTTPRequestHandler) -> None:
        asked.append(handler.path)
        _json(handler, {"keys": [forged.public_jwk()]})

    def issuer_answer(handler: BaseHTTPRequestHandler) -> None:
        if handler.path.endswith("/openid-configuration"):
            _json(handler, {"issuer": issuer, "jwks_uri": issuer + "/jwks.json"})
        else:
            _json(handler, {"keys": [good.public_jwk()]})

    with serving("127.0.0.1", attacker) as elsewhere, serving("127.0.0.1", issuer_answer) as issuer:
        verifier = TokenVerifier(IssuerKeys(issuer, min_refresh_interval=0.0), AUDIENCE)
        claims = jwt.decode(
            mint(
                forged, issuer=issuer, audience=AUDIENCE, subject="mallory", role="auditor",
                agency="eastbay-dss",
            ),
            options={"verify_signature": False},
        )  # fmt: skip
        named = forged.public_jwk() if header == "jwk" else elsewhere + "/jwks.json"
        reasons = set()
        for key_id in (good.key_id, forged.key_id):
            headers = {"kid": key_id, "typ": "at+jwt", header: named}
            token = jwt.encode(claims, forged.private_key, algorithm="ES256", headers=headers)
            with pytest.raises(InvalidCredential) as refused:
                await verifier.verify(token)
            reasons.add(refused.value.reason)
        assert reasons == {"TOKEN_BAD_SIGNATURE", "TOKEN_KEY_UNKNOWN"}
        assert asked == []


async def test_a_critical_header_extension_refuses_the_token(issuer: TestIssuer) -> None:
    """``crit`` names an extension the verifier must understand: none is understood here."""
    claims = jwt.decode(issuer.mint("kim", "auditor"), options={"verify_signature": False})
    headers = {"kid": issuer.key.key_id, "typ": "at+jwt", "crit": ["exp-x"], "exp-x": 1}
    token = jwt.encode(claims, issuer.key.private_key, algorithm="ES256", headers=headers)
    with pytest.raises(InvalidCredential) as refused:
        await issuer.verifier().verify(token)
    assert refused.value.reason == "TOKEN_INVALID"
