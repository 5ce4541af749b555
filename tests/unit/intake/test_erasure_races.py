"""Intake's commands on a case that read the client's stream for an erasure, raced by the
client's erasure: it commits right after the command read the client's stream, before the
command's append to the case's stream. The append is guarded on the client's stream as read
(``ClientErasure``), so the command reads again and is refused CLIENT_ERASED, and nothing is
recorded on the case. (The emergency access's race: ``test_emergency_erasure_race``.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from casetrail_platform.commands import RuleBroken
from casetrail_platform.decide import published_at_once
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.erasure import ClientErased
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.app import handlers
from services.intake.app.commands import GrantConsent, RecipientInput, ReopenCase
from services.intake.domain.cases import case_from, case_stream
from services.intake.domain.erasure import CLIENT_ERASED
from tests.unit.intake.support import (
    ErasedOnceRead,
    assess,
    caller,
    closed_by_planning,
    context,
    marco,
    open_a_case,
    opening,
    register,
)


async def _client_of(store: SqliteEventStore, case_id: str) -> str:
    case = case_from(await store.read_stream(case_stream(case_id)))
    assert case is not None
    return case.opened.client_id


async def _case_version(store: SqliteEventStore, case_id: str) -> int:
    return await store.stream_version(case_stream(case_id))


@pytest.mark.parametrize("reads", [1, 2], ids=["after-the-check-of-the-client", "after-the-guard"])
async def test_a_case_opened_as_the_client_is_erased_is_refused(
    store: SqliteEventStore,
    directory: ClientDirectory,
    monkeypatch: pytest.MonkeyPatch,
    reads: int,
) -> None:
    """Opening a case reads the client's stream twice: to find the client, then for the
    guard; the erasure may come after either."""
    client_id = (await register(store, directory, marco())).recorded.subject_id
    before = await store.last_position()
    race = ErasedOnceRead(store, monkeypatch, client_id, reads)

    with pytest.raises(RuleBroken) as refused:
        await handlers.open_case(store, context(), opening(client_id))

    assert race.erased
    assert refused.value.rule == CLIENT_ERASED
    assert [r.event.event_type for r in await store.read_all(before)] == [ClientErased.event_type]


async def test_an_assessment_recorded_as_the_client_is_erased_is_refused(
    store: SqliteEventStore,
    directory: ClientDirectory,
    closures: ClosureLog,
    access: AccessControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case_id = await open_a_case(store, directory)
    race = ErasedOnceRead(store, monkeypatch, await _client_of(store, case_id))

    with pytest.raises(RuleBroken) as refused:
        await assess(store, closures, access, case_id)

    assert race.erased
    assert refused.value.rule == CLIENT_ERASED
    assert await _case_version(store, case_id) == 1


async def test_a_case_reopened_as_the_client_is_erased_is_refused(
    store: SqliteEventStore,
    directory: ClientDirectory,
    closures: ClosureLog,
    access: AccessControl,
    from_bus: BusProjectionHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case_id = await open_a_case(store, directory)
    await assess(store, closures, access, case_id)
    await from_bus(closed_by_planning(case_id, sequence=3))
    race = ErasedOnceRead(store, monkeypatch, await _client_of(store, case_id))

    with pytest.raises(RuleBroken) as refused:
        await handlers.reopen_case(
            store,
            closures,
            context(Role.SUPERVISOR),
            ReopenCase(case_id, "New fall in January"),
            published_at_once,
        )

    assert race.erased
    assert refused.value.rule == CLIENT_ERASED
    assert await _case_version(store, case_id) == 2


async def test_a_consent_granted_as_the_client_is_erased_is_refused(
    store: SqliteEventStore,
    directory: ClientDirectory,
    read_models: SqliteReadModelStore,
    access: AccessControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case_id = await open_a_case(store, directory)
    race = ErasedOnceRead(store, monkeypatch, await _client_of(store, case_id))
    consent = GrantConsent(
        case_id=case_id,
        recipient=RecipientInput("agency", "bay-recovery", "Bay Recovery Center"),
        purpose="coordination",
        scope=("identity", "referrals"),
        categories=(),
        expires_at=datetime.now(UTC) + timedelta(days=90),
        document_reference="scan://consents/2026/0001.pdf",
    )

    worker = context()
    with pytest.raises(RuleBroken) as refused:
        await handlers.grant_consent(
            store,
            ClosureLog(read_models),
            access,
            caller(worker),
            worker,
            consent,
            datetime.now(UTC),
            published_at_once,
        )

    assert race.erased
    assert refused.value.rule == CLIENT_ERASED
    assert await _case_version(store, case_id) == 1
