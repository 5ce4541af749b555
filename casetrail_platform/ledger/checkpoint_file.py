"""The embedded backend's record of published checkpoints: a file beside the signing key.

The in-process bus keeps nothing across a restart (its topics are lists in memory, and the
embedded default publishes no checkpoints on it), so the newest checkpoint signed is written
to ``<data dir>/<service>/ledger.checkpoint``, outside the ledger's database: rows deleted
from ``ledger.db`` and ``events.db``, or an older copy of them restored, leave it as it was.
Whoever may rewrite this file may also read the key beside it and sign anything: it guards
against the database being rolled back, not against the key's holder.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from casetrail_platform.ledger.note import Checkpoint, Verifier, newest_verified
from casetrail_platform.ledger.port import CheckpointRecord, StoredCheckpoint
from casetrail_platform.private_files import private_replacement

log = logging.getLogger(__name__)


class FileCheckpointRecord(CheckpointRecord):
    def __init__(self, path: Path) -> None:
        self._path = path

    async def publish(self, checkpoint: StoredCheckpoint) -> None:
        await asyncio.to_thread(self._write, checkpoint.note)

    def _write(self, note: str) -> None:
        # Whole or not at all: a crash mid-write must not leave a note that no longer verifies.
        with private_replacement(self._path) as file:
            file.write(note.encode())

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
