"""GetAccessLog reads a bounded part of audit's own store: the accesses its timeline has not
taken in yet. A timeline far behind (rebuilt from zero: position 0) makes the call UNAVAILABLE,
retryable, instead of a scan of the whole store on every call. On both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from casetrail_platform.commands import NotCaughtUp
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.projections.runner import BusProjectionHandler, catch_up
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.port import ANY_VERSION, EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import RecordAccessed
from events.catalog_registry import default_registry
from events.envelope import NewEvent, RecordedEvent
from services.audit.adapters.timeline import ReadModelTimelines, TimelineProjection
from services.audit.app import queries
from services.audit.app.queries import AuditDeps
from tests.support.servers import database_of_its_own
from tests.unit.audit.support import AUDITOR, CASE, late_recorded_case

BOUND = 5


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EventStore, ReadModelStore]]:
    """Audit's own store and its read models, both on one backend."""
    if request.param == "sqlite":
        store: EventStore = await SqliteEventStore.open(tmp_path / "e.db", default_registry())
        models: ReadModelStore = SqliteReadModelStore(tmp_path / "read-models.db")
        yield store, models
        await models.close()
        await store.close()
        return
    from casetrail_platform.projections.postgres import PostgresReadModelStore
    from casetrail_platform.store.postgres import PostgresEventStore

    with database_of_its_own("audit_lag") as dsn:
        store = await PostgresEventStore.connect(dsn, default_registry())
        models = await PostgresReadModelStore.connect(dsn)
        try:
            yield store, models
        finally:
            await models.close()
            await store.close()


class CountingStore:
    """Counts the events ``read_all`` hands out (what a call costs in audit's store)."""

    def __init__(self, store: EventStore) -> None:
        self.read_from = store.read_all
        self.read = 0

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        batch = await self.read_from(after_position, limit)
        self.read += len(batch)
        return batch


async def _case_delivered(store: EventStore, models: ReadModelStore) -> AuditDeps:
    """Audit's queries on ``store`` once its timeline holds the case from the bus."""
    handler = BusProjectionHandler(models, TimelineProjection(), service="audit")
    for recorded in late_recorded_case():
        await handler(recorded)
    return AuditDeps(
        ReadModelTimelines(models, default_registry()),
        store,
        AccessControl(store, None, "casetrail/audit", home_agency=DEFAULT_HOME_AGENCY),
    )


async def test_a_timeline_far_behind_is_unavailable_not_a_scan_of_the_whole_store(
    stores: tuple[EventStore, ReadModelStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, models = stores
    monkeypatch.setattr(queries, "OWN_UNINDEXED", BOUND, raising=False)
    deps = await _case_delivered(store, models)
    counting = CountingStore(store)
    monkeypatch.setattr(store, "read_all", counting.read_all)

    # Up to BOUND waiting: each call answers, this very read listed among the waiting ones.
    for call in range(1, BOUND + 2):
        log = await queries.get_access_log(deps, AUDITOR, CASE)
        assert [type(e.event) for e in log.entries] == [RecordAccessed] * call
    assert counting.read <= (BOUND + 1) * (BOUND + 2)

    # BOUND + 1 waiting: refused as not caught up, before anything is read or recorded.
    written = await store.last_position()
    counting.read = 0
    with pytest.raises(NotCaughtUp) as refused:
        await queries.get_access_log(deps, AUDITOR, CASE)
    assert refused.value.reason == "FACTS_NOT_CAUGHT_UP"
    assert (counting.read, await store.last_position()) == (0, written)

    # The timeline takes them in: the next call lists all, reading only its own record.
    await catch_up(store, models, TimelineProjection())
    counting.read = 0
    log = await queries.get_access_log(deps, AUDITOR, CASE)
    assert len(log.entries) == BOUND + 2
    assert counting.read == 1


async def test_more_appended_than_the_bound_while_a_call_reads_is_unavailable(
    stores: tuple[EventStore, ReadModelStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan after the check stops at twice the bound, whatever was appended meanwhile:
    this read is recorded then (before the check could know), its answer UNAVAILABLE."""
    store, models = stores
    monkeypatch.setattr(queries, "OWN_UNINDEXED", BOUND, raising=False)
    deps = await _case_delivered(store, models)
    (first,) = (await queries.get_access_log(deps, AUDITOR, CASE)).entries
    await catch_up(store, models, TimelineProjection())
    last_position = store.last_position

    async def then_a_burst() -> int:
        """Where the store ends, then more appended than the scan may read: others' reads."""
        position = await last_position()
        for _ in range(2 * BOUND + 1):
            copy = NewEvent(first.event, first.metadata)
            await store.append(f"access-{CASE}", [copy], ANY_VERSION)
        return position

    counting = CountingStore(store)
    monkeypatch.setattr(store, "read_all", counting.read_all)
    monkeypatch.setattr(store, "last_position", then_a_burst)
    with pytest.raises(NotCaughtUp):
        await queries.get_access_log(deps, AUDITOR, CASE)
    assert counting.read == 2 * BOUND + 1  # one past the bound of the scan: it stops there
