"""A port a running casetrail process listens on is refused to a second one (review of
platform, h-platform): gRPC sets SO_REUSEPORT on Linux by default, so two embedded ``serve``
processes on the same ports both reported serving and the kernel split acknowledged writes
between their two SQLite stores. The taken port now ends the second one in the runner's line
naming it. A host name is bound address by address: gRPC counted ``localhost``'s port added
when [::1] bound beside another process holding 127.0.0.1 (review of platform, rev2)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

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


async def test_a_name_is_refused_when_another_process_holds_one_of_its_addresses() -> None:
    with socket.socket() as taken:  # another process's listener, without SO_REUSEPORT
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        held = f"could not bind {{}} to localhost:{port} \\(127.0.0.1:{port}\\)$"
        with pytest.raises(BindError, match=held.format("gRPC server")):
            await create_server(f"localhost:{port}", [], [INTAKE], verifier=TestIssuer().verifier())
        with pytest.raises(BindError, match=held.format("the health server")):
            await create_health_server(f"localhost:{port}", health.aio.HealthServicer())


async def test_a_name_on_any_free_port_listens_on_each_of_its_addresses_on_one_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolve = socket.getaddrinfo

    def two_addresses(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "twohomed":
            return resolve(host, port, *args, **kwargs)
        return [
            *resolve("127.0.0.2", port, *args, **kwargs),
            *resolve("127.0.0.1", port, *args, **kwargs),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    server, port = await create_health_server("twohomed:0", health.aio.HealthServicer())
    await server.start()
    try:
        for address in ("127.0.0.2", "127.0.0.1"):
            socket.create_connection((address, port), timeout=5).close()
    finally:
        await server.stop(None)


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
