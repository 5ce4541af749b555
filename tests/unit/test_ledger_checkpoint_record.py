"""A service's ledger as its host opens it (``open_ledger`` and ``checkpoint_record``) keeps
its high-water mark across a restart: embedded, ``<data dir>/<service>/ledger.checkpoint``
beside the key; distributed, the checkpoints topic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.hosting import Infrastructure
from casetrail_platform.ledger.hosting import checkpoint_record, key_path, open_ledger
from casetrail_platform.ledger.log import LedgerTampered
from casetrail_platform.ledger.publication import KafkaCheckpointPublisher
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.contract.test_ledger_contract import append_notes
from tests.support.sample_events import sample_registry


async def run_once(infra: Infrastructure) -> int:
    """A process: opens the ledger as the host does, signs, stops; the size signed."""
    ledger = await open_ledger(infra, "intake")
    record = checkpoint_record(infra, "intake")
    ledger.publish_to(record)
    try:
        return (await ledger.sign()).size
    finally:
        await record.stop()
        await ledger.store.close()


async def test_an_embedded_ledger_emptied_while_down_refuses_to_sign_again(
    tmp_path: Path,
) -> None:
    infra = Infrastructure(data_dir=tmp_path / "data", seal_sensitive=False)
    directory = infra.data_dir / "intake"
    events = await SqliteEventStore.open(directory / "events.db", sample_registry())
    try:
        await append_notes(events, 10)
        assert await run_once(infra) == 10
        mark = key_path(infra.data_dir, "intake").with_name("ledger.checkpoint")
        assert mark.read_text().startswith("casetrail/example-agency/intake\n10\n")

        # While it is down: the last events and the ledger's tables deleted, new events added.
        for database, statements in (
            (
                "events.db",
                [
                    "DROP TRIGGER IF EXISTS stored_events_are_never_deleted",
                    "DELETE FROM stored_events WHERE position > 4",
                ],
            ),
            ("ledger.db", ["DELETE FROM ledger_tiles", "DELETE FROM ledger_checkpoints"]),
        ):
            connection = sqlite3.connect(directory / database, isolation_level=None)
            for statement in statements:
                connection.execute(statement)
            connection.close()
        await events.close()
        events = await SqliteEventStore.open(directory / "events.db", sample_registry())
        await append_notes(events, 8)

        with pytest.raises(LedgerTampered, match="size 10 it published"):
            await run_once(infra)
        assert mark.read_text().startswith("casetrail/example-agency/intake\n10\n")
    finally:
        await events.close()


def test_the_distributed_backend_keeps_its_mark_on_the_checkpoints_topic(tmp_path: Path) -> None:
    infra = Infrastructure(data_dir=tmp_path, kafka=KafkaSettings(), seal_sensitive=False)
    assert isinstance(checkpoint_record(infra, "intake"), KafkaCheckpointPublisher)
