"""What the services write under the data directory is owner-only (review of keys, h-tls): the
event stores, read models, ledger, keys/ and keys.db were made with the process's umask
(0755/0644 by default), so any local user could read case data and the clients' wrapped data
keys; and the ledger's signing key was loaded whatever its mode. Now every directory is 0700
and every file 0600 from the moment it exists (even under an open umask), older ones that belong
to the service's user are narrowed, and a signing key others can read is refused."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.private_files import private_directory, private_file
from services.runner import SERVICES, start_services, stop_services
from tests.support.identity import TestIssuer


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _wider_than_owner(top: Path) -> list[str]:
    found = []
    for directory, folders, files in os.walk(top):
        for name in [*folders, *files]:
            path = Path(directory, name)
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                found.append(f"{path.relative_to(top)} {mode:04o}")
    return found


async def _run_every_service(data: Path, issuer: TestIssuer) -> None:
    infra = Infrastructure.embedded(data, verifier=issuer.verifier())
    running = await start_services(infra, SERVICES, "127.0.0.1", dict.fromkeys(SERVICES, 0))
    await stop_services(running)


@pytest.mark.usefixtures("open_umask")
async def test_everything_the_services_create_is_owner_only(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    data = tmp_path / "data"
    await _run_every_service(data, issuer)
    assert {path.name for path in data.iterdir()} >= {*SERVICES, "keys"}
    assert (data / "keys" / "keys.db").exists()
    assert (data / "intake" / "events.db").exists()
    assert _wider_than_owner(tmp_path) == []


async def test_what_an_older_casetrail_left_open_is_narrowed(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    data = tmp_path / "data"
    for folder in ("intake", "keys"):
        (data / folder).mkdir(parents=True)
        (data / folder).chmod(0o755)
    (data / "intake" / "events.db").touch(0o644)
    (data / "intake" / "events.db").chmod(0o644)
    await _run_every_service(data, issuer)
    assert stat.S_IMODE((data / "intake").stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "intake" / "events.db").stat().st_mode) == 0o600


def test_a_data_directory_others_can_read_is_narrowed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(0o755)
    data.chmod(0o755)
    private_directory(data)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    folder = tmp_path / "home"  # the folder of a file an operator named: only created
    folder.mkdir()
    folder.chmod(0o755)
    private_directory(folder, narrow=False)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_a_ledger_signing_key_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "ledger.key"
    FileSigner("casetrail/agency/intake", key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    key.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        FileSigner("casetrail/agency/intake", key)
    key.chmod(0o640)  # a Kubernetes Secret mounted with the pod's fsGroup
    FileSigner("casetrail/agency/intake", key)


def test_an_existing_database_file_is_narrowed_without_being_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's POSIX locks are dropped for the whole process when any descriptor of the file
    is closed: opening the file to check its mode beside a connection already on it (a tail
    appending to a running service's store) released that connection's locks, and the tail's
    access record never reached audit."""
    database = tmp_path / "events.db"
    database.write_bytes(b"")
    database.chmod(0o644)

    real_open = os.open

    def no_open(path: Path, flags: int, mode: int = 0o777) -> int:
        # Creating it exclusively fails on an existing file without opening it.
        if not flags & os.O_EXCL:
            raise AssertionError("an existing database file was opened")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_open)
    private_file(database)
    assert database.stat().st_mode & 0o777 == 0o600
