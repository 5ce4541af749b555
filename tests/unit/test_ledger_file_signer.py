"""A signing key that is given (on Kubernetes: a read-only Secret mount, in a directory the
container's user may not write) is only read; only a key FileSigner generates is published
beside it, as ``ledger.pub``."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from casetrail_platform.ledger.keys import FileSigner, published_key
from casetrail_platform.ledger.note import Verifier, origin_of

ORIGIN = origin_of("test-agency", "intake")


@pytest.fixture
def read_only_key_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory holding only ``ledger.key``, then made read-only (as a Secret mount is)."""
    FileSigner(ORIGIN, tmp_path / "made" / "ledger.key")
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    shutil.copy(tmp_path / "made" / "ledger.key", mounted / "ledger.key")
    (mounted / "ledger.key").chmod(0o400)
    mounted.chmod(0o555)
    try:
        yield mounted
    finally:
        mounted.chmod(0o755)


async def test_a_given_key_in_a_read_only_directory_signs_and_writes_nothing(
    read_only_key_dir: Path,
) -> None:
    key = read_only_key_dir / "ledger.key"
    signer = FileSigner(ORIGIN, key)
    assert await signer.verifier() == published_key(ORIGIN, key)
    assert await asyncio.to_thread(os.listdir, read_only_key_dir) == ["ledger.key"]


async def test_a_generated_key_is_published_beside_it(tmp_path: Path) -> None:
    key = tmp_path / "intake" / "ledger.key"
    signer = FileSigner(ORIGIN, key)
    published = Verifier.parse(key.with_suffix(".pub").read_text())
    assert published == await signer.verifier()
    assert (key.stat().st_mode & 0o777) == 0o600
