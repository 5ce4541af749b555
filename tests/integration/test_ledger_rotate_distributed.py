"""`casetrail ledger rotate` on the distributed backend (real PostgreSQL and Kafka): the
handover checkpoint stored in the service's schema and published on the checkpoints topic,
where the new key's mark is found, and `verify-store` with the published keys and their
ranges accepting the log across the rotation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import Checkpoint, Verifier, origin_of
from casetrail_platform.ledger.postgres import PostgresLedgerStore
from casetrail_platform.ledger.publication import KafkaCheckpointPublisher
from casetrail_platform.store.postgres import PostgresEventStore
from tests.support.cli import casetrail_exit
from tests.support.ledger import append_notes, signed_store
from tests.support.sample_events import sample_registry
from tests.support.servers import database_of_its_own, kafka_bootstrap

pytestmark = pytest.mark.kafka

ORIGIN = origin_of("example-agency", "intake")


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of its own: the store's schema is ``intake_events`` whatever the test."""
    with database_of_its_own("rotate") as dsn:
        yield dsn


async def _append(dsn: str, count: int) -> None:
    store = await PostgresEventStore.connect(dsn, sample_registry(), schema="intake_events")
    try:
        await append_notes(store, count)
    finally:
        await store.close()


async def _latest(dsn: str) -> str:
    ledger = await PostgresLedgerStore.connect_read_only(dsn, schema="intake_events")
    try:
        latest = await ledger.latest_checkpoint()
        assert latest is not None
        return latest.note
    finally:
        await ledger.close()


async def _published_mark(verifier: Verifier) -> Checkpoint | None:
    record = KafkaCheckpointPublisher(KafkaSettings(bootstrap_servers=kafka_bootstrap()))
    try:
        return await record.newest(verifier)
    finally:
        await record.stop()


def test_rotate_on_postgresql_and_kafka(
    own_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_key = tmp_path / "intake" / "ledger.key"  # where the command finds the service's key
    asyncio.run(signed_store(own_database, old_key, 5))
    asyncio.run(_append(own_database, 3))
    old = FileSigner(ORIGIN, old_key)
    new_key = tmp_path / "new" / "ledger.key"
    new = FileSigner(ORIGIN, new_key)
    storage = ["--backend", "distributed", "--pg-dsn", own_database, "--data-dir", str(tmp_path)]

    assert casetrail_exit("ledger", "rotate", "intake", "--new-key", str(new_key), *storage) == 0

    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(f"{ORIGIN}+"))
    assert line.startswith(f"{asyncio.run(new.verifier())} from=8 at=")
    handover = asyncio.run(_latest(own_database))
    assert handover.count("\n\u2014 ") == 2
    mark = asyncio.run(_published_mark(asyncio.run(new.verifier())))
    assert mark is not None
    assert mark.size == 8
    keys = tmp_path / "published.keys"
    keys.write_text(f"{asyncio.run(old.verifier())}\n{line}\n")
    verify = ["verify-store", "intake", *storage, "--keys", str(keys)]
    assert casetrail_exit(*verify) == 0
    assert "OK: the store is the tree its checkpoints signed" in capsys.readouterr().out
