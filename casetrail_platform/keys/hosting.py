"""Where a service finds the agency's keys: the KEK and the data-key table of its backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from casetrail_platform.keys.fields import FieldProtection
from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.port import DataKeyTable, KeyEncryptionKey
from events.registry import EventRegistry

KEK_FILE_VARIABLE = "CASETRAIL_KEY_ENCRYPTION_KEY_FILE"
"""Path of the agency KEK file when it is not ``<data dir>/keys/`` (a mounted secret: every
process of the agency must use the same one)."""
PREVIOUS_KEK_FILES_VARIABLE = "CASETRAIL_PREVIOUS_KEY_ENCRYPTION_KEY_FILES"
"""Paths (``os.pathsep``-separated) of the KEK files of before a rotation, kept to unwrap the
keys they wrapped until ``casetrail keys rotate-kek`` reports done (README "Erasure and keys")."""


def keys_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def default_kek(data_dir: Path, *, create: bool = True) -> KeyEncryptionKey:
    """The KEK files the environment configures; the current one created when missing only if
    ``create``: a service's start. A tool never creates one (``create=False``): a KEK of its
    own wraps none of the keys stored, so it reads nothing sealed and seals what no service
    can read."""
    return file_kek(*configured_kek_files(data_dir), create=create)


def configured_kek_files(data_dir: Path) -> tuple[Path, list[Path]]:
    """The current KEK file and the previous ones, as the environment configures them."""
    configured = os.environ.get(KEK_FILE_VARIABLE)
    current = Path(configured) if configured else keys_dir(data_dir) / KEK_FILE_NAME
    previous = os.environ.get(PREVIOUS_KEK_FILES_VARIABLE, "")
    return current, [Path(path) for path in previous.split(os.pathsep) if path]


def file_kek(
    current: Path, previous: Sequence[Path] = (), *, create: bool = True
) -> KeyEncryptionKey:
    """The KEK in ``current`` (created when missing, if ``create``), and the ``previous`` ones
    for unwrapping."""
    kek = FileKeyEncryptionKey(current, create=create)
    if not previous:
        return kek
    from casetrail_platform.keys.rotation import KeyEncryptionKeyRing

    return KeyEncryptionKeyRing(
        kek, [FileKeyEncryptionKey(path, create=False) for path in previous]
    )


def data_key_table(data_dir: Path, postgres_dsn: str | None) -> DataKeyTable:
    if postgres_dsn is not None:
        from casetrail_platform.keys.postgres import PostgresDataKeyTable

        return PostgresDataKeyTable(postgres_dsn)
    from casetrail_platform.keys.sqlite import KEYS_FILE_NAME, SqliteDataKeyTable

    return SqliteDataKeyTable(keys_dir(data_dir) / KEYS_FILE_NAME)


def protected_registry(
    registry: EventRegistry,
    data_dir: Path,
    postgres_dsn: str | None,
    kek: KeyEncryptionKey | None = None,
) -> EventRegistry:
    """``registry`` sealing and opening sensitive fields with the agency's keys (nothing is
    opened or read until the first event is sealed or opened)."""
    keyring = ClientKeyring(kek or default_kek(data_dir), data_key_table(data_dir, postgres_dsn))
    return registry.protected(FieldProtection(keyring))
