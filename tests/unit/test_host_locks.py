"""A service host decides with the locks its store honours, however it was built."""

from __future__ import annotations

from pathlib import Path

from casetrail_platform.checkpoints import InMemoryCheckpointStore
from casetrail_platform.hosting import Infrastructure, ServiceHost
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.support.sample_events import sample_registry


async def test_a_host_built_without_locks_shares_its_embedded_store_s(tmp_path: Path) -> None:
    """The embedded store holds a guard's lock (StreamVersion.lock) in its own locks: a host
    with locks of its own would let an erasure and an opening of one client miss each other."""
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    read_models = SqliteReadModelStore(tmp_path / "read-models.db")
    try:
        host = ServiceHost(
            "test",
            Infrastructure(data_dir=tmp_path / "data", seal_sensitive=False),
            store,
            InMemoryCheckpointStore(),
            read_models,
            store.close,
        )
        assert host.locks is store.locks
    finally:
        await read_models.close()
        await store.close()
