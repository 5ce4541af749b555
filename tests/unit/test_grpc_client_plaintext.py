"""A gRPC client without TLS dials loopback only (review of identity, h-tls): ``channel()``
returned a plain channel whenever ``CASETRAIL_TLS_CA`` was unset, whatever the address, so
`casetrail console --audit audit.agency.internal:7304` sent every auditor's bearer token in
clear, as did every CLI command and the caseload views' recording in audit. The servers'
rule (``require_tls_beyond_loopback``), for their clients: beyond loopback a client needs
``CASETRAIL_TLS_CA``, or ``CASETRAIL_GRPC_ALLOW_PLAINTEXT=1`` when a mesh terminates TLS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from casetrail_platform.identity.tls import (
    ClientTls,
    PlaintextRefused,
    ServerTls,
    channel,
    require_tls_beyond_loopback_target,
    target_hosts,
)
from casetrail_platform.identity.verifier import TokenVerifier
from cli.main import main
from cli.rpc import connect
from services import runner
from services.console.settings import ConsoleSettings
from tests.support.certificates import Certificates

REMOTE = (
    "audit.agency.internal:7304",
    "10.0.0.5:7304",
    "[2001:db8::1]:7304",
    "0.0.0.0:7304",
    "127.0.0.2:7304",
    "dns:///audit.agency.internal:7304",
    "ipv4:127.0.0.1:7304,10.0.0.5:7304",
)
LOCAL = (
    "127.0.0.1:7304",
    "localhost:7304",
    "LOCALHOST:7304",
    "localhost",
    "[::1]:7304",
    "::1",
    "dns:///localhost:7304",
    "ipv6:[::1]:7304",
    "unix:/run/casetrail/audit.sock",
    "unix:///run/casetrail/audit.sock",
)
VARIABLES = ("CASETRAIL_TLS_CA", "CASETRAIL_TLS_CLIENT_CERT", "CASETRAIL_TLS_CLIENT_KEY")


@pytest.fixture
def no_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*VARIABLES, "CASETRAIL_GRPC_ALLOW_PLAINTEXT"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("address", REMOTE)
def test_plaintext_beyond_loopback_is_refused(address: str) -> None:
    with pytest.raises(PlaintextRefused) as refused:
        require_tls_beyond_loopback_target(address, None, plaintext_allowed=False)
    said = str(refused.value)
    assert said.startswith(f"gRPC to {address} without TLS would carry bearer tokens in plain")
    assert "CASETRAIL_TLS_CA" in said
    assert "CASETRAIL_GRPC_ALLOW_PLAINTEXT=1" in said


@pytest.mark.parametrize("address", LOCAL)
def test_plaintext_on_loopback_is_dialled(address: str) -> None:
    require_tls_beyond_loopback_target(address, None, plaintext_allowed=False)


@pytest.mark.parametrize("address", REMOTE)
def test_tls_or_the_setting_dials_beyond_loopback(address: str) -> None:
    require_tls_beyond_loopback_target(address, ClientTls(b"ca"), plaintext_allowed=False)
    require_tls_beyond_loopback_target(address, None, plaintext_allowed=True)


def test_the_hosts_of_a_target() -> None:
    assert target_hosts("Audit.Agency.Internal:7304") == ["audit.agency.internal"]
    assert target_hosts("[::1]:7304") == ["::1"]
    assert target_hosts("dns://8.8.8.8/audit:7304") == ["audit"]  # not the DNS server
    assert target_hosts("unix-abstract:casetrail") is None


async def test_channel_refuses_before_anything_is_sent(certificates: Certificates) -> None:
    with pytest.raises(PlaintextRefused, match="CASETRAIL_TLS_CA"):
        channel("audit.agency.internal:7304", plaintext_allowed=False)
    for opened in (
        channel("127.0.0.1:7304", plaintext_allowed=False),
        channel("audit.agency.internal:7304", plaintext_allowed=True),
        channel("audit.agency.internal:7304", ClientTls(certificates.ca), plaintext_allowed=False),
    ):
        await opened.close()


async def test_connect_refuses_before_opening_any_channel(no_tls: None) -> None:
    addresses = {
        "intake": "127.0.0.1:7301",
        "coordination": "127.0.0.1:7302",
        "planning": "127.0.0.1:7303",
        "audit": "audit.agency.internal:7304",
    }
    with pytest.raises(PlaintextRefused, match=r"audit\.agency\.internal:7304"):
        async with connect(addresses, lambda person: "token"):
            pass
    async with connect(addresses, lambda person: "token", plaintext_allowed=True):
        pass


@pytest.mark.parametrize(
    "argv",
    [
        ("timeline", "case-1", "--audit", "audit.agency.internal:7304"),
        ("break-glass", "reviews", "--intake", "10.0.0.5:7301"),
    ],
)
def test_a_command_aimed_beyond_loopback_refuses_before_connecting(
    argv: tuple[str, ...],
    no_tls: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2, a setting to give: the command's token never leaves (nothing listens there)."""
    monkeypatch.setenv("CASETRAIL_TOKEN", "a-token")
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--timeout", "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "without TLS would carry bearer tokens in plain text" in err
    assert "CASETRAIL_TLS_CA" in err
    assert "CASETRAIL_GRPC_ALLOW_PLAINTEXT=1" in err
    assert "UNAVAILABLE" not in err
    assert "Traceback" not in err


def test_a_command_with_the_setting_goes_on_to_connect(
    no_tls: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASETRAIL_TOKEN", "a-token")
    monkeypatch.setenv("CASETRAIL_GRPC_ALLOW_PLAINTEXT", "1")
    # 127.0.0.2 is not among the loopback names (it stands for another host), yet local:
    # nothing listens on port 1, so the call is refused at once.
    with pytest.raises(SystemExit) as exit_:
        main(["timeline", "case-1", "--audit", "127.0.0.2:1", "--timeout", "5"])
    assert exit_.value.code == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
    monkeypatch.setenv("CASETRAIL_GRPC_ALLOW_PLAINTEXT", "yes")
    with pytest.raises(SystemExit) as exit_:
        main(["timeline", "case-1", "--audit", "127.0.0.2:1"])
    assert exit_.value.code == 2
    assert "CASETRAIL_GRPC_ALLOW_PLAINTEXT must be 1 or 0" in capsys.readouterr().err


def test_casetrail_console_refuses_a_remote_audit_without_tls(
    tmp_path: Path,
    no_tls: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With a real issuer and the console on loopback: exit 2 before anything is served."""
    monkeypatch.setenv("CASETRAIL_OIDC_ISSUER", "https://issuer.agency.example")
    monkeypatch.setenv("CASETRAIL_OIDC_AUDIENCE", "casetrail")
    for name in ("CASETRAIL_TLS_CERT", "CASETRAIL_TLS_KEY", "CASETRAIL_CONSOLE_ALLOW_PLAINTEXT"):
        monkeypatch.delenv(name, raising=False)
    argv = ["console", "--audit", "audit.agency.internal:7304", "--port", "0"]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--data-dir", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("console: gRPC to audit.agency.internal:7304 without TLS")
    assert "CASETRAIL_TLS_CA" in err
    assert "CASETRAIL_GRPC_ALLOW_PLAINTEXT=1" in err


def test_console_settings_cannot_dial_a_remote_audit_in_plain_text() -> None:
    verifier = TokenVerifier.for_issuer("https://issuer.agency.example", "casetrail")
    with pytest.raises(PlaintextRefused, match="CASETRAIL_TLS_CA"):
        ConsoleSettings("audit.agency.internal:7304", verifier)
    ConsoleSettings("audit.agency.internal:7304", verifier, audit_plaintext_allowed=True)
    ConsoleSettings("audit.agency.internal:7304", verifier, tls=ClientTls(b"ca"))
    ConsoleSettings("127.0.0.1:7304", verifier)


def _server_tls(directory: Path, certificates: Certificates) -> tuple[Path, Path]:
    directory.mkdir()
    (directory / "tls.crt").write_bytes(certificates.server_chain)
    (directory / "tls.key").write_bytes(certificates.server_key)
    (directory / "tls.key").chmod(0o600)
    return directory / "tls.crt", directory / "tls.key"


async def test_casetrail_serve_with_tls_needs_the_consoles_ca_before_opening_anything(
    tmp_path: Path, certificates: Certificates, no_tls: None
) -> None:
    """`casetrail serve --tls-cert F --tls-key F` served the console, which took its client
    TLS from CASETRAIL_TLS_CA alone: it dialled audit in plain text, every page a 503."""
    certificate, key = _server_tls(tmp_path / "tls", certificates)
    data = tmp_path / "data"
    data.mkdir()
    argv = ["--any-port", "--data-dir", str(data), "--tls-cert", str(certificate)]
    options = runner.parse([*argv, "--tls-key", str(key)])
    with pytest.raises(SystemExit, match=r"^console: the services serve TLS .* CASETRAIL_TLS_CA"):
        await runner.serve(options, data)
    assert not os.listdir(data)  # no store, no key, no development issuer
    https = ServerTls(certificates.server_chain, certificates.server_key)
    with pytest.raises(SystemExit, match="CASETRAIL_TLS_CA is not set"):
        runner.console_tls(https)
    assert runner.console_tls(None) is None


def test_the_console_beside_the_services_dials_a_host_it_can_name() -> None:
    """Served on every address (0.0.0.0), the console dialled 0.0.0.0: no name a certificate
    holds; it dials loopback then."""
    assert runner.dialled_host("0.0.0.0") == "127.0.0.1"
    assert runner.dialled_host("::") == "[::1]"  # an IPv6-only socket serves no 127.0.0.1
    assert runner.dialled_host("[::]") == "[::1]"
    assert runner.dialled_host("::1") == "[::1]"
    assert runner.dialled_host("casetrail.agency.internal") == "casetrail.agency.internal"
