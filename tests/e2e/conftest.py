"""The whole of casetrail, reached only through its gRPC APIs, on both backends.

``casetrail`` is started once per backend for the package: the embedded default (the four
services in the test process, SQLite, in-process bus) and the distributed one (one process per
service, PostgreSQL and Kafka; it needs the servers `make test` starts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from cli.rpc import Connection, TokenSource, connect
from services.demo import embedded_services
from tests.support.backends import CASETRAIL_BACKENDS
from tests.support.distributed import distributed_services
from tests.support.identity import TestIssuer


@dataclass(frozen=True)
class Casetrail:
    backend: str
    addresses: dict[str, str]
    stubs: Connection
    """``stubs.as_(person)``: the services' stubs, calling with ``person``'s bearer token."""
    tokens: TokenSource
    patience: float
    """Seconds to wait for a fact to travel over the bus before giving up."""
    data_dir: Path | None = None
    """Where the services keep their files (and, distributed, their logs)."""
    postgres_dsn: str = ""
    topic: str = ""
    """The case-events topic (distributed); the dead-letter topics start with its consumers'
    group names."""


@pytest_asyncio.fixture(
    scope="package",
    loop_scope="package",
    params=CASETRAIL_BACKENDS,
)
async def casetrail(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, issuer: TestIssuer
) -> AsyncIterator[Casetrail]:
    data_dir = tmp_path_factory.mktemp(f"e2e-{request.param}")
    if request.param == "embedded":
        # The embedded default's own development issuer, as `make run` starts it.
        async with (
            embedded_services(data_dir) as local,
            connect(local.addresses, local.tokens) as connection,
        ):
            yield Casetrail(
                request.param, local.addresses, connection, local.tokens, 30.0, data_dir
            )
        return
    # Separate processes trusting the tests' issuer, as they would an organisation's.
    async with (
        distributed_services(data_dir, issuer.env()) as running,
        connect(running.first_addresses, issuer.tokens) as connection,
    ):
        # The first Kafka consumer-group joins take a few seconds.
        yield Casetrail(
            request.param,
            running.first_addresses,
            connection,
            issuer.tokens,
            90.0,
            data_dir,
            running.dsn,
            running.topic,
        )
