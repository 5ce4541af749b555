"""The embedded read models' ``forget_overwritten``: once it returns, a value an erasure
overwrote is in neither the database file nor its write-ahead log, even when a background
checkpoint was running at the time (it held the checkpoint lock, SQLite answered the cut busy
at once, and nothing noticed: the values stayed until the next checkpoint, 200 commits on)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest

from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.projections import sqlite as read_models
from casetrail_platform.projections.sqlite import CHECKPOINT_EVERY, SqliteReadModelStore

CANARY = "CANARY-" + "z" * 40


def _copies(directory: Path) -> int:
    return sum(
        path.read_bytes().count(CANARY.encode())
        for path in directory.iterdir()
        if path.name.startswith("rm.db") and path.is_file()
    )


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def _restore(directory: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (directory / name).write_bytes(data)


async def _written_until_a_checkpoint_starts(store: SqliteReadModelStore) -> None:
    for n in range(CHECKPOINT_EVERY):
        async with store.transaction() as transaction:
            await transaction.put("case_views", "c1", {"description": CANARY, "n": n})
            for m in range(20):  # enough pages that the checkpoint takes a while
                await transaction.put("other", f"{n}-{m}", {"pad": os.urandom(1000).hex()})


async def test_a_value_overwritten_leaves_both_files_though_a_checkpoint_was_running(
    tmp_path: Path,
) -> None:
    store = SqliteReadModelStore(tmp_path / "rm.db")
    try:
        await _written_until_a_checkpoint_starts(store)
        await asyncio.sleep(0)  # the 200th commit's background checkpoint gets going
        async with store.transaction() as transaction:  # the erasure's batch
            await transaction.put("case_views", "c1", {"description": "[erased]"})
        await store.forget_overwritten()
        assert _copies(tmp_path) == 0
    finally:
        await store.close()


async def test_a_log_that_cannot_be_cut_is_refused_and_cut_by_a_later_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection reading an old snapshot keeps the log: ``forget_overwritten``
    refuses after its patience (the caller's batch is tried again) rather than return with
    the values still there, and the next commit's background checkpoint cuts it."""
    monkeypatch.setattr(read_models, "FORGET_PATIENCE_SECONDS", 0.2)
    store = SqliteReadModelStore(tmp_path / "rm.db")
    reader = sqlite3.connect(tmp_path / "rm.db", isolation_level=None)
    try:
        async with store.transaction() as transaction:
            await transaction.put("case_views", "c1", {"description": CANARY})
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM documents").fetchone()  # holds this snapshot
        async with store.transaction() as transaction:
            await transaction.put("case_views", "c1", {"description": "[erased]"})
        with pytest.raises(StorageUnavailableError):
            await store.forget_overwritten()
        reader.execute("COMMIT")
        async with store.transaction() as transaction:
            await transaction.put("other", "later", {"n": 1})
        await asyncio.sleep(0)
        await store.forget_overwritten()  # as the batch tried again does
        assert _copies(tmp_path) == 0
    finally:
        reader.close()
        await store.close()


async def test_a_log_left_by_a_process_that_ended_is_cut_when_the_file_is_opened(
    tmp_path: Path,
) -> None:
    """An end between an erasure's commit and its ``forget_overwritten`` left the log whole,
    and the projection's position is past the erasure: nothing would ask again."""
    store = SqliteReadModelStore(tmp_path / "rm.db")
    async with store.transaction() as transaction:
        await transaction.put("case_views", "c1", {"description": CANARY})
    async with store.transaction() as transaction:
        await transaction.put("case_views", "c1", {"description": "[erased]"})
    assert _copies(tmp_path) > 0
    # As a process killed now would leave them: the log not cut (closing does not cut it).
    store._writer.execute("PRAGMA wal_autocheckpoint=0")
    kept = _files(tmp_path)
    await store.close()
    _restore(tmp_path, kept)
    reopened = SqliteReadModelStore(tmp_path / "rm.db")
    try:
        assert await reopened.get("case_views", "c1") == {"description": "[erased]"}
        assert _copies(tmp_path) == 0
    finally:
        await reopened.close()


class _LongestStall:
    """The longest the event loop went without running a task that ticks every 10 ms."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._ticking: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _LongestStall:
        self._ticking = asyncio.create_task(self._tick())
        await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.sleep(0.02)
        assert self._ticking is not None
        self._ticking.cancel()

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.seconds = max(self.seconds, now - last)
            last = now


async def test_a_reader_keeping_the_log_never_stalls_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cut ran on the loop's thread, where SQLite's busy handler waited its 10 s timeout
    for the reader: every call of the embedded process froze that long, whatever the patience.
    Then each commit's background cut held the log's write lock as long, and the loop's next
    transaction waited for it. Now each attempt answers busy at once, off the loop, and the
    patience decides. (A bound on blocking, generous: no benchmark.)"""
    monkeypatch.setattr(read_models, "FORGET_PATIENCE_SECONDS", 0.5)
    store = SqliteReadModelStore(tmp_path / "rm.db")
    reader = sqlite3.connect(tmp_path / "rm.db", isolation_level=None)  # an operator's shell
    try:
        async with store.transaction() as transaction:
            await transaction.put("case_views", "c1", {"description": CANARY})
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM documents").fetchone()
        async with store.transaction() as transaction:
            await transaction.put("case_views", "c1", {"description": "[erased]"})
        async with _LongestStall() as stall:
            began = time.monotonic()
            with pytest.raises(StorageUnavailableError):
                await store.forget_overwritten()
            assert time.monotonic() - began < 2.0  # the patience, not the busy timeout
            for n in range(3):  # later batches, each followed by a background cut
                async with store.transaction() as transaction:
                    await transaction.put("other", str(n), {"n": n})
                await asyncio.sleep(0.05)
        assert stall.seconds < 1.0
    finally:
        reader.execute("COMMIT")
        reader.close()
        await store.close()


class _KeptBack(SqliteReadModelStore):
    """Its forgetting fails as while a snapshot older than the erasure stays open."""

    attempts = 0

    async def forgetting_pending(self) -> bool:
        return True

    async def forget_overwritten(self, patience: float | None = None) -> None:
        assert patience == 0.0  # one try: a wait would hold the writer of every read model
        self.attempts += 1
        raise StorageUnavailableError("an older snapshot is open")


async def test_a_pending_forget_that_fails_holds_back_no_catch_up_and_waits_to_try_again(
    tmp_path: Path,
) -> None:
    """It runs before every catch-up, intake's read-your-writes on each registration among
    them: while a backup's snapshot stayed open for hours after an erasure, each one waited
    ``FORGET_PATIENCE_SECONDS`` and failed UNAVAILABLE."""
    store = _KeptBack(tmp_path / "rm.db")
    try:
        await store.forget_if_pending()
        await store.forget_if_pending()
        assert store.attempts == 1

        store._forget_retry_at = time.monotonic()  # PENDING_FORGET_RETRY_SECONDS later
        await store.forget_if_pending()
        assert store.attempts == 2
    finally:
        await store.close()
