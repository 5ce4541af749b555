"""The console's own listener over HTTPS (review of the console, h-consolerev): the sign-in form
carries a bearer token and every request the session cookie, yet with the services on TLS the
console still served plain HTTP, on the network too (`casetrail serve --host H` with a real
issuer, `casetrail console --host H`). It now serves HTTPS with the services' certificate
settings (CASETRAIL_TLS_CERT/_KEY, as the caseload views) and, without them, listens on
loopback only unless CASETRAIL_CONSOLE_ALLOW_PLAINTEXT=1 (as gRPC's
CASETRAIL_GRPC_ALLOW_PLAINTEXT)."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import aiohttp
import pytest

from casetrail_platform.grpc_platform.server import PlaintextRefused
from casetrail_platform.identity.tls import ServerTls
from cli.main import main
from services.console.server import start_console
from services.runner import _start_console
from tests.console.conftest import DemoCasetrail
from tests.support.certificates import Certificates


def server_tls(tmp_path: Path, certificates: Certificates) -> ServerTls:
    """The services' settings, read as every server reads them."""
    (tmp_path / "tls.crt").write_bytes(certificates.server_chain)
    (tmp_path / "tls.key").write_bytes(certificates.server_key)
    (tmp_path / "tls.key").chmod(0o600)
    tls = ServerTls.from_env(
        {
            "CASETRAIL_TLS_CERT": str(tmp_path / "tls.crt"),
            "CASETRAIL_TLS_KEY": str(tmp_path / "tls.key"),
        }
    )
    assert tls is not None
    return tls


def trusting(certificates: Certificates) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=certificates.ca.decode())


async def test_the_console_serves_https_with_the_services_certificate(
    demo_casetrail: DemoCasetrail,
    tmp_path: Path,
    certificates: Certificates,
) -> None:
    settings = demo_casetrail.settings(https=server_tls(tmp_path, certificates))
    console = await start_console(settings, "127.0.0.1", 0)
    try:
        assert console.url.startswith("https://127.0.0.1:")
        # The certificate names localhost, a loopback name the development sign-in answers.
        url = f"https://localhost:{console.port}/signin"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, ssl=trusting(certificates)) as answer:
                assert answer.status == 200
                assert "DEVELOPMENT ONLY" in await answer.text()
                cookie = answer.headers["set-cookie"]
                assert answer.headers["strict-transport-security"] == "max-age=31536000"
            # Nothing in clear on the same port.
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://localhost:{console.port}/signin") as plain:
                    await plain.read()
    finally:
        await console.stop()
    assert "; Secure" in cookie
    assert "HttpOnly" in cookie


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.2", "::"])
async def test_plain_http_beyond_loopback_is_refused(
    demo_casetrail: DemoCasetrail, host: str
) -> None:
    settings = demo_casetrail.settings(development_signer=None)
    with pytest.raises(PlaintextRefused, match="CASETRAIL_CONSOLE_ALLOW_PLAINTEXT=1") as refused:
        await start_console(settings, host, 0)
    # `casetrail console` takes its certificate only from the environment; serve's flags too.
    assert "(CASETRAIL_TLS_CERT/_KEY, or casetrail serve's --tls-cert/--tls-key)" in str(
        refused.value
    )


async def test_https_or_the_explicit_setting_serves_beyond_loopback(
    demo_casetrail: DemoCasetrail,
    tmp_path: Path,
    certificates: Certificates,
) -> None:
    """127.0.0.2 is not among the loopback names: it stands for any other host here."""
    https = demo_casetrail.settings(
        development_signer=None, https=server_tls(tmp_path, certificates)
    )
    console = await start_console(https, "127.0.0.2", 0)
    await console.stop()
    assert console.url.startswith("https://127.0.0.2:")
    proxied = demo_casetrail.settings(development_signer=None, plaintext_allowed=True)
    console = await start_console(proxied, "127.0.0.2", 0)
    await console.stop()
    assert console.url.startswith("http://127.0.0.2:")


async def test_casetrail_serve_gives_the_console_the_services_tls(
    demo_casetrail: DemoCasetrail,
    tmp_path: Path,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`casetrail serve --host H` with a real issuer and TLS served the console on H in plain
    HTTP. With TLS it is HTTPS (and dials audit with CASETRAIL_TLS_CA: the services' servers
    are TLS ones); without (the gRPC servers allowed plain text: a mesh) it is kept on
    127.0.0.1 and says so."""
    monkeypatch.delenv("CASETRAIL_CONSOLE_ALLOW_PLAINTEXT", raising=False)
    verifier = demo_casetrail.settings().verifier
    audit = demo_casetrail.addresses["audit"]
    options = argparse.Namespace(host="127.0.0.2", any_port=True)
    tls = server_tls(tmp_path, certificates)
    (tmp_path / "ca.crt").write_bytes(certificates.ca)
    monkeypatch.setenv("CASETRAIL_TLS_CA", str(tmp_path / "ca.crt"))
    console = await _start_console(options, verifier, audit, None, https=tls)
    await console.stop()
    assert console.url.startswith("https://127.0.0.2:")
    monkeypatch.delenv("CASETRAIL_TLS_CA")
    with pytest.raises(SystemExit, match="CASETRAIL_TLS_CA is not set"):
        await _start_console(options, verifier, audit, None, https=tls)
    console = await _start_console(options, verifier, audit, None)
    await console.stop()
    assert console.url.startswith("http://127.0.0.1:")
    assert "CASETRAIL_CONSOLE_ALLOW_PLAINTEXT=1" in capsys.readouterr().out


def test_casetrail_console_refuses_plain_http_beyond_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a real issuer (the development sign-in has its own refusal), before anything is
    loaded: exit 2 naming the setting."""
    monkeypatch.setenv("CASETRAIL_OIDC_ISSUER", "https://issuer.agency.example")
    monkeypatch.setenv("CASETRAIL_OIDC_AUDIENCE", "casetrail")
    for name in ("CASETRAIL_TLS_CERT", "CASETRAIL_TLS_KEY", "CASETRAIL_CONSOLE_ALLOW_PLAINTEXT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["console", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "CASETRAIL_CONSOLE_ALLOW_PLAINTEXT=1" in capsys.readouterr().err
    monkeypatch.setenv("CASETRAIL_CONSOLE_ALLOW_PLAINTEXT", "yes")
    with pytest.raises(SystemExit) as exit_:
        main(["console", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "CASETRAIL_CONSOLE_ALLOW_PLAINTEXT must be 1 or 0" in capsys.readouterr().err
