"""A read of a client is recorded under each of their cases whose own decision allows it, with
that decision (rule, consent, emergency access), and under no case whose decision refuses it:
the client's record is one, disclosed under the allowing cases only (review rev-glass)."""

from __future__ import annotations

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.infrastructure import open_event_store, open_read_models
from casetrail_platform.policy.projection import CaseFactsReader
from cli.rpc import Person
from events.catalog.access import RecordAccessed
from tests.support.identity import acting
from tests.support.waiting import eventually
from tests.unit.intake.requests import marco, opening
from tests.unit.intake.support import Intake

ON_CALL = Person("sw-on-call", "social_worker", team="team-east", entitlements=("break_glass",))
EMERGENCY = common_pb2.QueryContext(purpose="emergency")


async def _glass(intake: Intake, case_id: str) -> str:
    opened = await intake.stub.OpenEmergencyAccess(
        intake_pb2.OpenEmergencyAccessRequest(
            context=acting(ON_CALL, common_pb2.CommandContext(idempotency_key=f"glass-{case_id}")),
            case_id=case_id,
            reason="Client unreachable, fall alarm raised",
        )
    )
    return str(opened.emergency_access_id)


async def _reads_by_on_call(intake: Intake, case_id: str) -> list[tuple[str, str | None]]:
    """The on-call worker's reads recorded under ``case_id`` (in its stream, or a batch's
    naming several cases): rule and emergency access."""
    store, _checkpoints, close = await open_event_store(intake.infra, "intake")
    try:
        everything = await store.read_all(0)
    finally:
        await close()
    return [
        (recorded.event.rule, recorded.event.emergency_access_id)
        for recorded in everything
        if isinstance(recorded.event, RecordAccessed)
        and recorded.event.case_id == case_id
        and recorded.event.accessor_id == ON_CALL.user_id
    ]


async def _cases_of_marco(intake: Intake, count: int) -> tuple[str, list[str]]:
    """A client with ``count`` cases, once intake's policy facts hold them all (the bus brings
    the openings there: until then the client's read is decided on fewer cases)."""
    client = await intake.stub.RegisterClient(marco())
    cases = [
        (await intake.stub.OpenCase(opening(client.client_id))).result.case_id for _ in range(count)
    ]
    read_models = await open_read_models(intake.infra, "intake")
    facts = CaseFactsReader(read_models)

    async def facts_know_every_case() -> list[str] | None:
        known = await facts.cases_of_client(client.client_id)
        return known if sorted(known) == sorted(cases) else None

    try:
        await eventually(facts_know_every_case, "intake's policy facts hold every case")
    finally:
        await read_models.close()
    return client.client_id, cases


async def test_a_break_glass_read_of_a_client_is_recorded_under_each_case_it_was_allowed_on(
    intake: Intake,
) -> None:
    """The first case's decision allowing the read was recorded under every case of the
    client: case B showed a break-glass read naming case A's emergency access, though B has
    none, and case C, whose own decision refuses the caller, a read."""
    client_id, (case_a, case_b, case_c) = await _cases_of_marco(intake, 3)
    glass_a = await _glass(intake, case_a)
    glass_b = await _glass(intake, case_b)

    answer = await intake.stub.GetClient(
        intake_pb2.GetClientRequest(context=acting(ON_CALL, EMERGENCY), client_id=client_id)
    )

    assert answer.client.client_id == client_id
    assert await _reads_by_on_call(intake, case_a) == [("break-glass", glass_a)]
    assert await _reads_by_on_call(intake, case_b) == [("break-glass", glass_b)]
    assert await _reads_by_on_call(intake, case_c) == []


async def test_a_possible_duplicate_is_recorded_under_each_case_it_was_allowed_on(
    intake: Intake,
) -> None:
    """A candidate shown is recorded as ``GetClient`` records its read: under each case whose
    own decision allows it, with that decision."""
    client_id, (case_a, case_b) = await _cases_of_marco(intake, 2)
    glass_a = await _glass(intake, case_a)

    found = await intake.stub.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(
            context=acting(ON_CALL, EMERGENCY),
            name=intake_pb2.PersonName(given_names="Marco", family_name="Bellini"),
            date_of_birth="1941-06-02",
        )
    )

    assert [candidate.client_id for candidate in found.candidates] == [client_id]
    assert await _reads_by_on_call(intake, case_a) == [("break-glass", glass_a)]
    assert await _reads_by_on_call(intake, case_b) == []
