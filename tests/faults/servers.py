"""Stopping, starting and freezing the very servers `make test` started (infra/ scripts, the
ports of the environment; ``run_script`` lives in infra/servers.py, which the soak run uses
too), for the fault suite, and timing a service process's stop. Every restart waits until
the server serves again, so whatever runs next finds it as it was."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg

from infra.servers import run_script
from tests.support.servers import kafka_bootstrap, postgres_dsn


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


def _pids(server: str) -> list[int]:
    """The processes of our own server (the postmaster first, then its children)."""
    if server == "postgres":
        postmaster = _postmaster()
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *map(int, children)]
    return [_listening(int(kafka_bootstrap().split(",")[0].rsplit(":", 1)[1]))]


def _listening(port: int) -> int:
    """The process listening on TCP ``port``: for Kafka, the broker the tests use wherever its
    data directory (and pid file) is, the repo's var/kafka or ``CASETRAIL_KAFKA_DIR``: the
    owner of the listening socket (/proc/net/tcp*'s inode, among the processes' open files)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                # sl, local address (hex ip:port), remote, state (0A: LISTEN), ..., inode
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    sockets.add(f"socket:[{fields[9]}]")
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # ended meanwhile, or not ours to look into
            for descriptor in (process / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(descriptor) in sockets:
                        return int(process.name)
    raise LookupError(f"no process of ours listens on port {port}")


def _postmaster() -> int:
    """The postmaster of the server the tests use, wherever its data directory is (the repo's
    var/ for a developer, /var/lib/postgresql/... when make runs as root): the parent of the
    backend serving a connection."""
    with psycopg.connect(postgres_dsn(), autocommit=True) as connection:
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        # Read while the connection is open: the backend ends with it.
        stat = Path(f"/proc/{row[0]}/stat").read_text()
    # Fields after the command name (which may hold spaces, inside parentheses): state, ppid.
    return int(stat.rsplit(")", 1)[1].split()[1])


@contextlib.contextmanager
def frozen(server: str) -> Iterator[None]:
    """``server`` ("postgres" or "kafka") stopped with SIGSTOP for the body, its connections
    left open (the kernel still answers TCP, as for a server on a host cut off), then resumed."""
    pids = _pids(server)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def seconds_to_end_after_sigterm(process: asyncio.subprocess.Process, limit: float) -> float:
    """Send ``process`` SIGTERM and wait at most ``limit`` seconds for it to end: the seconds
    waited (its returncode is still None when it outlived them)."""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            await process.communicate()
    return time.monotonic() - began
