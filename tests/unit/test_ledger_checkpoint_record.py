"""A service's ledger as its host opens it (``open_ledger`` and ``checkpoint_record``) keeps
its high-water mark across a restart: embedded, ``<data dir>/<service>/ledger.checkpoint``
beside the key; distributed, the checkpoints topic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.checkpoint_file import FileCheckpointRecord
from casetrail_platform.ledger.hosting import checkpoint_record, key_path, open_ledger
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import LedgerTampered
from casetrail_platform.ledger.note import Checkpoint, origin_of
from casetrail_platform.ledger.port import StoredCheckpoint
from casetrail_platform.ledger.publication import KafkaCheckpointPublisher
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.support.ledger import append_notes
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


async def test_the_file_never_takes_a_smaller_note_of_the_same_log_and_key(
    tmp_path: Path,
) -> None:
    """The file is a high-water mark, as the topic is: a smaller note (a late retry's, a
    replica's) published after a larger one leaves the larger one; a note under a new key (an
    earlier deployment's note is no mark for it) replaces it."""
    path = tmp_path / "ledger.checkpoint"
    record = FileCheckpointRecord(path)
    signer = FileSigner(origin_of("test-agency", "intake"), tmp_path / "ledger.key")
    rotated = FileSigner(signer.name, tmp_path / "rotated.key")

    async def note(by: FileSigner, size: int) -> StoredCheckpoint:
        checkpoint = Checkpoint(by.name, size, merkle.EMPTY_ROOT)
        return StoredCheckpoint(size, await by.sign_checkpoint(checkpoint))

    await record.publish(await note(signer, 10))
    held = path.read_bytes()
    await record.publish(await note(signer, 4))
    assert path.read_bytes() == held
    await record.publish(await note(signer, 10))  # the same note again: taken, unchanged
    assert path.read_bytes() == held
    assert await record.newest(await signer.verifier()) == Checkpoint(
        signer.name, 10, merkle.EMPTY_ROOT
    )
    await record.publish(await note(signer, 11))
    await record.publish(await note(rotated, 3))
    assert await record.newest(await rotated.verifier()) == Checkpoint(
        signer.name, 3, merkle.EMPTY_ROOT
    )
