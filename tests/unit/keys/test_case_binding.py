"""A case's key is its client's, as the key table binds it once: a keyring seals a case under
the client the table holds, never under the one a losing request named, and an erasure's
``forget`` is not undone by a key look-up that was in flight."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from casetrail_platform import decide
from casetrail_platform.commands import CommandContext, IdempotencyKeyReused, VersionConflict
from casetrail_platform.decide import execute
from casetrail_platform.keys.fields import FieldProtection
from casetrail_platform.keys.keyring import CaseOfAnotherClientError, ClientKeyring
from casetrail_platform.keys.port import StoredDataKey
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.cases import CaseOpened
from events.catalog.clients import ClientRegistered
from events.catalog.examples import example_events
from events.catalog_registry import build_registry
from events.envelope import Actor
from services.intake.app import handlers
from services.intake.domain.clients import client_stream
from tests.unit.intake.support import opening
from tests.unit.keys.support import FakeKms, MemoryDataKeyTable

RECEPTIONIST = Actor("user-receptionist", Role.RECEPTIONIST)


def test_a_case_bound_to_another_client_is_refused_and_cached_as_bound() -> None:
    table = MemoryDataKeyTable()
    table.bind_case("case-1", "client-a")  # by another replica
    keyring = ClientKeyring(FakeKms(), table)

    with pytest.raises(CaseOfAnotherClientError):
        keyring.bind_case("case-1", "client-b")

    assert keyring.owner_of_case("case-1", cached_only=True) == "client-a"
    with pytest.raises(CaseOfAnotherClientError):
        keyring.bind_case("case-1", "client-b", cached_only=True)
    keyring.bind_case("case-1", "client-a", cached_only=True)


async def test_two_replicas_opening_one_case_for_two_clients_bind_it_to_the_one_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One receptionist's form sent twice, the client changed in between, to two replicas:
    one case id. The second request bound the case to client-b, then the first was recorded
    for client-a: the case's later events were sealed under client-b's key, and erasing
    client-a named no case and left them readable."""
    monkeypatch.setattr(decide, "RETRY_BUDGET", 0.5)
    loop = asyncio.get_running_loop()
    kek = FakeKms()
    key = uuid.uuid4().hex
    first_request = CommandContext(RECEPTIONIST, key, request_fingerprint="client-a")
    second_request = CommandContext(RECEPTIONIST, key, request_fingerprint="client-b")
    first = await SqliteEventStore.open(
        tmp_path / "events.db",
        build_registry().protected(
            FieldProtection(ClientKeyring(kek, SqliteDataKeyTable(tmp_path / "keys.db")))
        ),
    )
    raced: list[BaseException | None] = []

    class RacedTable(SqliteDataKeyTable):
        """Binds the case to client-b, then lets the first replica try to open it for
        client-a before this one appends."""

        def bind_case(self, case_id: str, client_id: str) -> str:
            holder = super().bind_case(case_id, client_id)
            if not raced:
                opening_a = handlers.open_case(first, first_request, opening("client-a"))
                raced.append(asyncio.run_coroutine_threadsafe(opening_a, loop).exception())
            return holder

    second_table = RacedTable(tmp_path / "keys.db")
    second = await SqliteEventStore.open(
        tmp_path / "events.db",
        build_registry().protected(FieldProtection(ClientKeyring(kek, second_table))),
    )
    registered = next(e for e in example_events() if isinstance(e, ClientRegistered))
    for client in ("client-a", "client-b"):
        await execute(
            first,
            handlers.SOURCE,
            CommandContext(RECEPTIONIST, f"register-{client}"),
            client_stream(client),
            lambda _, client=client: [registered.updated(client_id=client)],  # type: ignore[misc]
        )
    try:
        await handlers.open_case(second, second_request, opening("client-b"))

        # The first replica lost the race on the binding: nothing of it written, refused
        # as a lost race (retryable), and its retry is told the key was used.
        assert isinstance(raced[0], VersionConflict)
        with pytest.raises(IdempotencyKeyReused):
            await handlers.open_case(first, first_request, opening("client-a"))
        [opened] = [r.event for r in await first.read_all(0) if isinstance(r.event, CaseOpened)]
        assert opened.client_id == "client-b"
        assert second_table.client_of_case(opened.case_id) == "client-b"
    finally:
        await first.close()
        await second.close()


class ErasedMeanwhile(MemoryDataKeyTable):
    """Destroys the owner's keys (another thread's erasure) while a look-up is in flight."""

    keyring: ClientKeyring

    def version(self, owner: str, version: int) -> StoredDataKey | None:
        stored = super().version(owner, version)
        self.keyring.destroy(owner)
        return stored

    def current(self, owner: str) -> StoredDataKey | None:
        stored = super().current(owner)
        if stored is not None:
            self.keyring.destroy(owner)
        return stored


def test_a_look_up_in_flight_during_an_erasure_does_not_cache_the_destroyed_key() -> None:
    """The look-up read the key live, then the erasure destroyed it and forgot it here, then
    the look-up cached what it read: the erased client's data kept opening in this process
    for ``cache_seconds``, the one that answered the erasure included."""
    table = ErasedMeanwhile()
    keyring = ClientKeyring(FakeKms(), table)
    table.keyring = keyring
    for owner in ("client-a", "client-b"):
        keyring.encryption_key(owner)  # created: nothing raced yet
        keyring.forget(owner)

    keyring.decryption_key("client-a", 1)
    keyring.encryption_key("client-b")

    assert not keyring.holds_key("client-a", 1)
    assert not keyring.holds_key("client-b", 1)
    assert keyring.decryption_key("client-b", 1) is None
