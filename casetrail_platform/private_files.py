"""Files that hold secrets or case data (tokens, exports, signing keys): owner-only, and whole
or not at all; and the small files of a data directory, read within a bound."""

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


def small_text(path: Path, limit: int) -> str:
    """The text of ``path``, a file that is small by nature: refused (``ValueError``) past
    ``limit`` bytes, having read no more than one byte beyond it."""
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit:,} bytes")
    return data.decode()


MAX_PASSWORD_BYTES = 1024
"""Far above any password; a larger file (a device, a wrong path) is not one."""


def read_password(path: Path, what: str) -> str:
    """The password ``path`` holds on one line (a final newline is not part of it), read as
    ``read_private`` reads a Secret (owner- or group-readable only: a Kubernetes Secret mounted
    with the pod's fsGroup is 0440). ``ValueError`` naming the file, never its content, when it
    is missing, readable by others, empty, of several lines or too large: a password file
    spares the password an environment variable (``/proc/<pid>/environ``, every child's)."""
    try:
        data = read_private(path, what, group_readable=True, limit=MAX_PASSWORD_BYTES)
    except OSError as error:
        raise ValueError(f"{path}: {what}: {error.strerror}") from None
    try:
        password = data.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: {what} is not UTF-8 text") from None
    if not password or "\n" in password:
        raise ValueError(f"{path}: {what} must be one line")
    return password


OWNER_ONLY_UMASK = 0o077
"""The serving process's umask: whatever it or SQLite creates (a store's ``-wal`` file, a
directory) is owner-only from its first moment, not made wider and narrowed after."""


def owner_only_umask() -> None:
    """Give this process ``OWNER_ONLY_UMASK`` (its entrypoints call it, never an import)."""
    os.umask(OWNER_ONLY_UMASK)


def private_directory(path: Path, *, narrow: bool = True) -> Path:
    """``path``, a directory of case data or keys: created 0700 (its missing parents too), or,
    when it exists with access for others and belongs to this user, narrowed to 0700 (a data
    directory an older casetrail made 0755: nothing in it was written for anyone else). One
    another user owns cannot be narrowed and is left as it is (a Kubernetes ``emptyDir`` or a
    mount point: the pod's alone); everything casetrail writes inside is owner-only.
    ``narrow=False``: only created, for the folder of a file an operator may have put anywhere
    (a KEK file in their home directory must not make it 0700)."""
    missing = [parent for parent in (path, *path.parents) if not parent.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another writer made it first
            os.mkdir(directory, 0o700)  # the umask can only narrow it
    status = path.stat()
    if narrow and status.st_mode & 0o077 and status.st_uid == os.geteuid():
        os.chmod(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """``path``, a file of case data or keys about to be opened (a SQLite database): created
    empty with mode 0600 when missing (SQLite gives its ``-wal`` and ``-shm`` files the
    database's mode), or narrowed to 0600 when it exists wider and belongs to this user.

    An existing file is never opened here: SQLite's locks are POSIX locks, which the kernel
    drops for the whole process when any descriptor of the file is closed, so opening and
    closing one beside a connection already open on it (a store's second connection, a CLI
    reading a running service's store) would release that connection's locks."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        status = os.stat(path, follow_symlinks=False)
        if status.st_mode & 0o077 and status.st_uid == os.geteuid():
            os.chmod(path, 0o600, follow_symlinks=False)
        return path
    os.close(descriptor)  # a file just made: no connection of this process holds locks on it
    return path
