from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from casetrail.intake.v1 import intake_pb2_grpc
from casetrail_platform.hosting import RunningService
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from services.intake.adapters.case_closures import CaseClosuresProjection, ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.bootstrap import start
from tests.support.identity import TestIssuer, caller_channel
from tests.unit.intake.support import Intake


@pytest.fixture
def directory(store: SqliteEventStore, read_models: SqliteReadModelStore) -> ClientDirectory:
    return ClientDirectory(store, read_models)


@pytest.fixture
def closures(read_models: SqliteReadModelStore) -> ClosureLog:
    return ClosureLog(read_models)


@pytest.fixture
def from_bus(read_models: SqliteReadModelStore) -> BusProjectionHandler:
    """Feeds the closures projection as the host's bus subscription does."""
    return BusProjectionHandler(read_models, CaseClosuresProjection(), service="intake")


@pytest.fixture
def access(store: SqliteEventStore, read_models: SqliteReadModelStore) -> AccessControl:
    return AccessControl(
        store, CaseFactsReader(read_models), "casetrail/intake", home_agency=DEFAULT_HOME_AGENCY
    )


@pytest.fixture
async def intake(tmp_path: Path, issuer: TestIssuer) -> AsyncIterator[Intake]:
    infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
    service: RunningService = await start(infra, "127.0.0.1:0")
    try:
        async with caller_channel(
            grpc.aio.insecure_channel(f"127.0.0.1:{service.port}"), issuer
        ) as channel:
            yield Intake(intake_pb2_grpc.IntakeServiceStub(channel), infra)
    finally:
        await service.stop()
