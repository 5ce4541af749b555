"""Files that hold secrets or case data (tokens, exports, signing keys): owner-only, and whole
or not at all."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

STALE_AFTER = 60.0
"""Seconds after which an unlocked temporary file is a dead writer's: younger ones may be a
writer's between creating its file and locking it."""


@contextlib.contextmanager
def private_replacement(path: Path) -> Iterator[BinaryIO]:
    """A file to write ``path``'s new content into: created 0600 beside ``path`` and renamed
    onto it only when the block completes, so an error (a refusal, a stream cut short) leaves
    ``path`` as it was and no partial file behind. The renamed file keeps mode 0600 whatever
    mode an older ``path`` had (a token or an export must not stay world-readable).

    A process killed mid-write runs no clean-up: its temporary file (a part of a key, a token,
    an export) would stay beside ``path`` for good. So the writer holds a lock on its file
    while it writes, and each write first removes the temporary files of ``path`` that no
    one holds (their writer is gone: the lock went with it)."""
    _remove_abandoned(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
            # Renamed while still locked (closing unlocks): no one takes it for abandoned.
            os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _remove_abandoned(path: Path) -> None:
    """Remove ``path``'s temporary files left by writers that died mid-write."""
    now = time.time()
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):  # gone already, or not ours to remove: skipped
            descriptor = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                if now - os.fstat(descriptor).st_mtime < STALE_AFTER:
                    continue
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: raises
                os.unlink(candidate)
            finally:
                os.close(descriptor)


def read_private(
    path: Path, what: str, *, group_readable: bool = False, limit: int | None = None
) -> bytes:
    """The bytes of ``path``, a secret, refused (``ValueError``) when others may read or write
    it, as ssh refuses a private key others can read: whoever reads it holds what it guards.
    ``group_readable``: read by the file's group too is accepted (a Kubernetes Secret mounted
    with the pod's ``fsGroup`` is made 0440 by the kubelet). The mode is that of the file
    opened, so a file swapped in after the check is not read. ``limit``: refused
    (``ValueError``) past that many bytes, read no further than one beyond."""
    with path.open("rb") as file:
        mode = os.fstat(file.fileno()).st_mode & 0o777
        wider = mode & (0o037 if group_readable else 0o077)
        if wider:
            raise ValueError(
                f"{path}: {what} is readable by others, or writable (mode {mode:04o});"
                f" make it owner-only: chmod 600 {path}"
            )
        if limit is None:
            return file.read()
        data = file.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"{path}: {what} is larger than {limit:,} bytes")
        return data
