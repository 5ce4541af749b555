"""A caller the policy refuses learns nothing of whether a case or a client exists: intake's
GetCase and GetClient decide before they say NOT_FOUND, as planning's GetCaseView does
(README: "Reads are decided before anything is looked up")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail_platform.hosting import ServiceHost
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.policy.guard import AccessControl, access_stream
from casetrail_platform.policy.hosting import facts_access_control
from cli.rpc import Person
from events.catalog.access import RecordAccessDenied
from services.intake.app.queries import CLIENT_SEARCH
from services.intake.bootstrap import start
from tests.support.grpc import details, mentions, refusal
from tests.support.identity import TestIssuer, acting, caller_channel
from tests.support.waiting import eventually
from tests.unit.intake.requests import (
    marco,
    open_case,
    opening,
    query,
    recorded_in_intake,
)
from tests.unit.intake.support import Intake


def case_manager() -> common_pb2.QueryContext:
    """A case manager who carries none of the cases: no rule lets them read one."""
    return acting(
        Person("user-cm-elsewhere", "case_manager"),
        common_pb2.QueryContext(purpose="direct_care"),
    )


async def _refused_and_recorded(intake: Intake, call: object, subject: str) -> str:
    code, status = await refusal(call)  # type: ignore[arg-type]
    assert code == grpc.StatusCode.PERMISSION_DENIED, (subject, code, status.message)
    (info,) = details(status, error_details_pb2.ErrorInfo)
    denied = await recorded_in_intake(intake, access_stream(subject))
    assert [type(r.event) for r in denied] == [RecordAccessDenied], subject
    return f"{info.reason}: {status.message}"


async def test_an_unknown_case_is_refused_as_a_real_one_not_found(intake: Intake) -> None:
    real = await open_case(intake)
    answers = [
        await _refused_and_recorded(
            intake,
            intake.stub.GetCase(intake_pb2.GetCaseRequest(context=case_manager(), case_id=case_id)),
            case_id,
        )
        for case_id in (real, "case-that-never-was")
    ]
    assert answers[0] == answers[1]


async def test_an_unknown_client_is_refused_as_a_real_one_not_found(intake: Intake) -> None:
    without_case = (await intake.stub.RegisterClient(marco())).client_id
    answers = [
        await _refused_and_recorded(
            intake,
            intake.stub.GetClient(
                intake_pb2.GetClientRequest(context=case_manager(), client_id=client_id)
            ),
            client_id,
        )
        for client_id in (without_case, "client-that-never-was")
    ]
    assert answers[0] == answers[1]


# -- facts not caught up name what was asked, never a case (or a client) looked up for it -----


@dataclass
class Behind:
    """``case_facts_caught_up``: every case's facts on the bus are held but ``behind``'s (its
    wait ran out); ``access``: the service's access control, to see what its facts hold."""

    behind: str | None = None
    asked: list[str] = field(default_factory=list)
    access: AccessControl | None = None

    async def __call__(self, case_id: str) -> bool:
        self.asked.append(case_id)
        return case_id != self.behind


@pytest.fixture
async def behind(
    tmp_path: Path, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Intake, Behind]]:
    """The package's ``intake``, its reads waiting at a barrier ``Behind`` answers."""
    barrier = Behind()

    def reading_behind(host: ServiceHost) -> AccessControl:
        barrier.access = facts_access_control(host)
        barrier.access.case_facts_caught_up = barrier
        return barrier.access

    monkeypatch.setattr("services.intake.bootstrap.facts_access_control", reading_behind)
    infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
    service = await start(infra, "127.0.0.1:0")
    try:
        async with caller_channel(
            grpc.aio.insecure_channel(f"127.0.0.1:{service.port}"), issuer
        ) as channel:
            yield Intake(intake_pb2_grpc.IntakeServiceStub(channel), infra), barrier
    finally:
        await service.stop()


async def test_a_client_read_whose_facts_trail_names_the_client_or_the_search(
    behind: tuple[Intake, Behind],
) -> None:
    """GetClient and FindPossibleDuplicates look up the client's cases (a search, the clients
    too), then wait for each case's facts before deciding: naming the trailing case would tell
    a worker who does not carry it that the client has it, with nothing recorded. GetClient's
    refusal names the client asked for, a search's the search (``CLIENT_SEARCH``)."""
    intake, barrier = behind
    client = await intake.stub.RegisterClient(marco())
    opened = await intake.stub.OpenCase(opening(client.client_id))
    case_id = opened.result.case_id
    assert barrier.access is not None
    facts = barrier.access

    async def facts_know_the_case() -> list[str] | None:
        return await facts.cases_of_client(client.client_id) or None

    await eventually(facts_know_the_case, "intake's policy facts hold the case")
    barrier.behind = case_id
    worker = query("social_worker")
    same_person = marco()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        client.client_id: lambda: intake.stub.GetClient(
            intake_pb2.GetClientRequest(context=worker, client_id=client.client_id)
        ),
        CLIENT_SEARCH: lambda: intake.stub.FindPossibleDuplicates(
            intake_pb2.FindPossibleDuplicatesRequest(
                context=worker, name=same_person.name, date_of_birth=same_person.date_of_birth
            )
        ),
    }
    for subject, call in calls.items():
        barrier.asked.clear()
        code, status = await refusal(call())
        assert code == grpc.StatusCode.UNAVAILABLE, (subject, status.message)
        assert barrier.asked == [case_id]
        assert not mentions(status, case_id), status
        [info] = details(status, error_details_pb2.ErrorInfo)
        assert (info.reason, info.metadata["subject"]) == ("FACTS_NOT_CAUGHT_UP", subject)
        if subject == CLIENT_SEARCH:
            # The search found the client: a looked-up client is not named either.
            assert not mentions(status, client.client_id), status
    assert await recorded_in_intake(intake, access_stream(case_id)) == [], "nothing decided"
