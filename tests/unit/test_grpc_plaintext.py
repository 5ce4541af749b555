"""A gRPC server without TLS listens on loopback only (review of identity, h-tls): every call
carries a bearer token, and the distributed backend without TLS settings served them in plain
text on every interface (the chart's default runs --host 0.0.0.0). Beyond loopback it needs a
certificate, or CASETRAIL_GRPC_ALLOW_PLAINTEXT=1 for a service mesh whose sidecar terminates
mutual TLS; the embedded default on 127.0.0.1 is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from casetrail_platform.grpc_platform.server import (
    PlaintextRefused,
    allow_plaintext,
    create_server,
)
from casetrail_platform.identity.tls import ServerTls
from services import runner
from tests.support.certificates import INTAKE, Certificates
from tests.support.identity import TestIssuer


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "10.0.0.5", "127.0.0.2", "intake"])
async def test_plaintext_beyond_loopback_is_refused(issuer: TestIssuer, host: str) -> None:
    with pytest.raises(PlaintextRefused, match="CASETRAIL_GRPC_ALLOW_PLAINTEXT=1") as refused:
        await create_server(f"{host}:0", [], [INTAKE], verifier=issuer.verifier())
    assert "(--tls-cert/--tls-key, CASETRAIL_TLS_CERT/_KEY)" in str(refused.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST"])
async def test_plaintext_on_loopback_is_served(issuer: TestIssuer, host: str) -> None:
    try:
        server, port, _ = await create_server(f"{host}:0", [], [INTAKE], verifier=issuer.verifier())
    except OSError as error:  # no IPv6 on this machine: nothing to say about the rule
        pytest.skip(f"{host}: {error}")
    assert port > 0
    await server.stop(None)


async def test_tls_or_the_explicit_setting_serves_beyond_loopback(
    issuer: TestIssuer,
    certificates: Certificates,
) -> None:
    tls = ServerTls(certificates.server_chain, certificates.server_key)
    secure, _, _ = await create_server(
        "0.0.0.0:0", [], [INTAKE], verifier=issuer.verifier(), tls=tls
    )
    await secure.stop(None)
    mesh, _, _ = await create_server(
        "0.0.0.0:0", [], [INTAKE], verifier=issuer.verifier(), plaintext_allowed=True
    )
    await mesh.stop(None)


def test_the_setting_is_1_or_0() -> None:
    assert allow_plaintext({"CASETRAIL_GRPC_ALLOW_PLAINTEXT": "1"})
    assert not allow_plaintext({"CASETRAIL_GRPC_ALLOW_PLAINTEXT": "0"})
    assert not allow_plaintext({})
    for value in ("yes", "true", " 1"):
        with pytest.raises(ValueError, match="CASETRAIL_GRPC_ALLOW_PLAINTEXT must be 1 or 0"):
            allow_plaintext({"CASETRAIL_GRPC_ALLOW_PLAINTEXT": value})


@pytest.mark.parametrize("backend", ["embedded", "distributed"])
async def test_casetrail_serve_refuses_before_opening_anything(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CASETRAIL_GRPC_ALLOW_PLAINTEXT", raising=False)
    for name in ("CASETRAIL_TLS_CERT", "CASETRAIL_TLS_KEY", "CASETRAIL_TLS_CLIENT_CA"):
        monkeypatch.delenv(name, raising=False)
    options = runner.parse(
        ["--backend", backend, "--host", "0.0.0.0", "--any-port", "--data-dir", str(tmp_path)]
    )
    with pytest.raises(SystemExit, match=r"--host: gRPC on 0\.0\.0\.0 without TLS"):
        await runner.serve(options, tmp_path)
    assert not os.listdir(tmp_path)  # no store, no key, no development issuer
