"""`casetrail serve` takes exactly the runner's options, parsed by the runner itself; the
addresses it serves on."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from casetrail_platform.addresses import host_port
from casetrail_platform.infrastructure import Infrastructure
from cli import main as cli
from services import runner
from tests.support.identity import TestIssuer


def test_serve_hands_every_option_to_the_runner_parser() -> None:
    argv = ["--backend", "distributed", "--metrics-address", "off", "--health-port", "7001"]
    with mock.patch.object(runner, "main") as started, pytest.raises(SystemExit) as stop:
        cli.main(["serve", *argv])
    assert stop.value.code == 0
    started.assert_called_once_with(argv)
    parsed = runner.parse(argv)
    assert (parsed.metrics_address, parsed.health_port) == ("off", 7001)


def test_serve_help_is_the_runner_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["serve", "--help"])
    assert stop.value.code == 0
    assert "--health-port" in capsys.readouterr().out


def test_other_commands_still_refuse_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["timeline", "case-1", "--health-port", "7001"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --health-port 7001" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["70000", "-1", "0", "abc", "١٢", "7_301", " 12 ", "9" * 5000])
def test_a_health_port_that_is_no_port_is_refused_naming_the_option(
    port: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--health-port`` (and ``CASETRAIL_HEALTH_PORT``, its default) is a port, 1 to 65535:
    70000 wrapped to 4464 and -1 to 65535, and a variable no number failed building the
    parser with a traceback; ASCII digits only, as every number setting (int() read "١٢" as
    12 and "7_301" as 7301)."""
    with pytest.raises(SystemExit) as stop:
        runner.parse(["--health-port", port])
    assert stop.value.code == 2
    assert "argument --health-port:" in capsys.readouterr().err

    monkeypatch.setenv("CASETRAIL_HEALTH_PORT", port)
    with pytest.raises(SystemExit) as stop:
        runner.parse([])
    assert stop.value.code == 2
    assert "argument --health-port:" in capsys.readouterr().err

    monkeypatch.setenv("CASETRAIL_HEALTH_PORT", "7001")
    assert runner.parse([]).health_port == 7001
    monkeypatch.setenv("CASETRAIL_HEALTH_PORT", "")
    assert runner.parse([]).health_port is None


async def test_a_bare_ipv6_host_is_served_bracketed(
    tmp_path: Path, issuer: TestIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--host ::1`` (or ``::``): every address the runner makes of it is bracketed, where
    ``:::0`` failed to bind ("could not bind gRPC server")."""
    infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
    [intake] = await runner.start_services(infra, ["intake"], "::1", {"intake": 0})
    try:
        async with grpc.aio.insecure_channel(host_port("::1", intake.port)) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await runner.stop_services([intake])
    options = runner.parse(["--host", "[::1]", "--any-port"])
    assert options.host == "::1"  # as in a URL: the address within (loopback, bindable)
    server = runner.start_metrics(options, ["intake"], {"intake": 0})
    try:
        assert "metrics       http://[::1]:" in capsys.readouterr().out
    finally:
        await runner.stop_metrics(server)


def test_an_address_whose_port_is_beyond_65535_is_refused_before_dialling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--audit`` and addresses.json: 127.0.0.1:70000 dialled port 4464."""
    with pytest.raises(SystemExit) as stop:
        cli.main(["timeline", "case-1", "--audit", "127.0.0.1:70000"])
    assert stop.value.code == 2
    assert "127.0.0.1:70000: the port must be from 1 to 65535" in capsys.readouterr().err
    assert host_port("::", 7301) == "[::]:7301"
    assert host_port("[::1]", 7301) == "[::1]:7301"
    assert host_port("intake.internal", 7301) == "intake.internal:7301"
