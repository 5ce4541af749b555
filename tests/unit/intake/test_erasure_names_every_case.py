"""An erasure names every case of the client opened before it: the read models of the other
services (planning's case view, coordination's facts, the policy facts, audit's timeline) erase
only the cases ``client.erased`` names, so a case it missed keeps the values they copied in
the clear. A case opened while the erasure is decided either comes before it, and is named,
or after it, and is refused CLIENT_ERASED."""

from __future__ import annotations

import asyncio
import concurrent.futures

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.intake.v1 import intake_pb2
from casetrail_platform.infrastructure import open_event_store
from events.catalog.cases import CaseOpened
from tests.support.grpc import details, refusal
from tests.unit.intake.requests import erasing, marco, opening
from tests.unit.intake.support import Intake


async def test_a_case_opened_while_the_erasure_is_decided_is_named_or_refused(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id = (await intake.stub.RegisterClient(marco())).client_id
    first = (await intake.stub.OpenCase(opening(client_id))).result.case_id
    keyring = intake.infra.keyring
    assert keyring is not None
    loop = asyncio.get_running_loop()
    cases_of = keyring.table.cases_of
    racing: list[concurrent.futures.Future[intake_pb2.OpenCaseResponse]] = []

    def opened_meanwhile(client: str) -> list[str]:
        """The erasure's look at the client's cases (from a worker thread), with a case of
        the client opened just after it; given a second to finish, unless something makes
        it wait for the erasure."""
        found = cases_of(client)
        if not racing:

            async def open_one() -> intake_pb2.OpenCaseResponse:
                answer: intake_pb2.OpenCaseResponse = await intake.stub.OpenCase(opening(client))
                return answer

            racing.append(asyncio.run_coroutine_threadsafe(open_one(), loop))
            concurrent.futures.wait(racing, timeout=1.0)
        return found

    monkeypatch.setattr(keyring.table, "cases_of", opened_meanwhile)
    erased = await intake.stub.EraseClient(erasing(client_id))

    (race,) = racing
    answer: asyncio.Future[intake_pb2.OpenCaseResponse] = asyncio.wrap_future(race)
    await asyncio.wait([answer])
    second: str | None = None
    if answer.exception() is None:
        second = answer.result().result.case_id
    else:
        code, status = await refusal(answer)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert details(status, error_details_pb2.ErrorInfo)[0].reason == "CLIENT_ERASED"
    store, _checkpoints, close = await open_event_store(intake.infra, "intake")
    try:
        opened = [
            r.event.case_id for r in await store.read_all(0) if isinstance(r.event, CaseOpened)
        ]
    finally:
        await close()
    assert opened == [first] if second is None else [first, second]
    assert sorted(erased.erased_case_ids) == sorted(opened)


async def test_a_case_bound_to_the_client_whose_opening_was_refused_is_not_named(
    intake: Intake,
) -> None:
    """A case is bound to its client's key when its opening is sealed, before its append,
    which an erasure holding the client's lock then refuses: that case was never opened, and
    the erasure names only the cases whose opening is stored."""
    client_id = (await intake.stub.RegisterClient(marco())).client_id
    first = (await intake.stub.OpenCase(opening(client_id))).result.case_id
    keyring = intake.infra.keyring
    assert keyring is not None
    await asyncio.to_thread(keyring.table.bind_case, "case-refused", client_id)

    erased = await intake.stub.EraseClient(erasing(client_id))

    assert list(erased.erased_case_ids) == [first]
