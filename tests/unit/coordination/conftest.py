from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from casetrail_platform.policy.projection import CaseFactsProjection as PolicyFactsProjection
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from services.coordination.adapters.projections import CaseFactsProjection
from services.coordination.app.handlers.running import Dependencies
from tests.support.identity import TestIssuer
from tests.unit.coordination.rpc import served
from tests.unit.coordination.support import IntakeFeed, sample_agency

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub


@pytest.fixture
def intake(read_models: SqliteReadModelStore) -> IntakeFeed:
    """Intake's case facts, fed to the projection the way the host's bus subscription does."""
    return IntakeFeed(
        BusProjectionHandler(read_models, CaseFactsProjection(), service="coordination"),
        BusProjectionHandler(read_models, PolicyFactsProjection(), service="coordination"),
    )


@pytest.fixture
def deps(store: SqliteEventStore, read_models: SqliteReadModelStore) -> Dependencies:
    return Dependencies(store, read_models, sample_agency())


@pytest.fixture
async def stub(deps: Dependencies, issuer: TestIssuer) -> AsyncIterator[Stub]:
    async with served(deps, issuer) as served_stub:
        yield served_stub
