"""SQLite-specific guarantees beyond the shared contract."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from casetrail_platform.errors import CommandAlreadyRecorded, StorageUnavailableError
from casetrail_platform.store.port import NO_STREAM, StreamVersion
from casetrail_platform.store.sqlite import SqliteEventStore
from casetrail_platform.store.sqlite_checkpoints import SqliteCheckpointStore
from casetrail_platform.store.sqlite_writer import SqliteWriter, call_soon_unless_closed
from tests.support.sample_events import note, sample_registry


async def test_stored_events_cannot_be_changed_or_deleted_through_the_database(
    tmp_path: Path,
) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    await store.append("case-1", [note("1")], NO_STREAM)
    await store.close()
    connection = sqlite3.connect(tmp_path / "events.db")

    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        connection.execute("UPDATE stored_events SET stream = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="cannot be deleted"):
        connection.execute("DELETE FROM stored_events")


async def test_a_file_made_before_the_command_table_gets_its_commands_on_open(
    tmp_path: Path,
) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    command = uuid4()
    first = note("1")
    first = replace(first, metadata=replace(first.metadata, causation_id=command))
    # As an older version stored a command: its events only.
    await store.append("case-1", [first], NO_STREAM)
    await store.close()
    with sqlite3.connect(tmp_path / "events.db") as connection:
        connection.execute("DROP TABLE recorded_commands")

    reopened = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    other = replace(note("2"), metadata=first.metadata)
    with pytest.raises(CommandAlreadyRecorded):
        await reopened.append("case-2", [other], NO_STREAM, command_id=command)
    assert await reopened.stream_version("case-2") == 0
    await reopened.close()
    connection = sqlite3.connect(tmp_path / "events.db")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        connection.execute("UPDATE recorded_commands SET stream = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="cannot be deleted"):
        connection.execute("DELETE FROM recorded_commands")


async def test_a_command_is_recorded_without_looking_it_up_first(tmp_path: Path) -> None:
    """The writer records a command in one statement (the table's key settles a repeat); a
    repeat under another request still writes nothing and one of the same events returns them."""
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    statements: list[str] = []
    await store.writer.write(lambda connection: connection.set_trace_callback(statements.append))
    command = uuid4()
    first = note("1")
    first = replace(first, metadata=replace(first.metadata, causation_id=command))
    recorded = await store.append("case-1", [first], NO_STREAM, command_id=command)
    other = replace(note("2"), metadata=first.metadata)
    with pytest.raises(CommandAlreadyRecorded):
        await store.append("case-2", [other], NO_STREAM, command_id=command)
    assert await store.append("case-1", [first], NO_STREAM, command_id=command) == recorded

    assert [s for s in statements if "recorded_commands" in s and "INSERT" not in s] == []
    assert await store.stream_version("case-2") == 0
    assert await store.last_position() == recorded[-1].position
    await store.close()


async def test_events_survive_reopening_the_file(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    written = await store.append("case-1", [note("1"), note("1")], NO_STREAM)
    await store.close()

    reopened = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    assert await reopened.read_stream("case-1") == written
    await reopened.close()


async def test_concurrent_appends_share_commits_and_fail_alone(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())

    outcomes = await asyncio.gather(
        *(store.append(f"case-{i % 50}", [note(str(i))], NO_STREAM) for i in range(100)),
        return_exceptions=True,
    )

    succeeded = [o for o in outcomes if isinstance(o, list)]
    assert len(succeeded) == 50
    assert await store.last_position() == 50
    await store.close()


async def test_checkpoints_never_go_backwards(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    checkpoints = SqliteCheckpointStore(store)

    await checkpoints.save("relay", 7)
    await checkpoints.save("relay", 3)

    assert await checkpoints.load("relay") == 7
    assert await checkpoints.load("other") == 0
    await store.close()


async def test_a_write_after_close_fails_instead_of_waiting_for_good(tmp_path: Path) -> None:
    """Another task still appending or saving its checkpoint as the store closes is told the
    store is away: queued behind the writer's stop, its write was never answered."""
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    await store.append("case-1", [note("1")], NO_STREAM)
    await store.close()

    with pytest.raises(StorageUnavailableError):
        await asyncio.wait_for(store.append("case-1", [note("1")], 1), 5)
    with pytest.raises(StorageUnavailableError):
        await asyncio.wait_for(SqliteCheckpointStore(store).save("relay", 1), 5)


def _open_descriptors_of(path: Path) -> list[str]:
    names = [str(path), f"{path}-wal", f"{path}-shm"]
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:  # the listing's own descriptor, already closed
            continue
        if str(target) in names:
            found.append(str(target))
    return found


def _wal_of(path: Path) -> Path:
    return Path(f"{path}-wal")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
async def test_close_closes_every_connection_it_opened_readers_included(tmp_path: Path) -> None:
    """Without waiting for garbage collection: the reader threads' connections too, so the
    last one folds the WAL in and no descriptor of the file remains."""
    path = tmp_path / "events.db"
    store = await SqliteEventStore.open(path, sample_registry())
    await store.append("case-1", [note("1")], NO_STREAM)
    # Both reader threads and the loop's own connection read.
    await asyncio.gather(*(store.stream_version("case-1") for _ in range(8)))
    await store.read_stream("case-1")
    kept = store  # a reference remains, as a caller holding the store has one

    await kept.close()

    assert _open_descriptors_of(path) == []
    assert not _wal_of(path).exists()  # the last connection closed folded it in


def test_a_request_whose_loop_closed_before_its_answer_leaves_the_writer_serving(
    tmp_path: Path,
) -> None:
    """The writer answers each request on the loop that made it; one closed meanwhile (its
    caller gone) is not answered, and the writer goes on serving every other loop."""
    owner = asyncio.new_event_loop()
    store = owner.run_until_complete(
        SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    )
    started, release = threading.Event(), threading.Event()

    def held_checkpoint(connection: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)
        connection.execute("INSERT INTO checkpoints (name, position) VALUES ('gone', 7)")

    gone = asyncio.new_event_loop()
    request = gone.create_task(store.writer.write(held_checkpoint))
    gone.run_until_complete(asyncio.sleep(0))
    assert started.wait(10)
    request.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        gone.run_until_complete(request)
    gone.close()
    release.set()

    # The closed loop's work was committed all the same; later appends, from the store's own
    # loop and from another, are answered.
    appended = owner.run_until_complete(
        asyncio.wait_for(store.append("case-1", [note("1")], NO_STREAM), 5)
    )
    assert [event.sequence for event in appended] == [1]
    assert owner.run_until_complete(SqliteCheckpointStore(store).load("gone")) == 7

    async def append_from_another_loop() -> int:
        recorded = await asyncio.wait_for(store.append("case-1", [note("2")], 1), 5)
        return recorded[0].sequence

    assert asyncio.run(append_from_another_loop()) == 2
    owner.run_until_complete(store.close())
    owner.close()


def test_answering_a_loop_that_refuses_for_another_reason_is_not_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a closed loop goes unanswered: any other failure to hand over an answer raises."""

    def refusing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("not closed, refusing")

    open_loop = asyncio.new_event_loop()
    monkeypatch.setattr(open_loop, "call_soon_threadsafe", refusing)
    closed_loop = asyncio.new_event_loop()
    closed_loop.close()
    try:
        assert not call_soon_unless_closed(closed_loop, print)
        with pytest.raises(RuntimeError, match="refusing"):
            call_soon_unless_closed(open_loop, print)
    finally:
        open_loop.close()


async def test_a_fault_after_a_commit_still_answers_the_committed_writes(tmp_path: Path) -> None:
    # The notice to readers failed after COMMIT: the writes are durable and said so; the thread
    # went on (it ended, and every caller of the batch and after it waited for good).
    writer = SqliteWriter(str(tmp_path / "file.db"))
    writer.start("CREATE TABLE IF NOT EXISTS t (n INTEGER)")

    def failing_notice(connection: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    writer.after_commit = failing_notice
    try:
        for _ in range(2):
            await asyncio.wait_for(writer.write(lambda c: c.execute("INSERT INTO t VALUES (1)")), 5)
        rows = await asyncio.wait_for(
            writer.write(lambda c: c.execute("SELECT count(*) FROM t").fetchone()), 5
        )
        assert rows == (2,)
    finally:
        writer.stop()


async def test_a_writer_ended_by_a_fault_fails_every_write_instead_of_leaving_it_waiting(
    tmp_path: Path,
) -> None:
    writer = SqliteWriter(str(tmp_path / "file.db"))
    writer.start("CREATE TABLE IF NOT EXISTS t (n INTEGER)")

    def rollback_failed(connection: sqlite3.Connection, batch: list[Any]) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    writer._commit_batch = rollback_failed  # type: ignore[method-assign]
    with pytest.raises(StorageUnavailableError):
        await asyncio.wait_for(writer.write(lambda c: c.execute("SELECT 1")), 5)
    with pytest.raises(StorageUnavailableError, match=r"writer of file\.db"):
        await asyncio.wait_for(writer.write(lambda c: c.execute("SELECT 1")), 5)
    writer.stop()


async def test_an_append_cancelled_while_queued_keeps_its_guard_lock_until_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller of an opening gives up (its RPC cancelled) while the append waits in the
    writer's queue: the writer still commits it, so the client's lock it holds (``StreamVersion
    .lock``, PostgreSQL's shared lock held to the commit) is held until then. Released at the
    cancellation, an erasure took it, looked at the client's cases before the opening committed
    and named none of it, and the case was opened after all."""
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    name = "intake.client.cases:client-1"
    await store.append("client-1", [note("client-1")], NO_STREAM)
    gate = threading.Event()
    blocked = asyncio.ensure_future(store.writer.write(lambda _: gate.wait(10)))
    queued = asyncio.Event()
    write = store.writer.write

    async def noted(work: Any) -> Any:
        queued.set()  # the request is put in the queue before this task next yields
        return await write(work)

    monkeypatch.setattr(store.writer, "write", noted)
    try:
        opening = asyncio.ensure_future(
            store.append("case-1", [note("1")], NO_STREAM, guard=StreamVersion("client-1", 1, name))
        )
        # It holds the lock, its write queued behind the blocked one.
        await asyncio.wait_for(queued.wait(), 10)
        opening.cancel()

        async def erase() -> int:
            async with store.locks.holding([name]):
                seen = await store.stream_version("case-1")  # the look at the client's cases
                await store.append("client-1", [note("client-1", "erased")], 1)
                return seen

        erasing = asyncio.ensure_future(erase())
        await asyncio.sleep(0.1)  # the erasure looks as soon as it holds the lock
    finally:
        gate.set()
        await blocked
    seen = await asyncio.wait_for(erasing, 10)
    with contextlib.suppress(asyncio.CancelledError):
        await opening
    assert seen == await store.stream_version("case-1") == 1
    await store.close()
