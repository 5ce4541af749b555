"""The caseload views take bearer tokens, and the chart serves them on the pod's address: with
CASETRAIL_TLS_CERT/_KEY (the chart sets them whenever grpcTls is on, always in production) they
are served over HTTPS (review of identity, h-tls); before, they were plain HTTP whatever the
settings, every token readable on the way."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
from yarl import URL

from casetrail_platform.grpc_platform.server import PlaintextRefused
from casetrail_platform.identity.tls import ServerTls
from services.caseload.processor import build_app
from services.caseload.routing import FORWARDED_MARK
from services.caseload.settings import CaseloadSettings, require_https_beyond_loopback
from tests.k8s.tools import REPO
from tests.support.caseload import assigned, recovered
from tests.support.certificates import Certificates
from tests.support.identity import TestIssuer
from tests.support.servers import free_port
from tests.support.waiting import eventually


def test_the_views_are_https_with_the_services_certificate(
    tmp_path: Path,
    certificates: Certificates,
) -> None:
    (tmp_path / "tls.crt").write_bytes(certificates.server_chain)
    (tmp_path / "tls.key").write_bytes(certificates.server_key)
    (tmp_path / "tls.key").chmod(0o600)
    env = {
        "CASETRAIL_TLS_CERT": str(tmp_path / "tls.crt"),
        "CASETRAIL_TLS_KEY": str(tmp_path / "tls.key"),
        "CASETRAIL_CASELOAD_DATA_DIR": str(tmp_path / "caseload"),
    }
    settings = CaseloadSettings.from_env(env)
    assert settings.web_tls is not None
    context = build_app(settings).conf.web_ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE  # no client certificates asked for


def test_without_a_certificate_the_views_stay_plain_http(tmp_path: Path) -> None:
    settings = CaseloadSettings.from_env({"CASETRAIL_CASELOAD_DATA_DIR": str(tmp_path)})
    assert settings.web_tls is None
    assert build_app(settings).conf.web_ssl_context is None


def _worker(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Kafka on a port nothing listens on: a worker let through fails there, after the check.
    return subprocess.run(
        [sys.executable, "-m", "services.caseload", "worker", "--web-port", "16391", *args],
        cwd=REPO,
        env={
            "PYTHONPATH": f"{REPO}:{REPO / 'protos'}",
            "CASETRAIL_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "CASETRAIL_CASELOAD_DATA_DIR": env.pop("data_dir"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_worker_refuses_plain_http_beyond_loopback_in_one_line(tmp_path: Path) -> None:
    """The chart binds the views to 0.0.0.0 (--web-bind): without a certificate they served
    bearer tokens in plain HTTP there, unlike the gRPC servers and the console."""
    for bind in ("0.0.0.0", "::", "127.0.0.2"):
        result = _worker("--web-bind", bind, data_dir=str(tmp_path))
        assert result.returncode == 1, (bind, result.stderr)
        [line] = result.stderr.strip().splitlines()  # one line, no traceback
        assert line.startswith(f"caseload settings: the caseload views on {bind} "), line
        assert "CASETRAIL_CASELOAD_ALLOW_PLAINTEXT=1" in result.stderr
        assert "Kafka" not in result.stderr  # refused before anything started


def test_the_setting_or_loopback_lets_the_worker_start(tmp_path: Path) -> None:
    for args, env in (
        (("--web-bind", "0.0.0.0"), {"CASETRAIL_CASELOAD_ALLOW_PLAINTEXT": "1"}),
        (("--web-bind", "127.0.0.1"), {}),
        ((), {}),
    ):
        result = _worker(*args, data_dir=str(tmp_path), **env)
        assert "caseload views" not in result.stderr, (args, env)
        assert "Unable to bootstrap" in result.stderr, (args, env)  # went on to Kafka


@pytest.mark.parametrize(
    ("bind", "tls", "allowed", "refused"),
    [
        ("0.0.0.0", False, False, True),
        ("[::]", False, False, True),
        ("0.0.0.0", False, True, False),
        ("0.0.0.0", True, False, False),
        ("127.0.0.1", False, False, False),
        ("::1", False, False, False),
    ],
)
def test_the_views_rule_is_the_grpc_servers_with_their_own_setting(
    bind: str, tls: bool, allowed: bool, refused: bool
) -> None:
    server_tls = ServerTls(b"chain", b"key") if tls else None
    if refused:
        with pytest.raises(PlaintextRefused, match="CASETRAIL_CASELOAD_ALLOW_PLAINTEXT=1"):
            require_https_beyond_loopback(bind, server_tls, plaintext_allowed=allowed)
    else:
        require_https_beyond_loopback(bind, server_tls, plaintext_allowed=allowed)


def test_the_refusal_names_the_certificate_settings_the_views_take() -> None:
    """Only the environment: the worker has no ``--tls-cert`` (the gRPC servers' hint said it)."""
    with pytest.raises(PlaintextRefused) as refused:
        require_https_beyond_loopback("0.0.0.0", None, plaintext_allowed=False)
    assert "(CASETRAIL_TLS_CERT/_KEY)" in str(refused.value)
    assert "--tls-cert" not in str(refused.value)


def test_the_setting_is_1_or_0(tmp_path: Path) -> None:
    env = {"CASETRAIL_CASELOAD_DATA_DIR": str(tmp_path)}
    assert not CaseloadSettings.from_env(env).plaintext_allowed
    assert CaseloadSettings.from_env(
        {**env, "CASETRAIL_CASELOAD_ALLOW_PLAINTEXT": "1"}
    ).plaintext_allowed
    with pytest.raises(ValueError, match="CASETRAIL_CASELOAD_ALLOW_PLAINTEXT must be 1 or 0"):
        CaseloadSettings.from_env({**env, "CASETRAIL_CASELOAD_ALLOW_PLAINTEXT": "yes"})


def test_the_worker_refuses_plain_grpc_to_a_remote_audit_in_one_line(tmp_path: Path) -> None:
    """Every view's read is recorded in audit with its reader's bearer token: without
    CASETRAIL_TLS_CA to audit beyond loopback the worker refuses to start (h-tls), unless
    CASETRAIL_GRPC_ALLOW_PLAINTEXT=1 (the chart sets it with the views' own setting)."""
    remote = {"CASETRAIL_AUDIT_ADDRESS": "audit.agency.internal:7304"}
    result = _worker(data_dir=str(tmp_path), **remote)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("caseload settings: gRPC to audit.agency.internal:7304 without TLS")
    assert "CASETRAIL_TLS_CA" in line
    assert "CASETRAIL_GRPC_ALLOW_PLAINTEXT=1" in line
    for env in ({**remote, "CASETRAIL_GRPC_ALLOW_PLAINTEXT": "1"}, {}):
        result = _worker(data_dir=str(tmp_path), **env)
        assert "without TLS" not in result.stderr, env
        assert "Unable to bootstrap" in result.stderr, env  # went on to Kafka


def test_the_audit_setting_is_the_grpc_clients(tmp_path: Path) -> None:
    env = {"CASETRAIL_CASELOAD_DATA_DIR": str(tmp_path)}
    assert not CaseloadSettings.from_env(env).audit_plaintext_allowed
    allowed = {**env, "CASETRAIL_GRPC_ALLOW_PLAINTEXT": "1"}
    assert CaseloadSettings.from_env(allowed).audit_plaintext_allowed
    with pytest.raises(ValueError, match="CASETRAIL_GRPC_ALLOW_PLAINTEXT must be 1 or 0"):
        CaseloadSettings.from_env({**env, "CASETRAIL_GRPC_ALLOW_PLAINTEXT": "yes"})


@dataclass
class Worker:
    app: Any
    port: int
    recorded: list[tuple[str, ...]]
    refused: list[str]
    """The processor's own refusals recorded (``AccessRecorder.refuse``), by reason."""


def _serving_worker(tmp_path: Path, name: str, env: dict[str, str]) -> Worker:
    """A worker's views on a port of their own, owning no table (the router's look-up is
    set by the test), audit's recording faked."""
    from services.caseload.domain import held_key

    port = free_port()
    settings = CaseloadSettings.from_env(
        {
            **env,
            "CASETRAIL_CASELOAD_DATA_DIR": str(tmp_path / name),
            "CASETRAIL_CASELOAD_WEB_PORT": str(port),
            "CASETRAIL_AUDIT_ADDRESS": "127.0.0.1:1",
        }
    )
    app = build_app(settings)
    worker = Worker(app, port, [], [])

    async def record(caller: Any, view: Any, case_ids: Any) -> None:
        worker.recorded.append(tuple(case_ids))

    async def refuse(caller: Any, view: Any, refusal: Any) -> NoReturn:
        worker.refused.append(refusal.code)
        raise refusal

    assert app.access_recorder is not None
    app.access_recorder.record = record  # type: ignore[method-assign]
    app.access_recorder.refuse = refuse  # type: ignore[method-assign]
    recovered(app)
    app.held_cases = {held_key("w-ana", "case-1"): {"follow_up_due": None}}
    return worker


@pytest.mark.parametrize(
    ("owner_host", "tls_name", "trusted", "status"),
    [
        ("localhost", None, True, 200),
        # The chart's canonical URL is the pod's IP, which its certificate does not name.
        ("127.0.0.1", "localhost", True, 200),
        ("127.0.0.1", None, True, 503),
        ("localhost", None, False, 503),  # no CASETRAIL_TLS_CA: the system's CAs only
        ("gone", None, True, 503),  # nothing listens at the owner's address
    ],
)
async def test_a_view_is_forwarded_to_its_owner_over_https_checked_against_the_deployments_ca(
    tmp_path: Path,
    issuer: TestIssuer,
    certificates: Certificates,
    owner_host: str,
    tls_name: str | None,
    trusted: bool,
    status: int,
) -> None:
    """Faust forwarded a per-worker view to the owning process with its default aiohttp
    client, trusting the system's CAs only and checking the certificate against the pod's IP
    (review h-web): under HTTPS every view routed was a bare 500. Now the deployment's CA
    (CASETRAIL_TLS_CA) and the name the certificate carries (CASETRAIL_CASELOAD_TLS_NAME)
    while dialling the owner's address; an owner that cannot be reached is 503
    OWNER_UNAVAILABLE with the answer headers."""
    import json
    import ssl

    import aiohttp
    from yarl import URL

    for name, pem in (("tls.crt", certificates.server_chain), ("ca.crt", certificates.ca)):
        (tmp_path / name).write_bytes(pem)
    (tmp_path / "tls.key").write_bytes(certificates.server_key)
    (tmp_path / "tls.key").chmod(0o600)
    env = {
        **issuer.env(),
        "CASETRAIL_TLS_CERT": str(tmp_path / "tls.crt"),
        "CASETRAIL_TLS_KEY": str(tmp_path / "tls.key"),
        **({"CASETRAIL_TLS_CA": str(tmp_path / "ca.crt")} if trusted else {}),
        **({"CASETRAIL_CASELOAD_TLS_NAME": tls_name} if tls_name else {}),
    }
    asked, owner = _serving_worker(tmp_path, "asked", env), _serving_worker(tmp_path, "owner", env)
    asked.app.held_cases = {}
    owner_url = URL(f"http://{owner_host}:{owner.port}")
    if owner_host == "gone":
        owner_url = URL(f"http://localhost:{free_port()}")
    asked.app.router.key_store = lambda table, key: owner_url
    owner.app.router.key_store = lambda table, key: URL(owner.app.conf.canonical_url)
    for worker in (asked, owner):
        worker.app.web.init_server()
        await worker.app.web.start_server()
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    token = issuer.mint("james.liu", "auditor")
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"https://localhost:{asked.port}/caseload/w-ana/",
                headers={"Authorization": f"Bearer {token}"},
                ssl=client,
            ) as answer,
        ):
            body = json.loads(await answer.text())
            headers = answer.headers
    finally:
        for worker in (asked, owner):
            await worker.app.web.stop_server()
        await asked.app.http_client.close()
    assert answer.status == status, body
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert asked.recorded == []
    if status == 200:
        assert body["case_ids"] == ["case-1"]
        assert owner.recorded == [("case-1",)]
    else:
        assert body["reason"] == "OWNER_UNAVAILABLE"
        assert owner.recorded == []


def test_the_name_the_views_certificate_carries_is_a_dns_name(
    tmp_path: Path, certificates: Certificates
) -> None:
    (tmp_path / "tls.crt").write_bytes(certificates.server_chain)
    (tmp_path / "tls.key").write_bytes(certificates.server_key)
    (tmp_path / "tls.key").chmod(0o600)
    env = {
        "CASETRAIL_CASELOAD_DATA_DIR": str(tmp_path),
        "CASETRAIL_TLS_CERT": str(tmp_path / "tls.crt"),
        "CASETRAIL_TLS_KEY": str(tmp_path / "tls.key"),
    }
    named = {**env, "CASETRAIL_CASELOAD_TLS_NAME": " casetrail-caseload "}
    assert CaseloadSettings.from_env(named).web_tls_name == "casetrail-caseload"
    assert CaseloadSettings.from_env(env).web_tls_name is None
    plain = {"CASETRAIL_CASELOAD_DATA_DIR": str(tmp_path), "CASETRAIL_CASELOAD_TLS_NAME": "x"}
    assert CaseloadSettings.from_env(plain).web_tls_name is None  # no HTTPS, no name to check
    for bad in ("https://caseload", "caseload:6066", "-caseload", "case load"):
        with pytest.raises(ValueError, match="CASETRAIL_CASELOAD_TLS_NAME"):
            CaseloadSettings.from_env({**env, "CASETRAIL_CASELOAD_TLS_NAME": bad})


def _https_env(tmp_path: Path, issuer: TestIssuer, certificates: Certificates) -> dict[str, str]:
    """The views over HTTPS, the deployment's CA trusted and the name their certificate
    carries (localhost) checked while dialling an owner's IP, as the chart sets them."""
    for name, pem in (("tls.crt", certificates.server_chain), ("ca.crt", certificates.ca)):
        (tmp_path / name).write_bytes(pem)
    (tmp_path / "tls.key").write_bytes(certificates.server_key)
    (tmp_path / "tls.key").chmod(0o600)
    return {
        **issuer.env(),
        "CASETRAIL_TLS_CERT": str(tmp_path / "tls.crt"),
        "CASETRAIL_TLS_KEY": str(tmp_path / "tls.key"),
        "CASETRAIL_TLS_CA": str(tmp_path / "ca.crt"),
        "CASETRAIL_CASELOAD_TLS_NAME": "localhost",
    }


@asynccontextmanager
async def _serving(*workers: Worker) -> AsyncIterator[None]:
    for worker in workers:
        worker.app.web.init_server()
        await worker.app.web.start_server()
    try:
        yield
    finally:
        for worker in workers:
            await worker.app.web.stop_server()
            await worker.app.http_client.close()
            await worker.app.router.close()


def _routing_to(worker: Worker, owner: Worker) -> None:
    """``worker``'s router takes ``owner`` for every worker's owner: itself, or the other
    process at its IP (127.0.0.1, which the certificate does not name: as a pod's)."""
    owner_url = (
        URL(worker.app.conf.canonical_url)
        if owner is worker
        else URL(f"http://127.0.0.1:{owner.port}")
    )
    worker.app.router.key_store = lambda table, key: owner_url


def _asked_and_owner(
    tmp_path: Path, issuer: TestIssuer, certificates: Certificates
) -> tuple[Worker, Worker]:
    """``asked`` holds no table and routes every per-worker view to ``owner``, which holds
    w-ana's case-1."""
    env = _https_env(tmp_path, issuer, certificates)
    asked, owner = _serving_worker(tmp_path, "asked", env), _serving_worker(tmp_path, "owner", env)
    asked.app.held_cases = {}
    _routing_to(asked, owner)
    _routing_to(owner, owner)
    return asked, owner


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


async def _sent_as_is(port: int, request: bytes, ca: Path) -> RawAnswer:
    """``request``'s bytes over TLS as they are (no client sends a bad Host, or a body with a
    GET), the answer read until the server closes (the request says ``Connection: close``)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        port,
        ssl=ssl.create_default_context(cafile=str(ca)),
        server_hostname="localhost",
    )
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return RawAnswer(int(status_line.split()[1]), headers, body)


def _get(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", *headers, "Connection: close", "", ""]).encode()


def _has_answer_headers(headers: Mapping[str, str]) -> bool:
    return headers["Cache-Control"] == "no-store" and headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 60\r\n\r\n" + b"x" * 60,
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ],
)
async def test_a_view_with_a_body_is_refused_before_routing_and_the_next_callers_is_answered(
    tmp_path: Path,
    issuer: TestIssuer,
    certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
    framing: bytes,
) -> None:
    """The router forwarded every header of the caller's but no body (review rev2): the owner
    took the next request on the pooled connection, another caller's, as the rest of this one,
    and answered it 400, echoing and logging its bearer token (Content-Length), or only after
    10 s (chunked). Anyone could, with no token. Now a view with a body is refused 400
    BODY_NOT_ALLOWED before it is routed, and only the views' headers are forwarded."""
    asked, owner = _asked_and_owner(tmp_path, issuer, certificates)
    token = issuer.mint("james.liu", "auditor")
    async with _serving(asked, owner):
        request = b"GET /caseload/w-ana/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        refused = await _sent_as_is(asked.port, request + framing, tmp_path / "ca.crt")
        every_workers = request.replace(b"/caseload/w-ana/", b"/caseload/")
        also_refused = await _sent_as_is(owner.port, every_workers + framing, tmp_path / "ca.crt")
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"https://localhost:{asked.port}/caseload/w-ana/",
                headers={"Authorization": f"Bearer {token}"},
                ssl=ssl.create_default_context(cafile=str(tmp_path / "ca.crt")),
                timeout=aiohttp.ClientTimeout(total=5),
            ) as answer,
        ):
            body = json.loads(await answer.text())
    assert refused.status == 400, refused
    assert json.loads(refused.body)["reason"] == "BODY_NOT_ALLOWED"
    assert _has_answer_headers(refused.headers)
    assert also_refused.status == 400, also_refused  # a view not routed, as every view
    assert answer.status == 200, body
    assert body["case_ids"] == ["case-1"]
    assert owner.recorded == [("case-1",)]
    assert not [record for record in caplog.records if token in record.getMessage()]


@pytest.mark.parametrize("host", ["a:b", "a:99999", "a@b", ""])
async def test_a_view_is_forwarded_to_the_owners_address_with_the_views_headers_only(
    tmp_path: Path, issuer: TestIssuer, certificates: Certificates, host: str
) -> None:
    """The forwarded address was the caller's (request.url, built from its Host header): a
    Host of a:b, a:99999 or an empty one raised ValueError, a@b kept a user the client refused
    beside the Authorization header; each a bare 500 without the answer headers, where the
    owner's own process answered 200 (review rev2). Now the owner's address and the caller's
    path and query, and of the caller's headers only Authorization and Accept, with the mark of
    a forwarded view."""
    asked, owner = _asked_and_owner(tmp_path, issuer, certificates)
    seen: list[tuple[str, dict[str, str]]] = []
    route = owner.app.router.route_req

    async def noting(table: str, key: Any, web: Any, request: Any) -> Any:
        seen.append((str(request.rel_url), dict(request.headers)))
        return await route(table, key, web, request)

    owner.app.router.route_req = noting
    token = issuer.mint("james.liu", "auditor")
    request = _get(
        "/caseload/w-ana/?limit=5&purpose=confidentiality_review",
        f"Host: {host}",
        f"Authorization: Bearer {token}",
        "Accept: application/json",
        "Cookie: session=elsewhere",
        "Forwarded: for=10.1.2.3",
        "Via: 1.1 ingress",
    )
    async with _serving(asked, owner):
        answer = await _sent_as_is(asked.port, request, tmp_path / "ca.crt")
    assert answer.status == 200, answer
    assert json.loads(answer.body)["case_ids"] == ["case-1"]
    assert _has_answer_headers(answer.headers)
    assert owner.recorded == [("case-1",)]
    [(path, forwarded)] = seen
    assert path == "/caseload/w-ana/?limit=5&purpose=confidentiality_review"
    assert forwarded["Host"] == f"127.0.0.1:{owner.port}"
    assert forwarded["Authorization"] == f"Bearer {token}"
    assert forwarded["Accept"] == "application/json"
    assert forwarded[FORWARDED_MARK] == "1"
    clients_own = {"Host", "Accept-Encoding", "User-Agent"}
    assert set(forwarded) - clients_own == {"Authorization", "Accept", FORWARDED_MARK}


async def test_a_view_forwarded_once_is_not_forwarded_again(
    tmp_path: Path, issuer: TestIssuer, certificates: Certificates
) -> None:
    """Two processes that each took the other for the worker's owner (a rebalance seen at
    different moments) sent one view back and forth, ~200 times in 3 s and on after its caller
    left (review rev2). Now a forwarded view is answered by its receiver if it owns the worker,
    else 503 OWNER_UNAVAILABLE: two hops, nothing recorded."""
    env = _https_env(tmp_path, issuer, certificates)
    first, second = (
        _serving_worker(tmp_path, "first", env),
        _serving_worker(tmp_path, "second", env),
    )
    _routing_to(first, second)
    _routing_to(second, first)
    hops: list[int] = []
    for worker in (first, second):
        route = worker.app.router.route_req

        async def counting(*args: Any, route: Any = route, port: int = worker.port) -> Any:
            hops.append(port)
            return await route(*args)

        worker.app.router.route_req = counting
    token = issuer.mint("james.liu", "auditor")
    async with _serving(first, second):
        answer = await _sent_as_is(
            first.port,
            _get("/caseload/w-ana/", "Host: localhost", f"Authorization: Bearer {token}"),
            tmp_path / "ca.crt",
        )
    assert answer.status == 503, answer
    assert json.loads(answer.body)["reason"] == "OWNER_UNAVAILABLE"
    assert _has_answer_headers(answer.headers)
    assert hops == [first.port, second.port]
    assert first.recorded == second.recorded == []


async def test_the_mark_of_a_forwarded_view_lets_a_caller_skip_nothing(
    tmp_path: Path, issuer: TestIssuer, certificates: Certificates
) -> None:
    """A caller may send the mark itself: the owner still verifies the token and records the
    read; a process that does not own the worker refuses rather than answering from tables
    that do not hold them."""
    asked, owner = _asked_and_owner(tmp_path, issuer, certificates)
    token = issuer.mint("james.liu", "auditor")
    marked = f"{FORWARDED_MARK}: 1"
    ca = tmp_path / "ca.crt"
    async with _serving(asked, owner):
        anonymous = await _sent_as_is(owner.port, _get("/caseload/w-ana/", "Host: x", marked), ca)
        signed = _get("/caseload/w-ana/", "Host: x", marked, f"Authorization: Bearer {token}")
        read = await _sent_as_is(owner.port, signed, ca)
        not_the_owner = await _sent_as_is(asked.port, signed, ca)
    assert anonymous.status == 401, anonymous
    assert read.status == 200, read
    assert owner.recorded == [("case-1",)]
    assert not_the_owner.status == 503, not_the_owner
    assert json.loads(not_the_owner.body)["reason"] == "OWNER_UNAVAILABLE"
    assert asked.recorded == []


class _FailingClient:
    """An HTTP client failing as nothing in aiohttp's errors says (a bug, a library's)."""

    def request(self, **kwargs: Any) -> Any:
        raise RuntimeError(f"went wrong with {kwargs['headers']}")

    async def close(self) -> None:
        pass


async def test_any_failure_of_forwarding_is_503_logged_by_its_type_only(
    tmp_path: Path,
    issuer: TestIssuer,
    certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only aiohttp's errors and timeouts were a 503: anything else was a bare 500, without the
    answer headers, its traceback logged with whatever its words held."""
    asked, owner = _asked_and_owner(tmp_path, issuer, certificates)
    asked.app.http_client = _FailingClient()
    token = issuer.mint("james.liu", "auditor")
    async with _serving(asked, owner):
        answer = await _sent_as_is(
            asked.port,
            _get("/caseload/w-ana/", "Host: localhost", f"Authorization: Bearer {token}"),
            tmp_path / "ca.crt",
        )
    assert answer.status == 503, answer
    assert json.loads(answer.body)["reason"] == "OWNER_UNAVAILABLE"
    assert _has_answer_headers(answer.headers)
    assert "RuntimeError" in caplog.text
    assert token not in caplog.text
    assert "went wrong" not in caplog.text


def test_a_view_is_a_get_or_head_without_a_body() -> None:
    """Faust serves the views' GET and HEAD only (aiohttp answers 405 to any other method);
    the check before routing holds it of what is forwarded whatever a view comes to serve."""
    from aiohttp.test_utils import make_mocked_request

    from services.caseload.access import Refused
    from services.caseload.routing import require_a_plain_read

    for method in ("GET", "HEAD"):
        require_a_plain_read(make_mocked_request(method, "/caseload/w-ana/"))
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        with pytest.raises(Refused) as refused:
            require_a_plain_read(make_mocked_request(method, "/caseload/w-ana/"))
        assert (refused.value.status, refused.value.code) == (405, "METHOD_NOT_ALLOWED")


def _gathering_group(
    tmp_path: Path, issuer: TestIssuer, certificates: Certificates
) -> tuple[Worker, Worker]:
    """``asked`` and ``owner`` in one group over HTTPS: ``asked`` holds partition 0 (w-ben's
    case-2 and the unassigned u-2), ``owner`` the others (w-ana's case-1 and u-1)."""
    from services.caseload.domain import UNASSIGNED, held_key

    env = _https_env(tmp_path, issuer, certificates)
    asked, owner = _serving_worker(tmp_path, "asked", env), _serving_worker(tmp_path, "owner", env)
    asked.app.held_cases = {
        held_key("w-ben", "case-2"): {"follow_up_due": "2030-01-10"},
        held_key(UNASSIGNED, "u-2"): {"follow_up_due": None},
    }
    owner.app.held_cases = {
        held_key("w-ana", "case-1"): {"follow_up_due": "2029-12-01"},
        held_key(UNASSIGNED, "u-1"): {"follow_up_due": None},
    }
    every = range(asked.app.settings.partitions)
    assigned((asked.app, [0]), (owner.app, every[1:]))
    return asked, owner


async def _https_get(port: int, path: str, ca: Path, headers: Mapping[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"https://localhost:{port}{path}",
            headers=headers,
            ssl=ssl.create_default_context(cafile=str(ca)),
        ) as answer,
    ):
        return answer.status, json.loads(await answer.text())


async def test_an_all_worker_view_is_gathered_from_every_process_and_recorded_once(
    tmp_path: Path, issuer: TestIssuer, certificates: Certificates
) -> None:
    """Each process answered ``/caseload/`` and ``/overdue/`` from its own partitions, 200 and
    ``truncated: false`` (review rev-chart). Now the process asked adds every other process's
    part, had over the deployment's TLS as a per-worker view is, and records the cases its
    answer names, once; the parts record nothing."""
    asked, owner = _gathering_group(tmp_path, issuer, certificates)
    ca = tmp_path / "ca.crt"
    token = {"Authorization": f"Bearer {issuer.mint('james.liu', 'auditor')}"}
    async with _serving(asked, owner):
        caseloads = await _https_get(asked.port, "/caseload/", ca, token)
        first = await _https_get(owner.port, "/caseload/?limit=1", ca, token)
        overdue = await _https_get(owner.port, "/overdue/?today=2030-02-01&limit=1", ca, token)
    assert caseloads == (
        200,
        {"workers": {"w-ana": 1, "w-ben": 1}, "unassigned": ["u-1", "u-2"], "truncated": False},
    )
    assert first == (
        200,
        {"workers": {"w-ana": 1, "w-ben": 1}, "unassigned": ["u-1"], "truncated": True},
    )
    assert overdue[0] == 200, overdue
    assert [o["case_id"] for o in overdue[1]["overdue"]] == ["case-1"]  # the oldest of both
    assert overdue[1]["truncated"] is True
    assert asked.recorded == [("u-1", "u-2")]
    assert owner.recorded == [("u-1",), ("case-1",)]


async def test_a_part_is_answered_only_to_the_process_of_the_group_that_asked_for_it(
    tmp_path: Path, issuer: TestIssuer, certificates: Certificates
) -> None:
    """A part is no read of its own (the process asked records the view's), so it must be no
    way around the record: a caller sending the marks of a part, a nonce guessed or taken from
    a part already answered, or naming a process that is none of the group, gets 403
    PART_NOT_ASKED, refused on the record naming no case."""
    from services.caseload.gathering import ASKER, PART_MARK

    asked, owner = _gathering_group(tmp_path, issuer, certificates)
    ca = tmp_path / "ca.crt"
    token = {"Authorization": f"Bearer {issuer.mint('james.liu', 'auditor')}"}
    sent: list[dict[str, str]] = []
    ask = asked.app.router.ask

    async def noting(process: URL, view: URL, headers: Mapping[str, str], **options: Any) -> Any:
        sent.append(dict(headers))
        return await ask(process, view, headers, **options)

    asked.app.router.ask = noting
    asker = str(asked.app.conf.canonical_url)
    async with _serving(asked, owner):
        assert (await _https_get(asked.port, "/caseload/", ca, token))[0] == 200
        [part] = sent
        assert part[ASKER] == asker
        assert part["Authorization"] == token["Authorization"]
        asked.recorded.clear()
        refusals = [
            await _https_get(owner.port, "/caseload/", ca, {**token, **marks})
            for marks in (
                {PART_MARK: part[PART_MARK], ASKER: asker},  # answered already
                {PART_MARK: "guessed", ASKER: asker},
                {PART_MARK: "guessed", ASKER: str(owner.app.conf.canonical_url)},
                {PART_MARK: "guessed", ASKER: "http://127.0.0.1:1"},
                {FORWARDED_MARK: "1"},
            )
        ]
        anonymous = await _https_get(owner.port, "/overdue/", ca, {PART_MARK: "x", ASKER: asker})
    for status, body in refusals:
        assert (status, body["reason"]) == (403, "PART_NOT_ASKED"), body
    assert anonymous[0] == 401  # the token is verified all the same
    assert asked.recorded == owner.recorded == []
    assert asked.refused == []
    assert owner.refused == ["PART_NOT_ASKED"] * len(refusals)


@pytest.mark.parametrize("trouble", ["gone", "not ready", "a rebalance", "a partition unheld"])
async def test_an_all_worker_view_without_every_partitions_part_is_refused(
    tmp_path: Path, issuer: TestIssuer, certificates: Certificates, trouble: str
) -> None:
    """A part of the view is never shown as if it were all: a process out of reach or not
    ready, parts read under different assignments (a partition counted twice) or a partition
    nobody holds make the view 503 OWNER_UNAVAILABLE, nothing recorded."""
    asked, owner = _gathering_group(tmp_path, issuer, certificates)
    every = range(asked.app.settings.partitions)
    if trouble == "gone":  # nothing listens where the assignment puts the other process
        assigned((asked.app, [0]), (f"http://127.0.0.1:{free_port()}", every[1:]))
    elif trouble == "not ready":
        owner.app.readiness.rebalance_started()
    elif trouble == "a rebalance":  # the owner was given partition 0 too, the asked not yet
        assigned((asked.app, [0]), (owner.app, every), told=[owner.app])
    else:
        assigned((asked.app, [0]), (owner.app, every[1:-1]))
    token = {"Authorization": f"Bearer {issuer.mint('james.liu', 'auditor')}"}
    async with _serving(asked, owner):
        answers = [
            await _https_get(asked.port, path, tmp_path / "ca.crt", token)
            for path in ("/caseload/", "/overdue/")
        ]
    for status, body in answers:
        assert (status, body["reason"]) == (503, "OWNER_UNAVAILABLE"), body
    assert asked.recorded == owner.recorded == []


async def test_a_forged_part_is_refused_on_the_record_naming_its_caller(
    tmp_path: Path,
    issuer: TestIssuer,
    certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A verified caller sending a part's marks was refused 403 PART_NOT_ASKED with nothing
    recorded and nobody named in the log (review rev-r3b): the refusal is recorded as the
    views' other refusals (audit records the processor's refusal with the caller's token,
    naming no case; rev-web) and logged with the caller's subject and agency, never their
    token. Without a valid token it stays 401, nothing recorded."""
    from casetrail.audit.v1 import audit_pb2
    from services.caseload.gathering import ASKER, PART_MARK

    asked, owner = _gathering_group(tmp_path, issuer, certificates)
    recorded: list[tuple[str, int, str]] = []

    async def refuse(caller: Any, view: int, refusal: Any) -> NoReturn:
        recorded.append((caller.principal.subject, view, refusal.code))
        raise refusal

    owner.app.access_recorder.refuse = refuse
    token = issuer.mint("mallory.k", "receptionist", agency="westbay-dss")
    marks = {PART_MARK: "x" * 43, ASKER: str(asked.app.conf.canonical_url)}
    ca = tmp_path / "ca.crt"
    async with _serving(asked, owner):
        forged = [
            await _https_get(owner.port, path, ca, {"Authorization": f"Bearer {token}", **marks})
            for path in ("/caseload/", "/overdue/")
        ]
        unverified = await _https_get(
            owner.port, "/caseload/", ca, {"Authorization": "Bearer not-a-token", **marks}
        )
    for status, body in forged:
        assert (status, body["reason"]) == (403, "PART_NOT_ASKED"), body
    assert unverified[0] == 401
    assert recorded == [
        ("mallory.k", audit_pb2.CASELOAD_VIEW_CASELOADS, "PART_NOT_ASKED"),
        ("mallory.k", audit_pb2.CASELOAD_VIEW_OVERDUE, "PART_NOT_ASKED"),
    ]
    assert owner.recorded == []
    refusals = [r.getMessage() for r in caplog.records if "PART_NOT_ASKED" in r.getMessage()]
    assert len(refusals) == 2
    assert all("mallory.k" in m and "westbay-dss" in m for m in refusals), refusals
    assert token not in caplog.text


async def test_a_part_whose_asker_cannot_be_asked_back_is_unavailable_not_unasked(
    tmp_path: Path,
    issuer: TestIssuer,
    certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A confirmation that could not be made (the asker out of reach, or its connections all
    taken) was taken for a part nobody asked: 403 PART_NOT_ASKED, logged as one. It is 503
    OWNER_UNAVAILABLE, as any process of the group that cannot be asked, recorded as no
    refusal."""
    from services.caseload.gathering import ASKER, PART_MARK

    asked, owner = _gathering_group(tmp_path, issuer, certificates)
    token = f"Bearer {issuer.mint('james.liu', 'auditor')}"
    marks = {PART_MARK: "x" * 43, ASKER: str(asked.app.conf.canonical_url)}
    async with _serving(owner):  # the asker's views are down
        status, body = await _https_get(
            owner.port, "/caseload/", tmp_path / "ca.crt", {"Authorization": token, **marks}
        )
    assert (status, body["reason"]) == (503, "OWNER_UNAVAILABLE"), body
    assert owner.recorded == []
    assert "PART_NOT_ASKED" not in caplog.text


async def _views_at_once(
    ports: list[int], path: str, ca: Path, headers: Mapping[str, str]
) -> list[tuple[int, Any]]:
    """``path`` asked of each of ``ports`` at once, each on its own connection."""
    context = ssl.create_default_context(cafile=str(ca))

    async def one(http: aiohttp.ClientSession, port: int) -> tuple[int, Any]:
        url = f"https://localhost:{port}{path}"
        async with http.get(url, headers=headers, ssl=context) as answer:
            return answer.status, json.loads(await answer.text())

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        return await asyncio.gather(*(one(http, port) for port in ports))


def _with_faust_pool(monkeypatch: pytest.MonkeyPatch, workers: list[Worker], size: int) -> None:
    """Faust's client (100 connections) made ``size`` for ``workers``, its wait for a free
    connection ending sooner (aiohttp counts it in the connect timeout)."""
    from services.caseload import routing

    monkeypatch.setattr(routing, "CONNECT_SECONDS", 1.0)
    for worker in workers:
        connector = aiohttp.TCPConnector(limit=size)
        worker.app.http_client = aiohttp.ClientSession(connector=connector)


async def test_two_processes_gathering_from_each_other_at_once_answer_every_view(
    tmp_path: Path,
    issuer: TestIssuer,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A part request holds a connection of its asker until its receiver has confirmed it with
    the asker, and both went through Faust's client: with more views gathered at once on each
    of two processes than it has connections (100), every confirmation waited behind part
    requests waiting for it, ~190 of 202 views 503 and each part logged as asked by no process
    (review rev-r3b). Confirmations have connections of their own; parts too."""
    asked, owner = _gathering_group(tmp_path, issuer, certificates)
    _with_faust_pool(monkeypatch, [asked, owner], 4)
    token = {"Authorization": f"Bearer {issuer.mint('james.liu', 'auditor')}"}
    async with _serving(asked, owner):
        answers = await _views_at_once(
            [asked.port, owner.port] * 12, "/caseload/", tmp_path / "ca.crt", token
        )
    assert [status for status, _ in answers] == [200] * 24, answers
    assert "PART_NOT_ASKED" not in caplog.text


async def test_forwarded_views_filling_faust_pool_hold_up_no_confirmation(
    tmp_path: Path,
    issuer: TestIssuer,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per-worker views a process forwards, waiting for a slow audit at their owner, held all
    of Faust's connections: a part that process was asked then waited for one to confirm with
    its asker, and the view gathered failed 503 (review rev-r3b)."""
    from casetrail.audit.v1 import audit_pb2

    asked, owner = _gathering_group(tmp_path, issuer, certificates)
    _routing_to(asked, owner)
    _routing_to(owner, owner)
    _with_faust_pool(monkeypatch, [asked], 2)
    audit_answers = asyncio.Event()
    held: list[tuple[str, ...]] = []

    async def slow_for_the_forwarded(caller: Any, view: int, case_ids: Any) -> None:
        if view == audit_pb2.CASELOAD_VIEW_CASELOADS:
            held.append(tuple(case_ids))
            await audit_answers.wait()

    owner.app.access_recorder.record = slow_for_the_forwarded
    ca = tmp_path / "ca.crt"
    token = {"Authorization": f"Bearer {issuer.mint('james.liu', 'auditor')}"}
    async with _serving(asked, owner):
        forwarded = asyncio.ensure_future(
            _views_at_once([asked.port] * 2, "/caseload/w-ana/", ca, token)
        )

        async def both_held() -> bool | None:
            return len(held) == 2 or None

        await eventually(both_held, "both forwarded views waiting for audit")
        overdue = await _https_get(owner.port, "/overdue/?today=2030-02-01", ca, token)
        audit_answers.set()
        assert [status for status, _ in await forwarded] == [200, 200]
    assert overdue[0] == 200, overdue


async def test_views_over_the_gathers_at_once_wait_their_turn_else_are_refused_busy(
    tmp_path: Path,
    issuer: TestIssuer,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process gathers at most GATHERS_AT_ONCE views at once, each with one connection of
    the parts' pool to each other process, which has as many: no part request waits for a
    connection. A view over them waits its turn up to TURN_SECONDS, else 503 SERVER_BUSY with
    Retry-After, no part asked."""
    from services.caseload import gathering

    monkeypatch.setattr(gathering, "GATHERS_AT_ONCE", 1)
    monkeypatch.setattr(gathering, "TURN_SECONDS", 0.5)
    asked, owner = _gathering_group(tmp_path, issuer, certificates)
    parts_answer = asyncio.Event()
    parts: list[URL] = []
    ask = asked.app.router.ask

    async def held(process: URL, view: URL, headers: Mapping[str, str], **options: Any) -> Any:
        parts.append(view)
        await parts_answer.wait()
        return await ask(process, view, headers, **options)

    asked.app.router.ask = held
    ca = tmp_path / "ca.crt"
    token = issuer.mint("james.liu", "auditor")
    signed = _get("/caseload/", "Host: localhost", f"Authorization: Bearer {token}")
    async with _serving(asked, owner):
        first = asyncio.ensure_future(_sent_as_is(asked.port, signed, ca))

        async def gathering_one() -> bool | None:
            return bool(parts) or None

        await eventually(gathering_one, "the first view asking for its part")
        busy = await _sent_as_is(asked.port, signed, ca)
        waiting = asyncio.ensure_future(_sent_as_is(asked.port, signed, ca))
        await asyncio.sleep(0.1)
        parts_answer.set()
        answered = [await first, await waiting]
    assert busy.status == 503, busy
    assert json.loads(busy.body)["reason"] == "SERVER_BUSY"
    assert busy.headers["Retry-After"] == "1"
    assert _has_answer_headers(busy.headers)
    assert [answer.status for answer in answered] == [200, 200], answered
    assert len(parts) == 2  # the busy view asked for none


async def test_a_part_still_confirming_when_its_view_is_given_up_is_no_forgery(
    tmp_path: Path,
    issuer: TestIssuer,
    certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In a group of three, a process not ready answers its part 503 at once: the asker gave
    the view up and forgot its nonces while another process was still confirming its part,
    which then heard "not asked" and refused it PART_NOT_ASKED, on audit's record with the
    token of the auditor whose view it was (review r2a). The asker keeps a given-up nonce and
    answers its confirmation 410 once: that part is 503, nothing recorded; the nonce sent
    again is a forgery."""
    from services.caseload.gathering import ASKER, CONFIRMATION_PATH, PART_MARK

    asked, owner = _gathering_group(tmp_path, issuer, certificates)
    third = _serving_worker(tmp_path, "third", _https_env(tmp_path, issuer, certificates))
    third.app.readiness.rebalance_started()  # not ready: answers its part 503 at once
    every = list(range(asked.app.settings.partitions))
    assigned((asked.app, [0]), (owner.app, every[1:-1]), (third.app, every[-1:]))
    view_answered = asyncio.Event()
    confirmations: list[tuple[str, int]] = []
    ask = owner.app.router.ask

    async def confirming_late(
        process: URL, view: URL, headers: Mapping[str, str], **options: Any
    ) -> Any:
        if view.path == CONFIRMATION_PATH:
            await view_answered.wait()  # the way back to the asker is slower than the third
            reply = await ask(process, view, headers, **options)
            confirmations.append((headers[PART_MARK], reply.status))
            return reply
        return await ask(process, view, headers, **options)

    owner.app.router.ask = confirming_late
    ca = tmp_path / "ca.crt"
    token = {"Authorization": f"Bearer {issuer.mint('james.liu', 'auditor')}"}
    async with _serving(asked, owner, third):
        status, body = await _https_get(asked.port, "/caseload/", ca, token)
        view_answered.set()

        async def confirmed() -> bool | None:
            return bool(confirmations) or None

        await eventually(confirmed, "the owner confirming its part with the asker")
        [(nonce, answered)] = confirmations
        marks = {PART_MARK: nonce, ASKER: str(asked.app.conf.canonical_url)}
        replayed = await _https_get(owner.port, "/caseload/", ca, {**token, **marks})
    assert (status, body["reason"]) == (503, "OWNER_UNAVAILABLE"), body
    assert answered == 410
    assert owner.refused == ["PART_NOT_ASKED"]  # the replay only
    assert (replayed[0], replayed[1]["reason"]) == (403, "PART_NOT_ASKED"), replayed
    assert asked.recorded == owner.recorded == []
    assert asked.refused == []
    refusals = [r for r in caplog.records if "PART_NOT_ASKED" in r.getMessage()]
    assert len(refusals) == 1  # the replay's


async def test_a_view_is_refused_busy_while_the_nonces_kept_are_at_their_limit(
    tmp_path: Path,
    issuer: TestIssuer,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The nonces of views given up are kept a while (a part may still be confirming): their
    number is bounded, and a view that would keep more is 503 SERVER_BUSY with Retry-After,
    no part asked."""
    from services.caseload import nonces

    monkeypatch.setattr(nonces, "NONCES_KEPT", 0)
    asked, owner = _gathering_group(tmp_path, issuer, certificates)
    token = issuer.mint("james.liu", "auditor")
    signed = _get("/caseload/", "Host: localhost", f"Authorization: Bearer {token}")
    async with _serving(asked, owner):
        busy = await _sent_as_is(asked.port, signed, tmp_path / "ca.crt")
    assert busy.status == 503, busy
    assert json.loads(busy.body)["reason"] == "SERVER_BUSY"
    assert busy.headers["Retry-After"] == "1"
    assert asked.recorded == owner.recorded == []
