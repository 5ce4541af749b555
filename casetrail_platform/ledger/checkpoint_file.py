"""The embedded backend's record of published checkpoints: a file beside the signing key.

The in-process bus keeps nothing across a restart (its topics are lists in memory, and the
embedded default publishes no checkpoints on it), so the newest checkpoint signed is written
to ``<data dir>/<service>/ledger.checkpoint``, outside the ledger's database: rows deleted
from ``ledger.db`` and ``events.db``, or an older copy of them restored, leave it as it was.
Whoever may rewrite this file may also read the key beside it and sign anything: it guards
against the database being rolled back, not against the key's holder.

The file is a high-water mark, as the topic is (its newest is the largest note): a note smaller
than the one it holds of the same log under the same key (a replica's or a late retry's) is
not written over it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from casetrail_platform.ledger.note import (
    Checkpoint,
    NoteError,
    Verifier,
    claimed_checkpoint,
    newest_verified,
)
from casetrail_platform.ledger.port import CheckpointRecord, StoredCheckpoint
from casetrail_platform.private_files import private_replacement

log = logging.getLogger(__name__)


class FileCheckpointRecord(CheckpointRecord):
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = asyncio.Lock()  # a read, a comparison and a write: one publish at a time

    async def publish(self, checkpoint: StoredCheckpoint) -> None:
        async with self._lock:
            await asyncio.to_thread(self._write, checkpoint.note)

    def _write(self, note: str) -> None:
        if _covers(self._held(), note):
            log.info("%s already holds a checkpoint at least as large; kept", self._path)
            return
        # Whole or not at all: a crash mid-write must not leave a note that no longer verifies.
        with private_replacement(self._path) as file:
            file.write(note.encode())

    def _held(self) -> str | None:
        try:
            return self._path.read_text("utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    async def newest(self, verifier: Verifier) -> Checkpoint | None:
        try:
            text = await asyncio.to_thread(self._path.read_text, "utf-8")
        except FileNotFoundError:
            return None
        newest = newest_verified([text], verifier)
        if newest is None:
            log.warning(
                "%s: %s holds no checkpoint signed by the log's key; ignored",
                verifier.name,
                self._path,
            )
        return newest

    async def stop(self) -> None:
        return None  # every write and read opens and closes the file


def _covers(held: str | None, note: str) -> bool:
    """Whether ``held`` is a checkpoint of ``note``'s log claiming ``note``'s key, of at least
    its size. Claims, not signatures, are compared (no verifier here): a note under another key
    (an earlier deployment's, which ``newest`` ignores) or unreadable does not hold the file."""
    if held is None:
        return False
    try:
        mark, mark_keys = claimed_checkpoint(held)
        new, new_keys = claimed_checkpoint(note)
    except NoteError:
        return False
    return mark.origin == new.origin and bool(mark_keys & new_keys) and mark.size >= new.size
