"""A service host decides with the locks its store honours."""

from __future__ import annotations

from pathlib import Path

from casetrail_platform.hosting import host_for
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.store.sqlite import SqliteEventStore


async def test_an_embedded_host_shares_its_store_s_locks(tmp_path: Path) -> None:
    """The embedded store holds a guard's lock (StreamVersion.lock) in its own locks: a host
    with locks of its own would let an erasure and an opening of one client miss each other."""
    host = await host_for(Infrastructure(data_dir=tmp_path, seal_sensitive=False), "test")
    try:
        assert isinstance(host.store, SqliteEventStore)
        assert host.locks is host.store.locks
    finally:
        await host._close_all()
