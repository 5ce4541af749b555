"""The ledger's own health entry: NOT_SERVING while the ledger cannot follow its store, SERVING
again once it does (a database restart), but never again after a tamper finding; on start,
the same for the record of published checkpoints (unreachable, or showing a rollback)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from grpc_health.v1 import health, health_pb2

from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.checkpoint_file import FileCheckpointRecord
from casetrail_platform.ledger.hosting import run_ledger
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import LedgerLog, LedgerTampered
from casetrail_platform.ledger.note import Checkpoint, Verifier, origin_of
from casetrail_platform.ledger.port import StoredCheckpoint
from casetrail_platform.ledger.sqlite import SqliteLedgerStore
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.support.sample_events import note, sample_registry
from tests.support.waiting import eventually, health_reports

NAME = "casetrail.test.ledger"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ScriptedLedger(LedgerLog):
    """A ledger whose next catch-up fails with ``failure`` (``None``: succeeds)."""

    failure: Exception | None = None

    async def catch_up(self) -> int:
        if self.failure is not None:
            raise self.failure
        return 0


async def follow_with_health(tmp_path: Path, failures: list[Exception | None]) -> list[int]:
    """Run the ledger through ``failures`` in turn; the health status seen after each."""
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    ledger_store = await SqliteLedgerStore.open(tmp_path / "ledger.db", tmp_path / "events.db")
    signer = FileSigner(origin_of("test-agency", "test"), tmp_path / "keys" / "test.key")
    ledger = ScriptedLedger(ledger_store, signer)
    servicer = health.aio.HealthServicer()
    await servicer.set(NAME, health_pb2.HealthCheckResponse.UNKNOWN)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_ledger(ledger, store, servicer, NAME, stop, sign_every=60.0, retry_after=0.01)
    )
    seen = []
    try:
        for failure in failures:
            ledger.failure = failure
            wanted = SERVING if failure is None else NOT_SERVING
            await eventually(health_reports(servicer, NAME, wanted), f"ledger health {wanted}")
            # a few more rounds: the status stays what it became
            await asyncio.sleep(0.1)
            response = await servicer.Check(health_pb2.HealthCheckRequest(service=NAME), None)
            seen.append(response.status)
    finally:
        stop.set()
        await task
        await ledger_store.close()
        await store.close()
    return seen


async def test_the_ledger_is_serving_again_once_it_follows_the_store_again(
    tmp_path: Path,
) -> None:
    outage = ConnectionError("the database is restarting")
    seen = await follow_with_health(tmp_path, [None, outage, None, outage, None])
    assert seen == [SERVING, NOT_SERVING, SERVING, NOT_SERVING, SERVING]


async def test_a_tamper_finding_keeps_the_ledger_not_serving(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    ledger_store = await SqliteLedgerStore.open(tmp_path / "ledger.db", tmp_path / "events.db")
    signer = FileSigner(origin_of("test-agency", "test"), tmp_path / "keys" / "test.key")
    ledger = ScriptedLedger(ledger_store, signer)
    servicer = health.aio.HealthServicer()
    await servicer.set(NAME, health_pb2.HealthCheckResponse.UNKNOWN)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_ledger(ledger, store, servicer, NAME, stop, sign_every=60.0, retry_after=0.01)
    )
    try:
        await eventually(health_reports(servicer, NAME, SERVING), "ledger serving")
        ledger.failure = LedgerTampered("event 3 changed", position=3)
        await eventually(health_reports(servicer, NAME, NOT_SERVING), "ledger not serving")
        ledger.failure = None  # rounds succeed again, yet the finding stands
        await asyncio.sleep(0.2)
        assert await health_reports(servicer, NAME, NOT_SERVING)() == NOT_SERVING
    finally:
        stop.set()
        await task
        await ledger_store.close()
        await store.close()


class UnreachableRecord(FileCheckpointRecord):
    """A record that cannot be read while ``down`` (a broker away)."""

    down = True

    async def newest(self, verifier: Verifier) -> Checkpoint | None:
        if self.down:
            raise ConnectionError("the broker is away")
        return await super().newest(verifier)


async def test_a_store_rolled_back_while_down_is_reported_on_start(tmp_path: Path) -> None:
    """The record holds a checkpoint of 5 events; the store holds none (emptied while the
    service was down): NOT_SERVING at once, though nothing is due for signing, and for good."""
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    ledger_store = await SqliteLedgerStore.open(tmp_path / "ledger.db", tmp_path / "events.db")
    signer = FileSigner(origin_of("test-agency", "test"), tmp_path / "keys" / "test.key")
    record = FileCheckpointRecord(tmp_path / "keys" / "ledger.checkpoint")
    published = await signer.sign_checkpoint(Checkpoint(signer.name, 5, merkle.EMPTY_ROOT))
    await record.publish(StoredCheckpoint(5, published))
    ledger = LedgerLog(ledger_store, signer)
    ledger.publish_to(record)
    servicer = health.aio.HealthServicer()
    await servicer.set(NAME, health_pb2.HealthCheckResponse.UNKNOWN)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_ledger(ledger, store, servicer, NAME, stop, sign_every=60.0, retry_after=0.01)
    )
    try:
        await eventually(health_reports(servicer, NAME, NOT_SERVING), "ledger not serving")
        # Events past the size published: the tree of 6 still does not extend it.
        await store.append("case-1", [note("case-1") for _ in range(6)], 0)
        await asyncio.sleep(0.2)
        assert await health_reports(servicer, NAME, NOT_SERVING)() == NOT_SERVING
        assert await ledger_store.latest_checkpoint() is None
    finally:
        stop.set()
        await task
        await ledger_store.close()
        await store.close()
    assert await record.newest(await signer.verifier()) == Checkpoint(
        signer.name, 5, merkle.EMPTY_ROOT
    )


class UnwritableRecord(FileCheckpointRecord):
    """A record that cannot be written while ``down`` (a broker away, a full disk)."""

    down = True

    async def publish(self, checkpoint: StoredCheckpoint) -> None:
        if self.down:
            raise ConnectionError("the broker is away")
        await super().publish(checkpoint)


@pytest.mark.parametrize(
    ("record_kind", "sign_every"),
    [
        # Not read: nothing is signed before the record is read back.
        ("unreachable", 0.01),
        # Not written: a checkpoint the record cannot take is not stored, and is published
        # again each round until it is.
        ("unwritable", 60.0),
    ],
)
async def test_nothing_counts_as_signed_until_the_record_is_read_and_takes_it(
    tmp_path: Path, record_kind: str, sign_every: float
) -> None:
    """While the record is down the ledger reports NOT_SERVING and stores no checkpoint; once it
    is back, SERVING, and the checkpoint stored is the one published."""
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    ledger_store = await SqliteLedgerStore.open(tmp_path / "ledger.db", tmp_path / "events.db")
    signer = FileSigner(origin_of("test-agency", "test"), tmp_path / "keys" / "test.key")
    kind = UnreachableRecord if record_kind == "unreachable" else UnwritableRecord
    record = kind(tmp_path / "keys" / "ledger.checkpoint")
    ledger = LedgerLog(ledger_store, signer)
    ledger.publish_to(record)
    await store.append("case-1", [note("case-1") for _ in range(3)], 0)
    servicer = health.aio.HealthServicer()
    await servicer.set(NAME, health_pb2.HealthCheckResponse.UNKNOWN)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_ledger(ledger, store, servicer, NAME, stop, sign_every=sign_every, retry_after=0.01)
    )
    try:
        await eventually(health_reports(servicer, NAME, NOT_SERVING), "ledger not serving")
        await asyncio.sleep(0.2)
        assert await ledger_store.latest_checkpoint() is None
        record.down = False
        await eventually(health_reports(servicer, NAME, SERVING), "ledger serving again")
        await eventually(ledger_store.latest_checkpoint, "a checkpoint stored")
    finally:
        stop.set()
        await task
        await ledger_store.close()
        await store.close()
    published = await record.newest(await signer.verifier())
    assert published is not None
    assert published.size == 3
