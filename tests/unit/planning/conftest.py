from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from casetrail.planning.v1 import planning_pb2_grpc
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from services.planning.adapters.case_views import CaseViews
from services.planning.app.handlers import Dependencies
from services.planning.entrypoints.grpc_server import SERVICE_NAME, PlanningServicer
from tests.support.grpc import serving
from tests.support.identity import TestIssuer
from tests.unit.planning.support import Bus

NOW = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
"""The planning servicer's clock in these tests."""


@dataclass
class Planning:
    stub: planning_pb2_grpc.PlanningServiceAsyncStub
    bus: Bus
    store: SqliteEventStore


@pytest.fixture
async def bus(
    tmp_path: Path, read_models: SqliteReadModelStore, store: SqliteEventStore
) -> AsyncIterator[Bus]:
    feed = Bus(tmp_path, read_models, store)
    yield feed
    await feed.close()


@pytest.fixture
def deps(store: SqliteEventStore, read_models: SqliteReadModelStore) -> Dependencies:
    return Dependencies(store, CaseViews(read_models))


@pytest.fixture
async def planning(
    deps: Dependencies, bus: Bus, store: SqliteEventStore, issuer: TestIssuer
) -> AsyncIterator[Planning]:
    """Planning's gRPC API in this process, over the bus fixture's read models."""
    access = AccessControl(
        store,
        CaseFactsReader(bus.read_models),
        "casetrail/planning",
        home_agency=DEFAULT_HOME_AGENCY,
    )
    servicer = PlanningServicer(deps, access, clock=lambda: NOW)

    def register(server: grpc.aio.Server) -> None:
        planning_pb2_grpc.add_PlanningServiceServicer_to_server(servicer, server)

    async with serving(register, SERVICE_NAME, issuer) as channel:
        yield Planning(planning_pb2_grpc.PlanningServiceStub(channel), bus, store)  # type: ignore[arg-type]
