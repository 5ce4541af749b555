"""CorrectClientDateOfBirth through intake's API (embedded service, real gRPC): who may
correct, what is refused naming the field, and what the record reads afterwards."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail_platform.ages import agency_today
from casetrail_platform.commands import InvalidCommand
from casetrail_platform.identity.principal import Principal
from casetrail_platform.infrastructure import Infrastructure, open_read_models
from casetrail_platform.policy.decide import decide_client_correction
from casetrail_platform.policy.facts import CaseFacts
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.projection import CaseFactsProjection, CaseFactsReader
from casetrail_platform.projections.runner import catch_up
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import Role
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered, PersonName
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.app.commands import CorrectClientDateOfBirth
from services.intake.app.corrections import correct_date_of_birth
from services.intake.bootstrap import start
from services.intake.domain.clients import client_from
from services.intake.domain.corrections import check_corrected_date_of_birth
from tests.support.grpc import details, refusal, violated_fields
from tests.support.identity import TestIssuer, acting, caller_channel
from tests.support.waiting import eventually
from tests.unit.intake.requests import command, marco, opening, query, until_status
from tests.unit.intake.support import (
    Intake,
    closed_by_planning,
    context_of,
    open_a_case,
    recorded,
)

CANARY = "CANARY-7c1e-birth-certificate"
AGENCY = "eastbay-dss"


def correcting(
    client_id: str,
    birth: str = "1941-06-12",
    reason: str = f"Birth certificate seen, {CANARY}",
    context: common_pb2.CommandContext | None = None,
) -> intake_pb2.CorrectClientDateOfBirthRequest:
    return intake_pb2.CorrectClientDateOfBirthRequest(
        context=context or command("coordinator"),
        client_id=client_id,
        date_of_birth=birth,
        reason=reason,
    )


def as_person(person: Person) -> common_pb2.CommandContext:
    return acting(person, common_pb2.CommandContext(idempotency_key=f"key-{person.user_id}"))


async def client_with_case(
    intake: Intake, person: intake_pb2.RegisterClientRequest | None = None
) -> tuple[str, str]:
    client = await intake.stub.RegisterClient(person or marco())
    opened = await intake.stub.OpenCase(opening(client.client_id))
    return client.client_id, opened.result.case_id


async def birth_date(intake: Intake, client_id: str) -> str:
    answer = await intake.stub.GetClient(
        intake_pb2.GetClientRequest(context=query("receptionist"), client_id=client_id)
    )
    return str(answer.client.date_of_birth)


def _files_holding(intake: Intake, canary: str) -> list[Path]:
    return [
        path
        for path in intake.infra.data_dir.rglob("*")
        if path.is_file() and canary.encode() in path.read_bytes()
    ]


async def test_a_coordinator_corrects_the_date_of_birth(intake: Intake) -> None:
    client_id, _ = await client_with_case(intake)
    request = correcting(client_id)

    corrected = await intake.stub.CorrectClientDateOfBirth(request)

    assert corrected.result.version == 2
    assert await birth_date(intake, client_id) == "1941-06-12"
    # The reason tells of the client's documents: personal, sealed at rest.
    assert not _files_holding(intake, CANARY)
    # A retry answers as the first call did and records nothing more.
    assert (await intake.stub.CorrectClientDateOfBirth(request)).result == corrected.result
    # Duplicate detection matches on the corrected date, no longer on the registered one.
    found = await intake.stub.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(
            context=query("coordinator"),
            name=intake_pb2.PersonName(given_names="Marco", family_name="Bellini"),
            date_of_birth="1941-06-12",
        )
    )
    assert [c.client_id for c in found.candidates] == [client_id]
    stale = await intake.stub.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(
            context=query("coordinator"),
            name=intake_pb2.PersonName(given_names="Marco", family_name="Bellini"),
            date_of_birth="1941-06-02",
        )
    )
    assert list(stale.candidates) == []


@pytest.mark.parametrize(
    ("birth", "reason", "field"),
    [
        ("", "Birth certificate seen", "date_of_birth"),
        ("1941-6-12", "Birth certificate seen", "date_of_birth"),
        ("1899-12-31", "Birth certificate seen", "date_of_birth"),
        ((datetime.now(UTC).date() + timedelta(days=2)).isoformat(), "seen", "date_of_birth"),
        ("1941-06-02", "Birth certificate seen", "date_of_birth"),  # the recorded date
        ("1941-06-12", "", "reason"),
    ],
    ids=["missing", "not-a-day", "before-1900", "future", "unchanged", "no-reason"],
)
async def test_bad_corrections_are_refused_naming_the_field(
    intake: Intake, birth: str, reason: str, field: str
) -> None:
    client_id, _ = await client_with_case(intake)

    code, status = await refusal(
        intake.stub.CorrectClientDateOfBirth(correcting(client_id, birth, reason))
    )

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == [field]
    # Neither date is ever repeated: they are the client's personal data.
    assert "1941" not in status.message
    assert await birth_date(intake, client_id) == "1941-06-02"


def test_an_age_over_150_is_implausible() -> None:

    today = date(2060, 6, 1)
    check_corrected_date_of_birth(date(1909, 6, 2), today)  # 150 until tomorrow
    with pytest.raises(InvalidCommand) as refused:
        check_corrected_date_of_birth(date(1909, 6, 1), today)
    assert [p.field for p in refused.value.violations] == ["date_of_birth"]


async def test_unknown_erased_and_closed_clients_are_refused(intake: Intake) -> None:
    code, _ = await refusal(intake.stub.CorrectClientDateOfBirth(correcting("client-nobody")))
    assert code == grpc.StatusCode.NOT_FOUND

    client_id, case_id = await client_with_case(intake)
    assert intake.infra.inprocess_bus is not None
    await intake.infra.inprocess_bus.publisher(intake.infra.topic).publish(
        [closed_by_planning(case_id, sequence=1)]
    )
    await until_status(intake, case_id, "closed")
    code, status = await refusal(intake.stub.CorrectClientDateOfBirth(correcting(client_id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    [info] = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "CLIENT_CASES_CLOSED"
    assert "ReopenCase" in status.message

    erased_id, _ = await client_with_case(intake, marco("Lucia", national_id="RSSLCU50"))
    await intake.stub.EraseClient(
        intake_pb2.EraseClientRequest(
            context=command("supervisor"), client_id=erased_id, request_reference="dms://dsr/1"
        )
    )
    code, status = await refusal(intake.stub.CorrectClientDateOfBirth(correcting(erased_id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    [info] = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "CLIENT_ERASED"


async def test_a_correction_sent_right_after_the_closure_is_refused(intake: Intake) -> None:
    """Planning answers a closure once it is on the bus: a correction sent right after that
    answer waits for intake's closures to hold it, rather than deciding before they do."""
    client_id, case_id = await client_with_case(intake)
    read_models = await open_read_models(intake.infra, "intake")
    facts = CaseFactsReader(read_models)

    async def facts_know_the_case() -> list[str] | None:
        return await facts.cases_of_client(client_id) or None

    try:
        await eventually(facts_know_the_case, "intake's policy facts hold the case")
    finally:
        await read_models.close()
    assert intake.infra.inprocess_bus is not None
    await intake.infra.inprocess_bus.publisher(intake.infra.topic).publish(
        [closed_by_planning(case_id, sequence=1)]
    )
    code, status = await refusal(intake.stub.CorrectClientDateOfBirth(correcting(client_id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    [info] = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "CLIENT_CASES_CLOSED"
    assert await birth_date(intake, client_id) == "1941-06-02"


async def test_who_may_correct(intake: Intake) -> None:
    client_id, case_id = await client_with_case(intake)
    # A role that never corrects a record: refused by its role.
    code, status = await refusal(
        intake.stub.CorrectClientDateOfBirth(correcting(client_id, context=command("receptionist")))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # A case manager not assigned to the client's case, another team's supervisor: no part in
    # the record.
    worker = Person("worker-ana", "case_manager", team="team-north")
    for stranger in (
        Person("worker-bo", "case_manager", team="team-north"),
        Person("sup-south", "supervisor", team="team-south"),
    ):
        code, status = await refusal(
            intake.stub.CorrectClientDateOfBirth(correcting(client_id, context=as_person(stranger)))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        [info] = details(status, error_details_pb2.ErrorInfo)
        assert info.reason == "NO_RELATIONSHIP"

    assert intake.infra.inprocess_bus is not None
    assigned = CaseAssigned(
        case_id=case_id,
        worker_id=worker.user_id,
        worker_role=Role.CASE_MANAGER,
        worker_team="team-north",
        reason="Home care and transport",
    )
    await intake.infra.inprocess_bus.publisher(intake.infra.topic).publish(
        [recorded(assigned, f"case-{case_id}", 2, source="casetrail/coordination")]
    )
    # The assigned worker corrects once the assignment has arrived; then their supervisor.
    for _ in range(500):
        try:
            await intake.stub.CorrectClientDateOfBirth(
                correcting(client_id, context=as_person(worker))
            )
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.02)
    else:
        pytest.fail("the assigned worker never could correct")
    supervisor = Person("sup-north", "supervisor", team="team-north")
    await intake.stub.CorrectClientDateOfBirth(
        correcting(client_id, "1941-07-12", context=as_person(supervisor))
    )
    assert await birth_date(intake, client_id) == "1941-07-12"


def test_the_policy_of_corrections() -> None:
    now = datetime.now(UTC)
    assigned = CaseFacts(case_id="case-1", worker_id="worker-ana", worker_team="team-north")

    def allowed(principal: Principal, cases: list[CaseFacts]) -> bool:
        return decide_client_correction(principal, cases, home_agency=AGENCY, now=now).allowed

    def who(user: str, role: Role, team: str | None = None, agency: str = AGENCY) -> Principal:
        return Principal(subject=user, role=role, agency=agency, issuer="test", team=team)

    assert allowed(who("coord", Role.COORDINATOR), [])
    assert not allowed(who("coord", Role.COORDINATOR, agency="other-agency"), [])
    assert allowed(who("worker-ana", Role.CASE_MANAGER), [assigned])
    assert not allowed(who("worker-bo", Role.CASE_MANAGER), [assigned])
    assert not allowed(who("worker-ana", Role.CASE_MANAGER), [])
    assert allowed(who("sup", Role.SUPERVISOR, team="team-north"), [assigned])
    assert not allowed(who("sup", Role.SUPERVISOR, team="team-south"), [assigned])


def test_the_record_reads_the_corrected_date() -> None:

    registered = ClientRegistered(
        client_id="c-1", name=PersonName(given_names="Marco"), date_of_birth=date(1914, 6, 2)
    )
    corrected = ClientDateOfBirthCorrected(
        client_id="c-1", date_of_birth=date(1941, 6, 2), reason="typo"
    )
    record = client_from(
        [recorded(registered, "client-c-1", 1), recorded(corrected, "client-c-1", 2)]
    )
    assert record is not None
    assert record.registration.date_of_birth == date(1941, 6, 2)
    assert record.version == 2


async def test_the_future_is_after_the_agencys_date(tmp_path: Path, issuer: TestIssuer) -> None:
    """A date of birth is checked against the agency's date (its configured time zone): a day
    ahead of UTC (UTC+14) today there is tomorrow in UTC, a day behind (UTC-12) today in UTC
    is tomorrow there."""
    ahead = datetime.now(UTC).hour >= 10
    zone = ZoneInfo("Etc/GMT-14" if ahead else "Etc/GMT+12")
    local, utc = agency_today(zone), datetime.now(UTC).date()
    if abs((local - utc).days) != 1:
        pytest.skip("the zone's date met UTC's while the test started")
    infra = replace(Infrastructure.embedded(tmp_path, verifier=issuer.verifier()), time_zone=zone)
    service = await start(infra, "127.0.0.1:0")
    try:
        async with caller_channel(
            grpc.aio.insecure_channel(f"127.0.0.1:{service.port}"), issuer
        ) as channel:
            intake = Intake(intake_pb2_grpc.IntakeServiceStub(channel), infra)
            client_id, _ = await client_with_case(intake)
            # Born "today" by the later of the two calendars.
            request = correcting(client_id, max(local, utc).isoformat())
            if ahead:
                await intake.stub.CorrectClientDateOfBirth(request)
                assert await birth_date(intake, client_id) == local.isoformat()
            else:
                code, status = await refusal(intake.stub.CorrectClientDateOfBirth(request))
                assert code == grpc.StatusCode.INVALID_ARGUMENT
                assert violated_fields(status) == ["date_of_birth"]
    finally:
        await service.stop()


async def test_a_date_of_birth_never_recorded_is_recorded_by_a_correction(intake: Intake) -> None:
    registration = marco()
    registration.date_of_birth = ""
    client = await intake.stub.RegisterClient(registration)
    assert await birth_date(intake, client.client_id) == ""

    await intake.stub.CorrectClientDateOfBirth(correcting(client.client_id))

    assert await birth_date(intake, client.client_id) == "1941-06-12"


async def test_a_retried_correction_is_answered_while_the_closures_trail(
    store: SqliteEventStore,
    directory: ClientDirectory,
    read_models: SqliteReadModelStore,
    access: AccessControl,
) -> None:
    """A retry of a correction already recorded gets its first answer without waiting for the
    client's cases' closures: the log trailing the bus changes nothing it did."""
    case_id = await open_a_case(store, directory)
    await catch_up(store, read_models, CaseFactsProjection())
    client_id = (await access.case_facts(case_id)).client_id
    assert client_id is not None
    coordinator = Principal("cora", Role.COORDINATOR, AGENCY, "test")
    retried = context_of(coordinator)
    correction = CorrectClientDateOfBirth(client_id, "1941-06-12", "Birth certificate seen")
    today = agency_today(ZoneInfo("America/Los_Angeles"))

    async def correct(closures: ClosureLog) -> object:
        return await correct_date_of_birth(
            store, directory, closures, access, coordinator, retried, correction, today
        )

    first = await correct(ClosureLog(read_models))

    async def never(case_id: str) -> bool:
        return False

    assert await correct(ClosureLog(read_models, never)) == first


async def test_a_retried_correction_is_answered_after_the_case_was_transferred(
    intake: Intake,
) -> None:
    """The retry of a correction the assigned worker recorded gets its first answer once the
    case is transferred away from them (a retry is answered as the first, README "Idempotent
    commands"), not the NO_RELATIONSHIP a new correction of theirs gets."""
    client_id, case_id = await client_with_case(intake)
    worker = Person("worker-ana", "case_manager", team="team-north")
    assert intake.infra.inprocess_bus is not None
    publish = intake.infra.inprocess_bus.publisher(intake.infra.topic).publish
    assigned = CaseAssigned(
        case_id=case_id,
        worker_id=worker.user_id,
        worker_role=Role.CASE_MANAGER,
        worker_team="team-north",
        reason="Home care and transport",
    )
    await publish([recorded(assigned, f"case-{case_id}", 2, source="casetrail/coordination")])
    sent = correcting(client_id, context=as_person(worker))

    async def corrected_by_the_worker() -> intake_pb2.CorrectClientDateOfBirthResponse | None:
        try:
            answer: intake_pb2.CorrectClientDateOfBirthResponse
            answer = await intake.stub.CorrectClientDateOfBirth(sent)
        except grpc.aio.AioRpcError:
            return None  # the assignment has not reached intake's facts yet
        return answer

    first = await eventually(corrected_by_the_worker, "the assigned worker corrects")
    moved = CaseReassigned(
        case_id=case_id,
        previous_worker_id=worker.user_id,
        worker_id="worker-bo",
        worker_role=Role.CASE_MANAGER,
        worker_team="team-north",
        reason="Ana on leave",
    )
    await publish([recorded(moved, f"case-{case_id}", 3, source="casetrail/coordination")])
    again = correcting(client_id, "1941-07-12", context=as_person(worker))
    again.context.idempotency_key = "another-key"
    code, status = await refusal(intake.stub.CorrectClientDateOfBirth(again))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == "NO_RELATIONSHIP"

    assert await intake.stub.CorrectClientDateOfBirth(sent) == first
    assert await birth_date(intake, client_id) == "1941-06-12"
