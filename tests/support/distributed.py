"""The four services as separate processes on PostgreSQL and Kafka, isolated per test run.

Isolation without touching anyone else's data: a fresh PostgreSQL database per run (each service
keeps its fixed schemas, ``<service>_events`` / ``<service>_read_models``, inside it) and a
fresh case-event topic (``casetrail serve --topic``; services.runner has no topic option).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tests.support.servers import kafka_bootstrap, postgres_dsn, server_missing

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "coordination", "planning", "audit")
_ADDRESS_LINE = re.compile(r"^\s+(?P<name>[a-z]+)\s+(?P<address>\S+:\d+)\s*$")
START_PATIENCE = 180.0
ENV = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}
"""How child processes find casetrail: as pytest's pythonpath does, whatever the venv's .pth."""


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty database on the test server; its DSN. Dropped afterwards."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    base = postgres_dsn()
    name = f"casetrail_e2e_{uuid.uuid4().hex[:12]}"
    try:
        async with await psycopg.AsyncConnection.connect(base, autocommit=True) as admin:
            # template0 takes no connections, so concurrent creations never find it in use.
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    except psycopg.OperationalError as error:
        server_missing("PostgreSQL", error)
    try:
        yield make_conninfo(base, dbname=name)
    finally:
        async with await psycopg.AsyncConnection.connect(base, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def fresh_topic() -> AsyncIterator[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap())
    try:
        await admin.start()
    except Exception as error:
        await admin.close()
        server_missing("Kafka", error)
    topic = f"casetrail.e2e-{uuid.uuid4().hex[:12]}"
    try:
        yield topic
    finally:
        with contextlib.suppress(Exception):  # a leftover test topic harms nothing
            await admin.delete_topics([topic])
        await admin.close()


@asynccontextmanager
async def distributed_services(
    data_dir: Path, issuer_env: dict[str, str]
) -> AsyncIterator[Replicas]:
    """Start one process per service, trusting the token issuer ``issuer_env`` names; yield
    them (``first_addresses``, database, topic); stop them with SIGTERM."""
    async with replicated_services(data_dir, 1, issuer_env) as running:
        yield running


@dataclass
class Replicas:
    """Several processes per service, all on one database and one topic (issue 11)."""

    addresses: dict[str, list[str]]
    processes: dict[str, list[asyncio.subprocess.Process]]
    dsn: str
    topic: str

    @property
    def first_addresses(self) -> dict[str, str]:
        """Each service's first replica."""
        return {name: addresses[0] for name, addresses in self.addresses.items()}


@asynccontextmanager
async def replicated_services(
    data_dir: Path, replicas: int, issuer_env: dict[str, str]
) -> AsyncIterator[Replicas]:
    """Start ``replicas`` processes per service, trusting the token issuer ``issuer_env``
    names; yield them; stop them with SIGTERM. The first replica of every service starts (and
    so takes its outbox relay's lead) first."""
    async with fresh_database() as dsn, fresh_topic() as topic:
        env = (
            ENV
            | issuer_env
            | {
                "CASETRAIL_PG_DSN": dsn,
                "CASETRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap(),
                "CASETRAIL_LOG_LEVEL": "WARNING",
            }
        )
        running = Replicas({name: [] for name in SERVICES}, {}, dsn, topic)
        try:
            for replica in range(replicas):
                started = {
                    name: await _spawn(name, topic, data_dir, env, _log_name(name, replica))
                    for name in SERVICES
                }
                for name, process in started.items():
                    running.processes.setdefault(name, []).append(process)
                # A task group: when one service fails to start, the other readers are
                # cancelled before the processes are stopped (which reads their output too).
                async with asyncio.TaskGroup() as group:
                    readers = {
                        name: group.create_task(
                            _address(name, process, data_dir, _log_name(name, replica))
                        )
                        for name, process in started.items()
                    }
                for name, reader in readers.items():
                    running.addresses[name].append(reader.result())
            yield running
        finally:
            await asyncio.gather(
                *(_stop(process) for group in running.processes.values() for process in group)
            )


def _log_name(name: str, replica: int) -> str:
    return name if replica == 0 else f"{name}-{replica}"


class ServiceProcesses:
    """The service processes of one isolated run; one of them may be killed and started again
    (the fault suite). ``addresses`` always holds the current address of each running one."""

    def __init__(self, data_dir: Path, dsn: str, topic: str, issuer_env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.dsn = dsn
        self.topic = topic
        self.env = (
            ENV
            | issuer_env
            | {
                "CASETRAIL_PG_DSN": dsn,
                "CASETRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap(),
                "CASETRAIL_LOG_LEVEL": "WARNING",
            }
        )
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.addresses: dict[str, str] = {}

    async def start(self, names: tuple[str, ...] = SERVICES) -> None:
        for name in names:
            self.processes[name] = await _spawn(name, self.topic, self.data_dir, self.env)
        # A task group: when one service fails to start, the other readers are cancelled
        # before the processes are stopped (which reads their output too).
        async with asyncio.TaskGroup() as group:
            readers = {
                name: group.create_task(_address(name, self.processes[name], self.data_dir))
                for name in names
            }
        self.addresses.update({name: reader.result() for name, reader in readers.items()})

    async def kill(self, name: str) -> None:
        """SIGKILL: no graceful stop, whatever was in flight is cut off."""
        process = self.processes.pop(name)
        self.addresses.pop(name, None)
        process.kill()
        await process.communicate()

    async def stop_all(self) -> None:
        await asyncio.gather(*(_stop(process) for process in self.processes.values()))


@asynccontextmanager
async def service_processes(
    data_dir: Path, issuer_env: dict[str, str], names: tuple[str, ...] = SERVICES
) -> AsyncIterator[ServiceProcesses]:
    """``ServiceProcesses`` on a fresh database and topic, trusting the token issuer
    ``issuer_env`` names, started; stopped afterwards."""
    async with fresh_database() as dsn, fresh_topic() as topic:
        processes = ServiceProcesses(data_dir, dsn, topic, issuer_env)
        try:
            await processes.start(names)
            yield processes
        finally:
            await processes.stop_all()


async def _spawn(
    name: str, topic: str, data_dir: Path, env: dict[str, str], log_name: str = ""
) -> asyncio.subprocess.Process:
    command = [
        sys.executable, "-m", "cli.main", "serve", "--backend", "distributed",
        "--service", name, "--any-port", "--topic", topic, "--data-dir", str(data_dir),
    ]  # fmt: skip
    log = _log_file(data_dir, log_name or name)
    try:
        return await asyncio.create_subprocess_exec(
            *command, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=log
        )
    finally:
        log.close()  # the child has its own copy of the descriptor


def _log_file(data_dir: Path, name: str) -> BinaryIO:
    # Appending: a process started again (the fault suite) keeps the log of the one before.
    return (data_dir / f"{name}.log").open("ab")


def _log_tail(data_dir: Path, name: str) -> str:
    return (data_dir / f"{name}.log").read_text(errors="replace")[-3000:]


async def _address(
    name: str, process: asyncio.subprocess.Process, data_dir: Path, log_name: str = ""
) -> str:
    """The address the process prints once it serves (it picked a free port)."""
    assert process.stdout is not None
    try:
        async with asyncio.timeout(START_PATIENCE):
            while line := await process.stdout.readline():
                found = _ADDRESS_LINE.match(line.decode())
                if found and found["name"] == name:
                    return found["address"]
    except TimeoutError:
        pass
    log = _log_tail(data_dir, log_name or name)
    raise RuntimeError(f"{name} did not start (exit code {process.returncode}):\n{log}")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(30):
            await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
