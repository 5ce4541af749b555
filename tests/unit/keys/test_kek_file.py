"""The embedded KEK file: created owner-only from its first byte, its name made durable before
a key it wraps can be stored, and refused (the service does not start) when others may read it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.keys import file_kek
from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.hosting import file_kek as configured_file_kek
from services.planning.bootstrap import start


def test_a_new_kek_file_is_owner_only_even_under_an_open_umask(tmp_path: Path) -> None:
    path = tmp_path / "keys" / KEK_FILE_NAME
    previous = os.umask(0)
    try:
        FileKeyEncryptionKey(path).check()
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [KEK_FILE_NAME]  # no temporary left


def test_the_kek_files_directory_is_synced_before_a_key_is_wrapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(file_kek, "_sync_directory", synced.append)
    kek = FileKeyEncryptionKey(tmp_path / "keys" / KEK_FILE_NAME)
    kek.wrap(bytes(32), b"context")
    assert synced == [tmp_path / "keys"]


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o620, 0o606])
def test_a_kek_file_others_may_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / KEK_FILE_NAME
    FileKeyEncryptionKey(path).check()
    secret = path.read_bytes()
    path.chmod(mode)
    with pytest.raises(ValueError, match="chmod 600") as refused:
        FileKeyEncryptionKey(path).check()
    assert secret.hex() not in str(refused.value)
    # A previous KEK (a rotation's) likewise.
    with pytest.raises(ValueError, match="chmod 600"):
        configured_file_kek(tmp_path / "new.bin", [path]).check()


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o440, 0o640])
def test_an_owner_only_or_group_read_kek_file_is_used(tmp_path: Path, mode: int) -> None:
    # 0440: a Kubernetes Secret mounted 0400 in a pod with an fsGroup.
    path = tmp_path / KEK_FILE_NAME
    FileKeyEncryptionKey(path).check()
    path.chmod(mode)
    kek = FileKeyEncryptionKey(path)
    assert kek.unwrap(kek.wrap(bytes(32), b"c"), b"c") == bytes(32)


async def test_a_service_does_not_start_on_a_kek_file_others_may_read(tmp_path: Path) -> None:
    path = tmp_path / "keys" / KEK_FILE_NAME
    FileKeyEncryptionKey(path).check()
    path.chmod(0o644)
    with pytest.raises(ValueError, match="key-encryption key is readable by others"):
        await start(Infrastructure.embedded(tmp_path), "127.0.0.1:0")
