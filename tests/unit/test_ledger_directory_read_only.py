"""Audit's witness reads the other services' ledgers, embedded as well: opened read only, so it
never creates or migrates a ledger that is its service's to make, and waits for one not made yet."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.directory import LedgerDirectory
from casetrail_platform.ledger.hosting import open_ledger
from casetrail_platform.ledger.port import StoredCheckpoint
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.support.sample_events import note, sample_registry


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    connection.close()
    return [name for (name,) in rows]


def _make_bare_ledger(path: Path) -> None:
    """A ledger file its service has begun and not yet given its tables."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE unrelated (x INTEGER)")
    connection.commit()
    connection.close()


async def test_the_witness_creates_no_ledger_tables(tmp_path: Path) -> None:
    infra = Infrastructure(data_dir=tmp_path, seal_sensitive=False)
    events = await SqliteEventStore.open(tmp_path / "intake" / "events.db", sample_registry())
    ledger_file = tmp_path / "intake" / "ledger.db"
    _make_bare_ledger(ledger_file)
    directory = LedgerDirectory(infra)
    try:
        assert await directory.log("intake") is None  # not made yet: asked again later
        assert _tables(ledger_file) == ["unrelated"]
    finally:
        await directory.close()
        await events.close()


async def test_the_witness_finds_the_ledger_once_made_and_cannot_write_it(tmp_path: Path) -> None:
    infra = Infrastructure(data_dir=tmp_path, seal_sensitive=False)
    events = await SqliteEventStore.open(tmp_path / "intake" / "events.db", sample_registry())
    directory = LedgerDirectory(infra)
    try:
        assert await directory.log("intake") is None  # intake has no ledger yet
        await events.append("case-1", [note("case-1")], 0)
        ledger = await open_ledger(infra, "intake")
        try:
            await ledger.sign()
            witnessed = await directory.log("intake")
            assert witnessed is not None
            assert await witnessed.size() == 1
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await witnessed.save_checkpoint(StoredCheckpoint(99, "forged"))
        finally:
            await ledger.store.close()
    finally:
        await directory.close()
        await events.close()
