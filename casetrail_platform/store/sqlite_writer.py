"""One writer thread per SQLite database file, with group commit.

SQLite allows one writer at a time, and a durable commit costs an fsync. Queuing every write to
one thread lets concurrent appends share a transaction (and its fsync) while each request runs
inside its own SAVEPOINT, so a request that fails rolls back alone and never leaves a partial
write. Callers await a future that resolves only after the COMMIT that made their write durable.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.private_files import private_file

log = logging.getLogger(__name__)

T = TypeVar("T")

WriteWork = Callable[[sqlite3.Connection], T]

MAX_REQUESTS_PER_COMMIT = 256


@dataclass
class _Request(Generic[T]):
    work: WriteWork[T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


_STOP = object()


def connect(path: str, busy_timeout_s: float = 10.0) -> sqlite3.Connection:
    """A connection with the settings every casetrail SQLite file uses: WAL, durable commits;
    the file owner-only, since it holds case data (its directory is the service's, made
    owner-only by ``Infrastructure.service_dir``)."""
    private_file(Path(path))
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
    )
    _use_write_ahead_log(connection, busy_timeout_s)
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def _use_write_ahead_log(connection: sqlite3.Connection, patience_s: float) -> None:
    """Two connections switching one new file to WAL at the same moment can each hold the lock
    the other needs; SQLite then answers one of them 'database is locked' at once, without
    waiting its busy timeout. Tried again until the other's switch is done (the file is then in
    WAL already), within the same patience as any other lock."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            busy = error.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


class SqliteWriter:
    def __init__(self, path: str) -> None:
        self._path = path
        self._requests: queue.SimpleQueue[_Request[Any] | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._ended: StorageUnavailableError | None = None
        # Taken to queue a request and to end on a fault, so that no request is queued after
        # the queue was answered for the last time (it would wait for good).
        self._ending = threading.Lock()
        self.after_commit: Callable[[sqlite3.Connection], None] | None = None
        """Called in the writer thread after every successful commit, with its connection."""

    def start(self, schema: str) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(schema,), name=f"sqlite-writer:{self._path}", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    async def write(self, work: WriteWork[T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._ending:
            if self._ended is not None:
                raise self._ended
            self._requests.put(_Request(work, loop, future))
        return await future

    def stop(self) -> None:
        """Commit and answer what is queued, then end the thread. A write asked for from then
        on fails ``StorageUnavailableError`` at once: queued behind the stop, nobody would
        ever answer it."""
        if self._thread is None:
            return
        with self._ending:
            if self._ended is None:
                self._ended = StorageUnavailableError(f"writer of {Path(self._path).name}")
            ended = self._ended
            self._requests.put(_STOP)
        self._thread.join()
        self._thread = None
        self._answer_queued([], ended)

    def _run(self, schema: str) -> None:
        try:
            connection = connect(self._path)
            connection.executescript(schema)
        except BaseException as error:  # reported to start(), which re-raises it
            self._startup_error = error
            self._ready.set()
            return
        self._ready.set()
        batch: list[_Request[Any]] = []
        try:
            while True:
                first = self._requests.get()
                if first is _STOP:
                    return
                batch = [first]  # type: ignore[list-item]
                stop_after = False
                while len(batch) < MAX_REQUESTS_PER_COMMIT:
                    try:
                        more = self._requests.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop_after = True
                        break
                    batch.append(more)  # type: ignore[arg-type]
                self._commit_batch(connection, batch)
                if stop_after:
                    return
        except BaseException as fault:
            self._end(fault, batch)  # logged there, by type: not raised into threading's hook
        finally:
            connection.close()

    def _end(self, fault: BaseException, batch: list[_Request[Any]]) -> None:
        """The thread ends on a fault (a ROLLBACK that failed, say): the batch it was on (those
        of its requests not answered yet), every request queued and every later one fail
        ``StorageUnavailableError`` rather than waiting for good."""
        ended = StorageUnavailableError(f"writer of {Path(self._path).name}")
        ended.__cause__ = fault
        log.error("the SQLite writer of %s ended on %s", self._path, type(fault).__name__)
        with self._ending:
            self._ended = ended
        self._answer_queued(batch, ended)

    def _answer_queued(self, unanswered: list[_Request[Any]], ended: BaseException) -> None:
        """Fail ``unanswered`` and every request still queued with ``ended``, once ``_ended``
        is set (so none is queued after this looked)."""
        unanswered = list(unanswered)
        while True:
            try:
                queued = self._requests.get_nowait()
            except queue.Empty:
                break
            if isinstance(queued, _Request):
                unanswered.append(queued)
        for request in unanswered:
            call_soon_unless_closed(request.loop, _settle, request.future, False, ended)

    def _commit_batch(self, connection: sqlite3.Connection, batch: list[_Request[Any]]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for request in batch:
                connection.execute("SAVEPOINT request")
                try:
                    result = request.work(connection)
                except Exception as error:
                    connection.execute("ROLLBACK TO request")
                    connection.execute("RELEASE request")
                    outcomes.append((False, error))
                else:
                    connection.execute("RELEASE request")
                    outcomes.append((True, result))
            connection.execute("COMMIT")
        except Exception as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            outcomes = [(False, error)] * len(batch)
        else:
            if self.after_commit is not None:
                try:
                    self.after_commit(connection)
                except Exception as error:
                    # The batch is committed: its callers are told so. Only the notice to
                    # waiting readers is lost until the next commit.
                    log.error("after a commit to %s: %s", self._path, type(error).__name__)
        for request, (succeeded, value) in zip(batch, outcomes, strict=True):
            # A loop closed since it asked is not answered: its caller stopped waiting, so it
            # never learns the outcome, though what succeeded is committed all the same (as
            # when a caller is cancelled after its request was queued).
            call_soon_unless_closed(request.loop, _settle, request.future, succeeded, value)


def call_soon_unless_closed(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any
) -> bool:
    """Hand ``callback`` to ``loop`` from another thread; False if the loop is closed. A
    closed loop raises RuntimeError, which here would end the writer thread and leave every
    later request on the file unanswered; any other error is raised. Checking ``is_closed()``
    first would not do: the loop can close between the check and the call."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        if loop.is_closed():
            return False
        raise
    return True


def _settle(future: asyncio.Future[Any], succeeded: bool, value: Any) -> None:
    if future.done():  # cancelled by its caller
        return
    if succeeded:
        future.set_result(value)
    else:
        future.set_exception(value)
