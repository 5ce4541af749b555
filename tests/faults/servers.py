"""Stopping and starting the very servers `make test` started (infra/ scripts, the ports of the
environment), for the fault suite and the soak run. Every restart waits until the server serves
again, so whatever runs next finds it as it was."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from tests.support.servers import kafka_bootstrap, postgres_dsn

INFRA = Path(__file__).resolve().parents[2] / "infra"


def server_env() -> dict[str, str]:
    """The scripts' settings, taken from the addresses the tests use so they always agree."""
    env = dict(os.environ)
    env["CASETRAIL_PG_PORT"] = str(conninfo_to_dict(postgres_dsn()).get("port") or 5432)
    env["CASETRAIL_KAFKA_PORT"] = kafka_bootstrap().split(",")[0].rsplit(":", 1)[1]
    return env


async def run_script(server: str, script: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(INFRA / server / script),
        env=server_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        text = stderr.decode(errors="replace")[-3000:]
        raise RuntimeError(f"infra/{server}/{script} failed:\n{text}")


@asynccontextmanager
async def server_down(server: str) -> AsyncIterator[None]:
    """``server`` ("postgres" or "kafka") stopped for the body, started (and ready) after,
    even if the body fails."""
    await run_script(server, "stop.sh")
    try:
        yield
    finally:
        await run_script(server, "start.sh")


async def restart(server: str, down_for: float) -> float:
    """Stop ``server``, keep it down ``down_for`` seconds, start it; returns the moment
    (``time.monotonic()``) it served again."""
    async with server_down(server):
        await asyncio.sleep(down_for)
    return time.monotonic()


async def ensure_servers_running() -> None:
    """Start whichever server a failed test may have left stopped (a no-op when running)."""
    await run_script("postgres", "start.sh")
    await run_script("kafka", "start.sh")
