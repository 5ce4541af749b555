"""A retried RegisterClient answers the acknowledged duplicates its first attempt answered: the
clients its registration records the person is not (``confirmed_not_duplicate_of``), as their
records stood then, not those today's directory matches. A date of birth corrected in between
made the retry name (and record a read of) a client the first answer never named, or drop
one it named."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.store.port import NO_STREAM
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered, PersonName
from events.catalog.erasure import ClientErased
from events.catalog.legacy import ClientRegisteredV1
from events.envelope import Actor, EventMetadata, NewEvent
from events.registry import EventRegistry
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.app.commands import CorrectClientDateOfBirth
from services.intake.app.corrections import correct_date_of_birth
from services.intake.app.handlers import SOURCE
from services.intake.domain.clients import acknowledged_before, client_stream, probe_of
from tests.unit.intake.support import TODAY, caller, context, marco, recorded, register

MARCO_BORN = "1941-06-02"


async def test_a_retry_names_whom_the_registration_recorded_whatever_corrections_made_of_them(
    store: SqliteEventStore, directory: ClientDirectory, closures: ClosureLog, access: AccessControl
) -> None:
    namesake = await register(store, directory, marco(birth="1950-01-01"))
    acknowledged = await register(store, directory, marco())
    ctx = context(Role.RECEPTIONIST, key="registration-42")
    first = await register(store, directory, marco(confirmed=True), ctx)
    assert [c.client_id for c in first.acknowledged_duplicates] == [
        acknowledged.recorded.subject_id
    ]
    coordinator = context(Role.COORDINATOR)

    async def correct(client_id: str, born: str) -> None:
        await correct_date_of_birth(
            store,
            directory,
            closures,
            access,
            caller(coordinator),
            context(Role.COORDINATOR),
            CorrectClientDateOfBirth(client_id, born, "birth certificate seen"),
            TODAY,
        )

    # The namesake now matches the person, the client acknowledged no longer does.
    await correct(namesake.recorded.subject_id, MARCO_BORN)
    await correct(acknowledged.recorded.subject_id, "1960-01-01")

    retried = await register(store, directory, marco(confirmed=True), ctx)
    assert retried == first


async def test_a_retry_names_no_client_erased_since(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    """An erased client is no one anybody can be a duplicate of: their record reads as erased."""
    acknowledged = await register(store, directory, marco())
    ctx = context(Role.RECEPTIONIST)
    first = await register(store, directory, marco(confirmed=True), ctx)
    client_id = acknowledged.recorded.subject_id
    erasure = ClientErased(client_id=client_id, request_reference="dms://dsr/9")
    metadata = EventMetadata(SOURCE, Actor("dpo-1", Role.SUPERVISOR), datetime.now(UTC), uuid4())
    await store.append(client_stream(client_id), [NewEvent(erasure, metadata)], 1)

    retried = await register(store, directory, marco(confirmed=True), ctx)
    assert retried.recorded == first.recorded
    assert retried.acknowledged_duplicates == ()


async def test_a_retry_of_a_registration_stored_before_it_recorded_whom_not_searches(
    store: SqliteEventStore, directory: ClientDirectory, tmp_path: Path
) -> None:
    """A v1 registration reads as confirming no one, whoever its first attempt acknowledged:
    its retry answers the clients registered before it the directory matches, as before."""
    acknowledged = await register(store, directory, marco())
    ctx = context(Role.RECEPTIONIST)
    earlier_release = await SqliteEventStore.open(
        tmp_path / "events.db", EventRegistry([ClientRegisteredV1])
    )
    try:
        client_id = uuid4().hex
        stored = ClientRegisteredV1(
            client_id=client_id,
            name=PersonName(given_names="Marco", family_name="Bellini"),
            date_of_birth=datetime.fromisoformat(MARCO_BORN).date(),
        )
        await earlier_release.append(
            client_stream(client_id), ctx.new_events(SOURCE, [stored]), NO_STREAM
        )
    finally:
        await earlier_release.close()
    [read] = await store.read_stream(client_stream(client_id))
    assert isinstance(read.event, ClientRegistered)
    assert read.event.confirmed_not_duplicate_of == ()

    retried = await register(store, directory, marco(confirmed=True), ctx)
    assert retried.recorded.subject_id == client_id
    assert [c.client_id for c in retried.acknowledged_duplicates] == [
        acknowledged.recorded.subject_id
    ]


def test_a_correction_committed_during_the_first_attempt_is_passed_over() -> None:
    """Committed between the first attempt's search and its append (the correction holds the
    locks of the client's new keys, not the old one the registration matched), the correction
    comes before the registration in the store: the version before it is the one found."""
    born = datetime.fromisoformat(MARCO_BORN).date()
    name = PersonName(given_names="Marco", family_name="Bellini")
    registered = ClientRegistered(client_id="c1", name=name, date_of_birth=born)
    moved = ClientDateOfBirthCorrected(
        client_id="c1", date_of_birth=datetime(1960, 1, 1).date(), reason="ID card seen"
    )
    history = [recorded(registered, "client-c1", 1), recorded(moved, "client-c1", 2)]
    probe = probe_of(ClientRegistered(client_id="c2", name=name, date_of_birth=born))

    found = acknowledged_before(probe, history, history[-1].position + 1)
    assert found is not None
    assert (found.client_id, found.date_of_birth) == ("c1", born)
    assert found.same_name_and_date_of_birth
