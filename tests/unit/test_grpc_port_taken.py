"""A port a running casetrail process listens on is refused to a second one (review of
platform, h-platform): gRPC sets SO_REUSEPORT on Linux by default, so two embedded ``serve``
processes on the same ports both reported serving and the kernel split acknowledged writes
between their two SQLite stores. The taken port now ends the second one in the runner's line
naming it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from grpc_health.v1 import health

from casetrail_platform.grpc_platform.server import BindError, create_health_server, create_server
from casetrail_platform.identity.issuer_http import IssuerHttpServer
from services import runner
from tests.support.certificates import INTAKE
from tests.support.identity import TestIssuer


async def test_a_second_server_on_a_running_ones_port_is_refused() -> None:
    verifier = TestIssuer().verifier()
    first, port, _ = await create_server("127.0.0.1:0", [], [INTAKE], verifier=verifier)
    await first.start()
    try:
        with pytest.raises(BindError, match=f"could not bind gRPC server to 127.0.0.1:{port}$"):
            await create_server(f"127.0.0.1:{port}", [], [INTAKE], verifier=verifier)
        with pytest.raises(BindError, match=f"the health server to 127.0.0.1:{port}$"):
            await create_health_server(f"127.0.0.1:{port}", health.aio.HealthServicer())
    finally:
        await first.stop(None)


async def test_a_second_health_server_on_a_running_ones_port_is_refused() -> None:
    first, port = await create_health_server("127.0.0.1:0", health.aio.HealthServicer())
    await first.start()
    try:
        with pytest.raises(BindError, match=f"could not bind gRPC server to 127.0.0.1:{port}$"):
            await create_server(f"127.0.0.1:{port}", [], [INTAKE], verifier=TestIssuer().verifier())
    finally:
        await first.stop(None)


def test_a_taken_port_ends_serve_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gRPC port of intake, then the development issuer's (bound first by ``make run``:
    a second one ended in a traceback, OSError)."""
    monkeypatch.setattr(runner, "configure_logging", lambda: None)  # pytest's own handlers stay
    argv = ["--service", "intake", "--metrics-address", "off", "--data-dir", str(tmp_path)]
    issuer = TestIssuer()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        monkeypatch.setitem(runner.DEFAULT_PORTS, "intake", port)
        with monkeypatch.context() as external_issuer:
            for name, value in issuer.env().items():
                external_issuer.setenv(name, value)
            with pytest.raises(SystemExit) as ended:
                runner.main(argv)
        assert str(ended.value) == (
            f"could not bind gRPC server to 127.0.0.1:{port} (--host, or a port taken: --any-port)"
        )
        monkeypatch.delenv("CASETRAIL_OIDC_ISSUER", raising=False)
        monkeypatch.setattr(runner, "DEV_ISSUER_PORT", port)
        with pytest.raises(SystemExit) as ended:
            runner.main(argv)
        assert str(ended.value) == (
            f"could not bind the token issuer to 127.0.0.1:{port}: Address already in use"
            " (--host, or a port taken: --any-port)"
        )
        with pytest.raises(BindError):
            IssuerHttpServer(list, port=port)
