"""The server processes, seen from the orchestrator: started, their addresses read from what they
print, stopped; and the run's token issuer every server trusts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.grpc_bench.commands import BENCH_AUDIENCE, BENCH_USERS
from bench.grpc_bench.plan import REPO, SERVICES


@dataclass
class Server:
    label: str
    process: asyncio.subprocess.Process
    addresses: dict[str, str]

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


ADDRESS_LINE = re.compile(r"^\s+(\w+)\s+(\S+:\d+)\s*$")


async def start_server(
    label: str, argv: Sequence[str], env: Mapping[str, str], out: Path, expect: Sequence[str]
) -> Server:
    """Start a server process and wait until it printed the addresses of ``expect``."""
    with out.open("w") as stdout, out.with_suffix(".err").open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdout=stdout, stderr=stderr, cwd=REPO, env=dict(env)
        )
    deadline = time.perf_counter() + 90
    while True:
        addresses = _addresses(await asyncio.to_thread(out.read_text))
        if all(name in addresses for name in expect):
            return Server(label, process, addresses)
        if process.returncode is not None or time.perf_counter() > deadline:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            err = out.with_suffix(".err").read_text()[-3000:]
            raise RuntimeError(f"{label} did not start:\n{err}")
        await asyncio.sleep(0.1)


def _addresses(printed: str) -> dict[str, str]:
    found = {}
    for line in printed.splitlines():
        if line.startswith("ADDRESSES "):
            found.update(json.loads(line.removeprefix("ADDRESSES ")))
        elif match := ADDRESS_LINE.match(line):
            found[match.group(1)] = match.group(2)
    return found


async def start_services(
    servers: list[Server],
    backend: str,
    switches: Sequence[str],
    env: Mapping[str, str],
    work: Path,
    tag: str,
    topic: str = "",
    profile_intake: Path | None = None,
) -> None:
    """The four services as ``--serve`` runs them, with the benchmark-only ``switches``: one
    process (embedded) or one per service (distributed, on ``topic``), added to ``servers``
    as they start (so the caller stops whatever started, even after a failure)."""
    base = ["-m", "bench.grpc_bench", "--serve", *switches, "--backend", backend]
    if backend == "embedded":
        data = work / tag
        data.mkdir()
        argv = [*base, "--data-dir", str(data)]
        servers.append(await start_server("embedded", argv, env, work / f"{tag}.out", SERVICES))
        return

    from casetrail_platform.keys.hosting import KEK_FILE_VARIABLE

    # One agency, one key-encryption key: every process seals and opens with the same one
    # (in production, a mounted secret named by the same variable).
    shared = {KEK_FILE_VARIABLE: str(work / f"{tag}-kek.bin"), **env}

    async def start(name: str) -> None:
        data = work / f"{tag}-{name}"
        data.mkdir()
        argv = [*base, "--service", name, "--topic", topic, "--data-dir", str(data)]
        if profile_intake is not None and name == "intake":
            argv += ["--profile", str(profile_intake)]
        servers.append(await start_server(name, argv, shared, work / f"{tag}-{name}.out", [name]))

    started = await asyncio.gather(*(start(name) for name in SERVICES), return_exceptions=True)
    for failure in started:
        if isinstance(failure, BaseException):
            raise failure


BENCH_TOKENS: dict[str, str] = {}
"""Filled by ``start_issuer`` in the orchestrating process."""


def start_issuer() -> Any:
    """An issuer over HTTP on 127.0.0.1 for this run: every server trusts it (through the
    environment it hands down), and the load generator calls with tokens it signed."""
    from casetrail_platform.identity.issuer_http import IssuerHttpServer
    from casetrail_platform.identity.tokens import SigningKey, mint

    key = SigningKey.generate("ES256")
    public = [key.public_jwk()]
    server = IssuerHttpServer(lambda: public)
    os.environ["CASETRAIL_OIDC_ISSUER"] = server.url
    os.environ["CASETRAIL_OIDC_AUDIENCE"] = BENCH_AUDIENCE
    for user, role in BENCH_USERS.items():
        BENCH_TOKENS[user] = mint(
            key,
            issuer=server.url,
            audience=BENCH_AUDIENCE,
            subject=user,
            role=role,
            agency="eastbay-dss",
            lifetime_seconds=4 * 3600,
        )
    return server
