"""The whole of casetrail, reached only through its gRPC APIs, on both backends.

``casetrail`` is started once per backend for the package: the embedded default (the four
services in the test process, SQLite, in-process bus) and the distributed one (one process per
service, PostgreSQL and Kafka; it needs the servers `make test` starts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from cli.rpc import Stubs, connect
from services.demo import embedded_services
from tests.e2e.distributed import distributed_services


@dataclass(frozen=True)
class Casetrail:
    backend: str
    addresses: dict[str, str]
    stubs: Stubs
    patience: float
    """Seconds to wait for a fact to travel over the bus before giving up."""


@pytest_asyncio.fixture(
    scope="package",
    loop_scope="package",
    params=[
        "embedded",
        pytest.param("distributed", marks=[pytest.mark.postgres, pytest.mark.kafka]),
    ],
)
async def casetrail(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Casetrail]:
    data_dir = tmp_path_factory.mktemp(f"e2e-{request.param}")
    if request.param == "embedded":
        services = embedded_services(data_dir)
        patience = 30.0
    else:
        services = distributed_services(data_dir)
        patience = 90.0  # the first Kafka consumer-group joins take a few seconds
    async with services as addresses, connect(addresses) as stubs:
        yield Casetrail(request.param, addresses, stubs, patience)
