"""Intake's client directory on both read-model backends: duplicate lookups are reads by key
(never a scan of the clients), and the match-key documents name no personal value in the clear
and forget an erased client."""

from __future__ import annotations

import json
import threading
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
from services.intake.adapters import client_directory
from services.intake.adapters.client_directory import (
    CANDIDATES_PER_KEY,
    CLIENTS,
    MATCH_KEYS,
    ClientDirectory,
)
from services.intake.domain.clients import client_stream
from services.intake.domain.matching import Probe
from tests.unit.keys.support import FakeKms, ThreadNotingTable

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
    return {
        key: [client_id for _, client_id in doc["clients"]]
        async for key, doc in read_models.scan(MATCH_KEYS)
    }


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
        found = (await directory.candidates(Probe(MARCO, BIRTH, (NATIONAL,)))).candidates
    assert [(c.client_id, c.same_name_and_date_of_birth) for c in found] == [
        ("c1", True),
        ("c2", False),
    ]
    assert found[1].shared_identifiers == (NATIONAL,)

    # Another process with the same keys (a restarted replica, the CLI's rebuild) hashes alike.
    restarted = ClientDirectory(store, read_models, keyring=keyring(tmp_path))
    assert (await restarted.candidates(Probe(MARCO, BIRTH, (NATIONAL,)))).candidates == found

    # Another agency's key hashes the same values to other keys.
    other = ClientDirectory(store, read_models, keyring=keyring(tmp_path, "other-keys"))
    assert (await other.candidates(Probe(MARCO, BIRTH, (NATIONAL,)))).candidates == ()

    # The corrected date of birth is the one matched on; the wrong one names no one.
    corrected = date(1914, 6, 2)
    await told(
        store, "c1", ClientDateOfBirthCorrected(client_id="c1", date_of_birth=corrected, reason="x")
    )
    await directory.refresh()
    assert (await directory.candidates(Probe(MARCO, BIRTH, ()))).candidates == ()
    [again] = (await directory.candidates(Probe(MARCO, corrected, ()))).candidates
    assert again.client_id == "c1"
    assert len(await keys_listing(read_models)) == 2

    # An erased client is no one's duplicate, and no key document is left naming them.
    await told(store, "c1", ClientErased(client_id="c1", case_ids=(), request_reference="dsr-1"))
    await told(store, "c2", ClientErased(client_id="c2", case_ids=(), request_reference="dsr-2"))
    await directory.refresh()
    assert await keys_listing(read_models) == {}
    assert [key async for key, _ in read_models.scan(CLIENTS)] == ["c3"]
    assert (await directory.candidates(Probe(MARCO, corrected, (NATIONAL,)))).candidates == ()


async def test_one_match_key_answers_its_most_recent_clients_and_says_it_truncated(
    store: SqliteEventStore, read_models: ReadModelStore, tmp_path: Path
) -> None:
    # An identifier typed as a placeholder by many registrations: every lookup sharing it
    # would read and answer all of them.
    placeholder = PersonalIdentifier(scheme="national_id", value="000000000")
    many = CANDIDATES_PER_KEY + 3
    for number in range(many):
        name = PersonName(given_names=f"Person {number}")
        registered = ClientRegistered(
            client_id=f"c{number:03d}", name=name, identifiers=(placeholder,)
        )
        await told(store, f"c{number:03d}", registered)
    directory = ClientDirectory(store, read_models, keyring=keyring(tmp_path))
    await directory.refresh()

    found = await directory.candidates(Probe(MARCO, BIRTH, (placeholder,)))
    assert found.truncated
    assert [c.client_id for c in found.candidates] == [f"c{n:03d}" for n in range(3, many)]

    # A retried registration sees the clients before it, bounded alike.
    last = await store.read_stream(client_stream(f"c{many - 1:03d}"))
    retried = await directory.candidates(
        Probe(MARCO, BIRTH, (placeholder,)),
        excluding=f"c{many - 1:03d}",
        registered_before=last[0].position,
    )
    assert retried.truncated
    assert [c.client_id for c in retried.candidates] == [f"c{n:03d}" for n in range(2, many - 1)]

    # Under the bound, nothing is said truncated; an erasure brings an older one back.
    for number in range(3):
        erased = ClientErased(client_id=f"c{number:03d}", case_ids=(), request_reference="x")
        await told(store, f"c{number:03d}", erased)
    await directory.refresh()
    assert (await directory.candidates(Probe(MARCO, BIRTH, (placeholder,)))).truncated is False
    await told(
        store,
        f"c{many - 1:03d}",
        ClientErased(client_id=f"c{many - 1:03d}", case_ids=(), request_reference="y"),
    )
    await directory.refresh()
    left = await directory.candidates(Probe(MARCO, BIRTH, (placeholder,)))
    assert [c.client_id for c in left.candidates] == [f"c{n:03d}" for n in range(3, many - 1)]
    assert not left.truncated


async def test_a_lookups_keys_together_answer_their_most_recent_clients_and_say_so(
    store: SqliteEventStore,
    read_models: ReadModelStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each key within CANDIDATES_PER_KEY, a probe of many identifiers still named them all
    (up to 100 keys x 50): an answer of thousands of candidates, past gRPC's 4 MiB. The
    lookup answers the CANDIDATES_PER_LOOKUP registered last, and says it truncated."""
    monkeypatch.setattr(client_directory, "CANDIDATES_PER_LOOKUP", 4)
    identifiers = [PersonalIdentifier(scheme="national_id", value=f"00{n}") for n in range(3)]
    for number in range(6):  # two clients per identifier: six in all, within each key's bound
        registered = ClientRegistered(
            client_id=f"c{number}",
            name=PersonName(given_names=f"Person {number}"),
            identifiers=(identifiers[number % 3],),
        )
        await told(store, f"c{number}", registered)
    directory = ClientDirectory(store, read_models, keyring=keyring(tmp_path))
    await directory.refresh()

    # Each key names two: the one with the latest registration first, its latest first.
    found = await directory.candidates(Probe(MARCO, BIRTH, tuple(identifiers)))
    assert found.truncated
    assert [c.client_id for c in found.candidates] == ["c1", "c2", "c4", "c5"]
    two_keys = await directory.candidates(Probe(MARCO, BIRTH, tuple(identifiers[:2])))
    assert not two_keys.truncated
    assert [c.client_id for c in two_keys.candidates] == ["c0", "c1", "c3", "c4"]


async def test_a_crowd_on_one_key_never_pushes_an_exact_match_out_of_the_lookup(
    store: SqliteEventStore,
    read_models: ReadModelStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Capped by recency alone, clients registered later under a placeholder identifier took
    every place, and the person registered first under the probe's real identifier, the true
    duplicate, was not among the candidates."""
    monkeypatch.setattr(client_directory, "CANDIDATES_PER_LOOKUP", 4)
    real = PersonalIdentifier(scheme="national_id", value="123456789")
    placeholder = PersonalIdentifier(scheme="national_id", value="000000000")
    await told(
        store, "c-real", ClientRegistered(client_id="c-real", name=MARCO, identifiers=(real,))
    )
    for number in range(6):
        registered = ClientRegistered(
            client_id=f"c{number}",
            name=PersonName(given_names=f"Person {number}"),
            identifiers=(placeholder,),
        )
        await told(store, f"c{number}", registered)
    directory = ClientDirectory(store, read_models, keyring=keyring(tmp_path))
    await directory.refresh()

    found = await directory.candidates(Probe(MARCO, BIRTH, (placeholder, real)))
    assert found.truncated
    assert [c.client_id for c in found.candidates] == ["c-real", "c3", "c4", "c5"]


async def test_the_match_keys_data_key_is_made_off_the_event_loop_at_start(
    store: SqliteEventStore, read_models: ReadModelStore
) -> None:
    table = ThreadNotingTable()
    directory = ClientDirectory(store, read_models, keyring=ClientKeyring(FakeKms(), table))
    await directory.start()
    assert table.threads, "the key was neither made nor loaded at start"
    assert threading.get_ident() not in table.threads

    # Made once: registrations, lookups and erasures then ask nothing more of the key table.
    asked = len(table.threads)
    await told(store, "c1", ClientRegistered(client_id="c1", name=MARCO, date_of_birth=BIRTH))
    await directory.refresh()
    [found] = (await directory.candidates(Probe(MARCO, BIRTH, ()))).candidates
    assert found.client_id == "c1"
    assert len(table.threads) == asked


async def test_a_rebuild_makes_the_match_keys_data_key_off_the_event_loop(
    store: SqliteEventStore, read_models: ReadModelStore
) -> None:
    # The CLI's rebuild hands the projection the keyring and applies events at once: the
    # projection's own path fetches the key in a worker thread too.
    table = ThreadNotingTable()
    directory = ClientDirectory(store, read_models, keyring=ClientKeyring(FakeKms(), table))
    await told(store, "c1", ClientRegistered(client_id="c1", name=MARCO, date_of_birth=BIRTH))
    await directory.refresh()
    assert table.threads
    assert threading.get_ident() not in table.threads
