"""The store tools (`casetrail rebuild`, `tail`) read sealed values with the KEK the services use
and never create one: without it, or with another, they stop naming the KEK file and where it
is configured (exit 2) before anything is read or deleted. A rebuild run where the KEK was not
at the data dir's default path created a new agency KEK there, threw the projection away and
then failed to unwrap the first key, "retry later" (exit 1), leaving the directory empty."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.identity.development import DevelopmentIssuer, DevelopmentSigner
from casetrail_platform.infrastructure import Infrastructure, open_event_store, open_read_models
from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.hosting import KEK_FILE_VARIABLE, keys_dir
from casetrail_platform.keys.port import KeyUnavailableError
from casetrail_platform.store.port import ANY_VERSION
from events.catalog.base import Role
from events.envelope import Actor, EventMetadata, NewEvent
from services.intake.adapters.client_directory import CLIENTS, ClientDirectoryProjection
from tests.support.cli import casetrail_exit
from tests.support.exported import registered

CLIENT_IDS = ("client-1", "client-2")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Intake's store as its service left it (its clients' names sealed, the KEK it created at
    the default path) and its client directory built, the development issuer started once."""
    monkeypatch.delenv(KEK_FILE_VARIABLE, raising=False)
    DevelopmentIssuer(tmp_path, port=0).stop()
    asyncio.run(_register(tmp_path))
    assert casetrail_exit("rebuild", "intake", "client-directory", "--data-dir", str(tmp_path)) == 0
    assert asyncio.run(_directory(tmp_path)) == (2, list(CLIENT_IDS))
    return tmp_path


async def _register(data_dir: Path) -> None:
    store, _checkpoints, close = await open_event_store(Infrastructure(data_dir), "intake")
    try:
        for client_id in CLIENT_IDS:
            metadata = EventMetadata(
                source="casetrail/intake",
                actor=Actor("desk-dana", Role.RECEPTIONIST),
                occurred_at=datetime.now(UTC),
                correlation_id=uuid4(),
            )
            new = NewEvent(event=registered(client_id), metadata=metadata, event_id=uuid4())
            await store.append(f"client-{client_id}", [new], ANY_VERSION)
    finally:
        await close()


async def _directory(data_dir: Path) -> tuple[int, list[str]]:
    """The client directory's position and its clients, as the tools left them."""
    read_models = await open_read_models(Infrastructure(data_dir), "intake")
    try:
        position = await read_models.applied_position(ClientDirectoryProjection.name)
        return position, sorted([key async for key, _ in read_models.scan(CLIENTS)])
    finally:
        await read_models.close()


def _kek(data_dir: Path) -> Path:
    return keys_dir(data_dir) / KEK_FILE_NAME


def _moved_away(data_dir: Path) -> Path:
    """The services' KEK, mounted elsewhere (``CASETRAIL_KEY_ENCRYPTION_KEY_FILE``)."""
    secret = data_dir / "secret"
    secret.mkdir(mode=0o700)
    shutil.move(_kek(data_dir), secret / "kek.bin")
    return secret / "kek.bin"


def test_a_rebuild_without_the_services_kek_deletes_nothing_and_names_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    services_kek = _moved_away(data_dir)
    capsys.readouterr()

    for projection in ("client-directory", "emergency-accesses"):
        status = casetrail_exit("rebuild", "intake", projection, "--data-dir", str(data_dir))
        err = capsys.readouterr().err
        assert status == 2, err
        assert f"the KEK {_kek(data_dir)}: no such KEK file" in err
        assert f"set {KEK_FILE_VARIABLE}" in err
        assert "retry" not in err
        assert not _kek(data_dir).exists()  # only a service creates the agency's KEK
        assert asyncio.run(_directory(data_dir)) == (2, list(CLIENT_IDS))

    monkeypatch.setenv(KEK_FILE_VARIABLE, str(data_dir / "elsewhere.bin"))
    assert casetrail_exit("rebuild", "intake", "client-directory", "--data-dir", str(data_dir)) == 2
    assert f"{KEK_FILE_VARIABLE} {data_dir / 'elsewhere.bin'}: no such KEK file" in (
        capsys.readouterr().err
    )
    assert not (data_dir / "elsewhere.bin").exists()

    monkeypatch.setenv(KEK_FILE_VARIABLE, str(services_kek))
    assert casetrail_exit("rebuild", "intake", "client-directory", "--data-dir", str(data_dir)) == 0
    assert asyncio.run(_directory(data_dir)) == (2, list(CLIENT_IDS))
    assert not _kek(data_dir).exists()


def test_a_rebuild_with_another_kek_deletes_nothing_and_names_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    services_kek = _moved_away(data_dir)
    assert casetrail_exit("keys", "new-kek", str(_kek(data_dir))) == 0  # no KEK of theirs
    capsys.readouterr()

    for projection in ("client-directory", "emergency-accesses"):
        status = casetrail_exit("rebuild", "intake", projection, "--data-dir", str(data_dir))
        err = capsys.readouterr().err
        assert status == 2, err
        wrapping = FileKeyEncryptionKey(services_kek, create=False).key_id
        assert f"the KEK {_kek(data_dir)} is not the services' KEK" in err
        assert f"live data keys are wrapped by {wrapping}" in err
        assert asyncio.run(_directory(data_dir)) == (2, list(CLIENT_IDS))


def test_a_tail_without_the_services_kek_creates_none_and_names_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASETRAIL_TOKEN", DevelopmentSigner.load(data_dir).mint("kim", "auditor"))
    _moved_away(data_dir)
    capsys.readouterr()
    tail = ("tail", "--service", "intake", "--from-start", "--data-dir", str(data_dir))
    assert casetrail_exit(*tail) == 2
    assert f"the KEK {_kek(data_dir)}: no such KEK file" in capsys.readouterr().err
    assert not _kek(data_dir).exists()


def test_a_data_key_another_kek_wrapped_is_named_in_plain_words(tmp_path: Path) -> None:
    """It read "the a data key wrapped by another KEK than ... is unavailable"."""
    wrapped = FileKeyEncryptionKey(tmp_path / "one.bin").wrap(bytes(32), b"client-1")
    with pytest.raises(KeyUnavailableError) as refused:
        FileKeyEncryptionKey(tmp_path / "two.bin").unwrap(wrapped, b"client-1")
    assert str(refused.value) == (
        f"the KEK that wrapped this data key (not {tmp_path / 'two.bin'}) is unavailable;"
        " retry later"
    )
