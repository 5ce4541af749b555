"""The client directory rebuilt under a new name (a new way of folding names or identifiers)
over the entries of the layout before it: no match key of that layout names a client any more,
so none does after the client's erasure."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import uuid4

from casetrail_platform.projections.runner import catch_up
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.port import NO_STREAM
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.clients import ClientRegistered, PersonName
from events.catalog.erasure import ClientErased
from events.envelope import Actor, EventMetadata, NewEvent
from services.intake.adapters.client_directory import (
    CLIENTS,
    MATCH_KEYS,
    ClientDirectoryProjection,
)
from services.intake.app import handlers
from services.intake.domain.clients import client_stream


async def test_a_rebuilt_directory_lists_a_client_under_no_key_of_the_layout_before(
    store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    projection = ClientDirectoryProjection()
    await projection.match_keys.ready()
    old_key = projection.match_keys.name("mar\u0080co|bellini|1941-06-02")
    # What the layout before left: the client's entry and its match-key document under a key
    # folded the old way (a C1 control kept).
    async with read_models.transaction() as transaction:
        await transaction.put(
            CLIENTS,
            "c-1",
            {
                "client_id": "c-1",
                "name": {"given_names": "Mar\u0080co", "family_name": "Bellini"},
                "date_of_birth": "1941-06-02",
                "identifiers": [],
                "position": 1,
                "name_key": "mar\u0080co|bellini|1941-06-02",
                "identifier_keys": [],
            },
        )
        await transaction.put(MATCH_KEYS, old_key, {"clients": [[1, "c-1"]]})

    metadata = EventMetadata(
        handlers.SOURCE, Actor("reception", Role.RECEPTIONIST), datetime.now(UTC), uuid4()
    )
    registered = ClientRegistered(
        client_id="c-1",
        name=PersonName(given_names="Mar\u0080co", family_name="Bellini"),
        date_of_birth=date(1941, 6, 2),
    )
    await store.append(client_stream("c-1"), [NewEvent(registered, metadata)], NO_STREAM)
    await catch_up(store, read_models, projection)

    async with read_models.transaction() as transaction:
        assert await transaction.get(MATCH_KEYS, old_key) is None
        assert await transaction.get(CLIENTS, "c-1") is not None

    erased = ClientErased(client_id="c-1", request_reference="req-1")
    await store.append(client_stream("c-1"), [NewEvent(erased, metadata)], 1)
    await catch_up(store, read_models, projection)
    assert [key async for key, document in read_models.scan(MATCH_KEYS)] == []
