"""Intake's client directory on both read-model backends: duplicate lookups are reads by key
(never a scan of the clients), and the match-key documents name no personal value in the clear
and forget an erased client."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.clients import (
    ClientDateOfBirthCorrected,
    ClientRegistered,
    PersonalIdentifier,
    PersonName,
)
from events.catalog.erasure import ClientErased
from events.catalog_registry import default_registry
from events.envelope import Actor, EventMetadata, NewEvent
from services.intake.adapters.client_directory import CLIENTS, MATCH_KEYS, ClientDirectory
from services.intake.domain.clients import client_stream
from services.intake.domain.matching import Probe

MARCO = PersonName(given_names="Marco", family_name="Bellini")
BIRTH = date(1941, 6, 2)
NATIONAL = PersonalIdentifier(scheme="national_id", value="BLLMRC41H02F205X")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "events.db", default_registry())
    yield opened
    await opened.close()


def keyring(tmp_path: Path, name: str = "keys") -> ClientKeyring:
    kek = FileKeyEncryptionKey(tmp_path / name / KEK_FILE_NAME)
    return ClientKeyring(kek, SqliteDataKeyTable(tmp_path / name / "keys.db"))


async def told(store: SqliteEventStore, client_id: str, *events: Any) -> None:
    stream = client_stream(client_id)
    version = len(await store.read_stream(stream))
    metadata = EventMetadata(
        source="casetrail/intake",
        actor=Actor("intake-1", Role.INTAKE_WORKER),
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
    )
    await store.append(stream, [NewEvent(event, metadata) for event in events], version)


def no_scans(read_models: ReadModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the directory scanned a collection")

    monkeypatch.setattr(read_models, "find", refused)
    monkeypatch.setattr(read_models, "scan", refused)


async def keys_listing(read_models: ReadModelStore) -> dict[str, list[str]]:
    return {key: doc["client_ids"] async for key, doc in read_models.scan(MATCH_KEYS)}


async def test_lookups_read_by_key_and_keys_hide_and_forget_personal_values(
    store: SqliteEventStore,
    read_models: ReadModelStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = ClientDirectory(store, read_models, keyring=keyring(tmp_path))
    await told(store, "c1", ClientRegistered(client_id="c1", name=MARCO, date_of_birth=BIRTH))
    await told(
        store,
        "c2",
        ClientRegistered(
            client_id="c2", name=PersonName(given_names="Mark"), identifiers=(NATIONAL,)
        ),
    )
    await told(store, "c3", ClientRegistered(client_id="c3", name=MARCO, date_of_birth=None))
    await directory.refresh()

    listing = await keys_listing(read_models)
    assert sorted(listing.values()) == [["c1"], ["c2"]]
    stored = json.dumps(listing)
    for clear in ("1941", "BLLMRC41H02F205X", "bellini", "national_id"):
        assert clear not in stored.lower()

    with monkeypatch.context() as patch:
        no_scans(read_models, patch)
        found = await directory.candidates(Probe(MARCO, BIRTH, (NATIONAL,)))
    assert [(c.client_id, c.same_name_and_date_of_birth) for c in found] == [
        ("c1", True),
        ("c2", False),
    ]
    assert found[1].shared_identifiers == (NATIONAL,)

    # Another process with the same keys (a restarted replica, the CLI's rebuild) hashes alike.
    restarted = ClientDirectory(store, read_models, keyring=keyring(tmp_path))
    assert await restarted.candidates(Probe(MARCO, BIRTH, (NATIONAL,))) == found

    # Another agency's key hashes the same values to other keys.
    other = ClientDirectory(store, read_models, keyring=keyring(tmp_path, "other-keys"))
    assert await other.candidates(Probe(MARCO, BIRTH, (NATIONAL,))) == []

    # The corrected date of birth is the one matched on; the wrong one names no one.
    corrected = date(1914, 6, 2)
    await told(
        store, "c1", ClientDateOfBirthCorrected(client_id="c1", date_of_birth=corrected, reason="x")
    )
    await directory.refresh()
    assert await directory.candidates(Probe(MARCO, BIRTH, ())) == []
    [again] = await directory.candidates(Probe(MARCO, corrected, ()))
    assert again.client_id == "c1"
    assert len(await keys_listing(read_models)) == 2

    # An erased client is no one's duplicate, and no key document is left naming them.
    await told(store, "c1", ClientErased(client_id="c1", case_ids=(), request_reference="dsr-1"))
    await told(store, "c2", ClientErased(client_id="c2", case_ids=(), request_reference="dsr-2"))
    await directory.refresh()
    assert await keys_listing(read_models) == {}
    assert [key async for key, _ in read_models.scan(CLIENTS)] == ["c3"]
    assert await directory.candidates(Probe(MARCO, corrected, (NATIONAL,))) == []
