"""Access to the real servers that `make test` starts. Tests that need one fail when it is
missing in CI (CASETRAIL_REQUIRE_SERVERS=1) and skip only on a developer's machine.

Which servers: ``CASETRAIL_PG_DSN`` and ``CASETRAIL_KAFKA_BOOTSTRAP``, else those `make
servers-start` recorded in this checkout's ``var/servers.env`` (``infra/record-server.sh``),
never a default port: that would be another checkout's servers, or CI's, which a test may wipe.
Resolved by infra/servers.py, as the benchmarks resolve them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest

from infra.servers import (
    KAFKA_BOOTSTRAP,
    PG_DSN,
    NoServerError,
    server_setting,
)


def servers_required() -> bool:
    return os.environ.get("CASETRAIL_REQUIRE_SERVERS") == "1"


def _server_setting(name: str) -> str:
    try:
        return server_setting(name)
    except NoServerError as missing:
        # Like an unreachable server: a failure in CI, a skip on a developer's machine.
        if servers_required():
            pytest.fail(missing.message, pytrace=False)
        pytest.skip(missing.message)


def postgres_dsn() -> str:
    return _server_setting(PG_DSN)


def kafka_bootstrap() -> str:
    return _server_setting(KAFKA_BOOTSTRAP)


def server_missing(what: str, error: BaseException) -> None:
    """Fail (CI) or skip (developer machine) a test whose server cannot be reached."""
    message = f"{what} is not reachable ({error!r}); start it with `make servers-start`"
    if servers_required():
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A loopback port free right now (another process may take it before it is bound)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def database_of_its_own(prefix: str) -> Iterator[str]:
    """The DSN of a PostgreSQL database made for the test (named ``prefix`` and a random
    suffix) and dropped after it: a store's schema is the same whatever the test
    (``intake_events``), so a test that must see a store alone needs a database alone."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as error:
        server_missing("PostgreSQL", error)
    try:
        yield psycopg.conninfo.make_conninfo(postgres_dsn(), dbname=name)
    finally:
        with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@asynccontextmanager
async def schema_of_its_own(prefix: str) -> AsyncIterator[str]:
    """A PostgreSQL schema made for the test (``prefix`` and a random suffix), dropped with all
    it holds after it: stores and read models connected with ``schema=`` share it alone."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as admin:
            await admin.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as error:
        server_missing("PostgreSQL", error)
    try:
        yield schema
    finally:
        async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as admin:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
