"""The embedded default KEK: 32 random bytes in a file in the data directory (mode 0600).

Whoever reads this file and a copy of the key table can read every client's sensitive fields
that were not erased: production keeps the KEK in a KMS instead (``casetrail_platform.keys.kms``).
The file is created atomically (several services of one agency may start at once and must share
one), 0600 from its first byte, and its directory synced before a key it wraps can be stored (a
data key wrapped by a KEK file lost in a crash is unreadable for good). A KEK file others may
read or write is refused (``private_files.read_private``; group read is accepted, as Kubernetes
mounts a Secret with the pod's ``fsGroup``): every service loads it when it starts
(``KeyEncryptionKey.check``), so a wide one fails the start, not the first sealed event.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from casetrail_platform.keys.nonces import NONCE_BYTES, random_nonce
from casetrail_platform.keys.port import KeyEncryptionKey, KeyUnavailableError
from casetrail_platform.private_files import private_directory, read_private

KEK_FILE_NAME = "agency-key-encryption-key.bin"
"""Under ``<data dir>/keys/``: the agency's key-encryption key (keep it out of backups that
hold the key table, or the backup outlives every erasure)."""


class FileKeyEncryptionKey(KeyEncryptionKey):
    def __init__(self, path: Path, *, create: bool = True) -> None:
        """``create``: generate the file when it is missing (never for a previous KEK, which
        must unwrap what it wrapped: a missing one is an error)."""
        self._path = path
        self._create = create
        self._aead: AESGCM | None = None
        self._key_id = ""
        self._loading = threading.Lock()

    @property
    def key_id(self) -> str:
        self._load()
        return self._key_id

    def check(self) -> None:
        self._load()

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = random_nonce()
        return nonce + self._load().encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._load().decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag:
            # Worded for the error's "the ... is unavailable" around it.
            raise KeyUnavailableError(
                f"KEK that wrapped this data key (not {self._path})"
            ) from None

    def _load(self) -> AESGCM:
        if self._aead is not None:
            return self._aead
        # Keyrings seal and unwrap in worker threads (keys.off_loop): one reads or creates it.
        with self._loading:
            if self._aead is None:
                if not self._create and not self._path.exists():
                    raise KeyUnavailableError(f"key-encryption key file {self._path} (missing)")
                key = _read_or_create(self._path)
                self._key_id = "file:" + hashlib.sha256(key).hexdigest()[:16]
                self._aead = AESGCM(key)
            return self._aead


def _read_or_create(path: Path) -> bytes:
    if not path.exists():
        private_directory(path.parent, narrow=False)
        # Unique per attempt: another process, or another KEK object of this one, may race us.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(AESGCM.generate_key(bit_length=256))
            file.flush()
            os.fsync(file.fileno())
        # link() fails when another process created the file first: theirs is the one used.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
        temporary.unlink()
        _sync_directory(path.parent)
    key = read_private(path, "the agency's key-encryption key", group_readable=True)
    if len(key) != 32:
        raise KeyUnavailableError(f"key-encryption key file {path} (it does not hold 32 bytes)")
    return key


def _sync_directory(directory: Path) -> None:
    """Make the new file's name durable: keys wrapped by it are stored next, durably."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
