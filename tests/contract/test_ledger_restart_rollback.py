"""A ledger rolled back while its service was down does not sign a fork on restart, on SQLite
(the mark: a file beside the key) and PostgreSQL (the mark: the checkpoints topic on Kafka).

Each case signs a checkpoint and publishes it, "stops" (closes the ledger), changes the tables
with the database's rights only (no key), and "restarts": a new ``LedgerLog`` with the same key
and a new record object, as a new process would have. A store that no longer extends the
published checkpoint is refused with ``LedgerTampered`` and nothing new is signed or published;
ledger tables emptied over an intact store hash back to the same tree, and signing goes on.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiokafka.admin import NewTopic

from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.checkpoint_file import FileCheckpointRecord
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import CheckpointNotPublished, LedgerLog, LedgerTampered
from casetrail_platform.ledger.note import Checkpoint, Verifier, open_checkpoint, origin_of
from casetrail_platform.ledger.port import CheckpointRecord, StoredCheckpoint
from casetrail_platform.ledger.verify import verify_store
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.contract.conftest import StoreOpener
from tests.support.ledger import (
    FLIP,
    TRUNCATE,
    append_notes,
    open_ledger,
    postgres_sql,
    tamper,
    wipe_ledger,
)

SIZE = 40
ORIGIN = origin_of("test-agency", "test")

RecordOpener = Callable[[], CheckpointRecord]


@pytest.fixture
async def open_record(
    open_store: StoreOpener, tmp_path: Path
) -> AsyncIterator[tuple[EventStore, RecordOpener]]:
    """The event store and, per "process", a new record object over the same kept notes."""
    store = await open_store()
    opened: list[CheckpointRecord] = []
    if isinstance(store, SqliteEventStore):

        def open_one() -> CheckpointRecord:
            opened.append(FileCheckpointRecord(tmp_path / "keys" / "ledger.checkpoint"))
            return opened[-1]

        yield store, open_one
        return
    from casetrail_platform.bus.topics import create_topics
    from casetrail_platform.ledger.publication import KafkaCheckpointPublisher
    from tests.contract.bus_conftest import delete_topics, kafka_test_settings
    from tests.support.servers import server_missing

    settings = kafka_test_settings()
    topic = f"test.ledger-checkpoints.{os.urandom(5).hex()}"
    try:
        await create_topics(settings, [NewTopic(topic, 1, 1)])
    except Exception as error:
        server_missing("Kafka", error)
    # Agencies' names repeat across runs on one Kafka: notes of the same origin under other
    # keys (a larger size, too) and of other origins are on the topic and must not count.
    strangers = [
        FileSigner(ORIGIN, tmp_path / "stranger.key"),
        FileSigner(origin_of("test-agency", "other"), tmp_path / "other.key"),
    ]
    seeding = KafkaCheckpointPublisher(settings, topic)
    for stranger in strangers:
        note = await stranger.sign_checkpoint(Checkpoint(stranger.name, 1000, merkle.EMPTY_ROOT))
        await seeding.publish(StoredCheckpoint(1000, note))
    await seeding.stop()

    def open_kafka() -> CheckpointRecord:
        opened.append(KafkaCheckpointPublisher(settings, topic, read_timeout=20.0))
        return opened[-1]

    yield store, open_kafka
    for record in opened:
        await record.stop()
    await delete_topics(settings, [topic])


async def first_run(
    store: EventStore, tmp_path: Path, open_one: RecordOpener
) -> tuple[FileSigner, StoredCheckpoint]:
    """A process that signs and publishes a checkpoint of ``SIZE`` events, then stops."""
    signer = FileSigner(ORIGIN, tmp_path / "keys" / "ledger.key")
    ledger_store = await open_ledger(store, tmp_path)
    log = LedgerLog(ledger_store, signer)
    log.publish_to(open_one())
    await append_notes(store, SIZE)
    signed = await log.sign()
    assert signed.size == SIZE
    await ledger_store.close()
    return signer, signed


async def restarted(store: EventStore, tmp_path: Path, signer: FileSigner) -> LedgerLog:
    return LedgerLog(await open_ledger(store, tmp_path), signer)


async def newest_published(open_one: RecordOpener, signer: FileSigner) -> Checkpoint | None:
    return await open_one().newest(await signer.verifier())


ROLLBACKS = {
    # The events after position 30 deleted and the ledger emptied: 30 leaves, 40 signed.
    "events truncated": False,
    # The same, then new events appended past 40: a tree of 45 whose first 40 differ.
    "truncated and appended": True,
}


@pytest.mark.parametrize("append_again", list(ROLLBACKS.values()), ids=list(ROLLBACKS))
async def test_a_store_rolled_back_while_down_is_refused_on_restart(
    append_again: bool,
    open_record: tuple[EventStore, RecordOpener],
    open_store: StoreOpener,
    tmp_path: Path,
) -> None:
    store, open_one = open_record
    signer, signed = await first_run(store, tmp_path, open_one)
    held = open_checkpoint(signed.note, await signer.verifier())

    await tamper(store, tmp_path, TRUNCATE)
    await wipe_ledger(store, tmp_path)
    if append_again:
        await append_notes(await open_store(), 15)

    log = await restarted(store, tmp_path, signer)
    log.publish_to(open_one())
    try:
        with pytest.raises(LedgerTampered, match="published"):
            await log.sign()
        # Refused again on every later try: the mark is not forgotten after one refusal.
        with pytest.raises(LedgerTampered):
            await log.sign()
        assert await log.store.latest_checkpoint() is None
    finally:
        await log.store.close()
    assert await newest_published(open_one, signer) == held


async def test_ledger_tables_emptied_over_an_intact_store_sign_on(
    open_record: tuple[EventStore, RecordOpener], tmp_path: Path
) -> None:
    store, open_one = open_record
    signer, signed = await first_run(store, tmp_path, open_one)
    held = open_checkpoint(signed.note, await signer.verifier())
    await wipe_ledger(store, tmp_path)

    log = await restarted(store, tmp_path, signer)
    log.publish_to(open_one())
    try:
        again = await log.sign()  # the same tree hashed again: the same checkpoint
        assert open_checkpoint(again.note, await signer.verifier()) == held
        await append_notes(store, 5)
        grown = open_checkpoint((await log.sign()).note, await signer.verifier())
        assert grown.size == SIZE + 5
        proof = await log.consistency_proof(SIZE, grown.size)
        merkle.verify_consistency(SIZE, grown.size, held.root, grown.root, proof)
    finally:
        await log.store.close()
    assert await newest_published(open_one, signer) == grown


async def test_a_consistent_restart_signs_on(
    open_record: tuple[EventStore, RecordOpener], tmp_path: Path
) -> None:
    store, open_one = open_record
    signer, _ = await first_run(store, tmp_path, open_one)
    await append_notes(store, 3)  # appended while the ledger was down

    log = await restarted(store, tmp_path, signer)
    log.publish_to(open_one())
    try:
        signed = await log.sign()
        assert signed.size == SIZE + 3
    finally:
        await log.store.close()
    newest = await newest_published(open_one, signer)
    assert newest is not None
    assert newest.size == SIZE + 3


class FailingFirst(CheckpointRecord):
    """``record``, but its first ``failures`` publications fail (a broker away, a full disk):
    the notes it was given, in order, whether or not they were taken."""

    def __init__(self, record: CheckpointRecord, failures: int) -> None:
        self.record = record
        self.failures = failures
        self.given: list[int] = []

    async def publish(self, checkpoint: StoredCheckpoint) -> None:
        self.given.append(checkpoint.size)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the record cannot be written")
        await self.record.publish(checkpoint)

    async def newest(self, verifier: Verifier) -> Checkpoint | None:
        return await self.record.newest(verifier)

    async def stop(self) -> None:
        await self.record.stop()


async def test_a_checkpoint_not_published_is_published_again_before_it_counts(
    open_record: tuple[EventStore, RecordOpener], tmp_path: Path
) -> None:
    """Until the record takes a checkpoint, it is not stored (nothing to fetch, no newer one
    signed); then it is published ahead of the next one and stored."""
    store, open_one = open_record
    signer = FileSigner(ORIGIN, tmp_path / "keys" / "ledger.key")
    ledger_store = await open_ledger(store, tmp_path)
    log = LedgerLog(ledger_store, signer)
    record = FailingFirst(open_one(), failures=2)
    log.publish_to(record)
    await append_notes(store, SIZE)
    try:
        for _ in range(2):
            with pytest.raises(CheckpointNotPublished, match=f"size {SIZE} could not be"):
                await log.sign()
            assert await ledger_store.latest_checkpoint() is None
        await append_notes(store, 5)  # the tree grew meanwhile: the pending note goes first
        signed = await log.sign()
        assert signed.size == SIZE + 5
        assert record.given == [SIZE, SIZE, SIZE, SIZE + 5]
        assert [c.size for c in await ledger_store.checkpoints(after_size=0, limit=10)] == [
            SIZE,
            SIZE + 5,
        ]
    finally:
        await ledger_store.close()
    newest = await newest_published(open_one, signer)
    assert newest is not None
    assert newest.size == SIZE + 5


async def test_a_rollback_below_a_checkpoint_first_not_published_is_refused_on_restart(
    open_record: tuple[EventStore, RecordOpener], tmp_path: Path
) -> None:
    store, open_one = open_record
    signer = FileSigner(ORIGIN, tmp_path / "keys" / "ledger.key")
    ledger_store = await open_ledger(store, tmp_path)
    log = LedgerLog(ledger_store, signer)
    log.publish_to(FailingFirst(open_one(), failures=1))
    await append_notes(store, SIZE)
    try:
        with pytest.raises(CheckpointNotPublished):
            await log.sign()
        signed = await log.sign()  # the next round: published, then stored
        assert signed.size == SIZE
    finally:
        await ledger_store.close()

    await tamper(store, tmp_path, TRUNCATE)
    await wipe_ledger(store, tmp_path)
    restarted_log = await restarted(store, tmp_path, signer)
    restarted_log.publish_to(open_one())
    try:
        with pytest.raises(LedgerTampered, match="published"):
            await restarted_log.sign()
        assert await restarted_log.store.latest_checkpoint() is None
    finally:
        await restarted_log.store.close()


async def test_a_stored_checkpoint_the_record_lacks_is_published_on_restart(
    open_record: tuple[EventStore, RecordOpener], tmp_path: Path
) -> None:
    """A checkpoint stored but never published (versions that stored first and only logged a
    failed publication) is published by the next process before it signs anything newer:
    a rollback below it is refused on the restart after."""
    store, open_one = open_record
    signer = FileSigner(ORIGIN, tmp_path / "keys" / "ledger.key")
    ledger_store = await open_ledger(store, tmp_path)
    await append_notes(store, SIZE)
    try:
        await LedgerLog(ledger_store, signer).sign()  # stored, no record
    finally:
        await ledger_store.close()
    assert await newest_published(open_one, signer) is None

    log = await restarted(store, tmp_path, signer)
    log.publish_to(open_one())
    try:
        assert (await log.sign()).size == SIZE  # the tree has not grown: nothing new signed
    finally:
        await log.store.close()
    newest = await newest_published(open_one, signer)
    assert newest is not None
    assert newest.size == SIZE

    await tamper(store, tmp_path, TRUNCATE)
    await wipe_ledger(store, tmp_path)
    log = await restarted(store, tmp_path, signer)
    log.publish_to(open_one())
    try:
        with pytest.raises(LedgerTampered, match="published"):
            await log.sign()
    finally:
        await log.store.close()


async def test_verify_store_holds_a_ledger_emptied_to_the_mark_its_log_published(
    open_record: tuple[EventStore, RecordOpener], tmp_path: Path
) -> None:
    """The mark is what verify-store trusts (``casetrail verify-store`` reads it as the log
    does). Its tables emptied, the ledger no longer covers the checkpoint published, and an
    event edited behind the triggers then passed: "0 checkpoints checked", OK, though the
    restarted log refused the store. Events beyond the mark are noted, not failed."""
    store, open_one = open_record
    signer, _ = await first_run(store, tmp_path, open_one)
    verifier = await signer.verifier()
    await wipe_ledger(store, tmp_path)

    mark = await newest_published(open_one, signer)
    assert mark is not None
    ledger_store = await open_ledger(store, tmp_path)
    try:
        emptied = await verify_store(ledger_store, verifier, trusted=[mark])
        assert not emptied.ok
        assert emptied.problem is not None
        assert f"the trusted checkpoint of size {SIZE}" in emptied.problem
        assert f"no longer covers positions 1 to {SIZE}" in emptied.problem

        await tamper(
            store, tmp_path, FLIP if isinstance(store, SqliteEventStore) else postgres_sql(FLIP)
        )
        edited = await verify_store(ledger_store, verifier, trusted=[mark])
        assert not edited.ok
        assert f"the tree of the first {SIZE} events is not the one signed" in str(edited.problem)
    finally:
        await ledger_store.close()
    log = await restarted(store, tmp_path, signer)
    log.publish_to(open_one())
    try:
        with pytest.raises(LedgerTampered, match="published"):
            await log.sign()
    finally:
        await log.store.close()


async def test_events_beyond_the_published_mark_are_only_not_hashed_yet(
    open_record: tuple[EventStore, RecordOpener], tmp_path: Path
) -> None:
    store, open_one = open_record
    signer, _ = await first_run(store, tmp_path, open_one)
    await append_notes(store, 3)
    mark = await newest_published(open_one, signer)
    assert mark is not None
    ledger_store = await open_ledger(store, tmp_path)
    try:
        lagging = await verify_store(ledger_store, await signer.verifier(), trusted=[mark])
    finally:
        await ledger_store.close()
    assert lagging.ok, lagging.problem
    assert lagging.checkpoints_checked == 2  # the mark, and the same checkpoint stored
    assert lagging.notes == ["3 events are not hashed into the ledger yet"]
