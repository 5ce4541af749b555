"""Hash ranges of a store's events in worker processes: ``verify_store`` on every core.

A worker is ``python -m casetrail_platform.ledger.store_ranges``, started afresh (never forked
from a process with threads and an event loop), importing this module, ``sqlite3`` or
``psycopg`` and little more: multiprocessing's pools import the caller's main module in every
worker as well, which cost a benchmark 0.5 s a worker before it hashed anything. On its
standard input it takes a ``RangeReader`` (pickled: how it opens the store on a connection of
its own), then ranges of leaf indexes [start, stop) (positions start + 1 .. stop), 16 bytes
each; for each it writes back the first missing position (-1: none), the lengths of the hashes
and of the levels, the leaf hashes, 32 bytes each, and the range's complete subtrees level by
level (``merkle.packed_levels``: ranges start aligned, so these are the tree's own), which
spares the parent, a third process on two cores, one node hash a leaf. It never compares them
with anything: the parent does, against the ledger it reads itself, so nothing but the events
is taken from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pickle
import struct
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from casetrail_platform.ledger.merkle import HASH_SIZE, packed_levels

RangeHashes = tuple[bytes, int | None]
"""(the leaf hashes of the range's events before any hole, concatenated; the first position of
the range missing from the store, or ``None`` when every one is there)."""
RangeHasher = Callable[[int, int], RangeHashes]
RangeAnswer = tuple[bytes, int | None, list[bytes]]
"""``RangeHashes`` and the range's complete subtrees from level 1 up (``merkle.packed_levels``)."""


class RangeReader(ABC):
    """How a worker process reads the store (its own connection), picklable."""

    @abstractmethod
    def open(self) -> tuple[RangeHasher, Callable[[], None]]:
        """Open the store in this process: the hasher of leaf indexes [start, stop), and what
        closes the connection."""


@dataclass(frozen=True)
class StoreRanges:
    """What ``LedgerStore.store_ranges`` gives while it is open."""

    reader: RangeReader
    last_position: int
    """The store's newest position, as every worker sees the store (PostgreSQL: one exported
    snapshot; SQLite: appends only add later positions, which no range reaches)."""


def dense_hashes(
    positions_and_hashes: Sequence[tuple[int, bytes]], start: int, stop: int
) -> RangeHashes:
    """``RangeHashes`` of (position, leaf hash) pairs in position order for [start, stop)."""
    pairs = positions_and_hashes
    # Positions are unique and sorted: the right count from the right first to the right last
    # is every one (one join, no loop over the pairs in Python).
    if len(pairs) == stop - start and (
        not pairs or (pairs[0][0], pairs[-1][0]) == (start + 1, stop)
    ):
        return b"".join([leaf for _, leaf in pairs]), None
    hashes: list[bytes] = []
    expected = start + 1
    for position, leaf in pairs:
        if position != expected:
            return b"".join(hashes), expected
        hashes.append(leaf)
        expected += 1
    return b"".join(hashes), (expected if expected <= stop else None)


PIPE_BYTES = 1 << 20
"""A worker's answer pipe (Linux's default pipe-max-size)."""
STOP_SECONDS = 5
"""How long a worker with nothing left to answer is given to end on its own."""
_REQUEST = struct.Struct("<qq")
"""(start, stop) of a range."""
_ANSWER = struct.Struct("<qqq")
"""(first missing position or -1, length of the hashes, length of the levels)."""


class RangeWorker:
    """One worker process, asked for ranges and answering them in the order asked."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        assert process.stdin is not None
        assert process.stdout is not None
        self._requests = process.stdin
        self._answers = process.stdout
        self._unanswered = 0

    @classmethod
    async def start(cls, reader: RangeReader) -> RangeWorker:
        # The worker finds this package where this process found it.
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, sys.path)))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=environment,
        )
        worker = cls(process)
        described = pickle.dumps(reader)
        worker._requests.write(len(described).to_bytes(8, "little") + described)
        return worker

    async def ask(self, start: int, stop: int) -> None:
        self._requests.write(_REQUEST.pack(start, stop))
        self._unanswered += 1
        await self._requests.drain()

    async def answer(self) -> RangeAnswer:
        """The answer to the oldest range not answered yet. Raises ``WorkerEnded`` if the
        worker ended first (killed, out of memory, or failing to read the store)."""
        try:
            header = await self._answers.readexactly(_ANSWER.size)
            missing, length, levels_length = _ANSWER.unpack(header)
            hashes = await self._answers.readexactly(length)
            packed = await self._answers.readexactly(levels_length)
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            status = await self._process.wait()
            raise WorkerEnded(f"exit status {status}") from error
        self._unanswered -= 1
        levels: list[bytes] = []
        at, size = 0, length
        while at < len(packed):
            size = size // (2 * HASH_SIZE) * HASH_SIZE
            levels.append(packed[at : at + size])
            at += size
        return hashes, (None if missing < 0 else missing), levels

    async def stop(self) -> None:
        """Ends the worker: at the end of its input once it has answered every range (it
        closes its connection), else at once (a range under way is of no more use, and the
        worker may be blocked writing it)."""
        if self._process.returncode is None and self._unanswered == 0:
            self._requests.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), STOP_SECONDS)
        if self._process.returncode is None:
            self._process.kill()
        await self._process.wait()


class WorkerEnded(RuntimeError):
    """A worker process ended before it answered."""


def _serve() -> None:
    """The worker: the reader, then ranges until its input ends."""
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    # An answer (a range's leaves and subtrees: 512 KiB) fits in the pipe whole, so a worker
    # goes on to its next range while the parent takes another worker's answer first (in a
    # 64 KiB pipe it waited for the parent to read this one).
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):  # above the system's pipe-max-size
            fcntl.fcntl(answers.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    length = int.from_bytes(requests.read(8), "little")
    reader: RangeReader = pickle.loads(requests.read(length))
    hash_range, close = reader.open()
    try:
        while len(request := requests.read(_REQUEST.size)) == _REQUEST.size:
            start, stop = _REQUEST.unpack(request)
            hashes, missing = hash_range(start, stop)
            levels = b"".join(packed_levels(hashes, start))
            answers.write(
                _ANSWER.pack(-1 if missing is None else missing, len(hashes), len(levels))
            )
            answers.write(hashes)
            answers.write(levels)
            answers.flush()
    finally:
        close()


if __name__ == "__main__":
    _serve()
