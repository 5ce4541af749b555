"""What DetermineEligibility's refusals tell of the client's record: the age stated is compared
with the one intake's date of birth gives only once everything else holds, a refusal telling
that they differ is recorded as a read of the case, and no refusal names the client's id."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import grpc

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.ages import age_on
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import AccessPurpose, RecordAccessed, RecordSection
from events.catalog.base import Role
from events.catalog.eligibility import EligibilityDetermined
from events.catalog.values import NeedCategory
from tests.unit.coordination.rpc import refused, served, usd
from tests.unit.coordination.support import IntakeFeed, carried_by, command_context

if TYPE_CHECKING:
    from services.coordination.app.handlers.running import Dependencies
    from tests.support.identity import TestIssuer
    from tests.unit.coordination.rpc import Stub

WAIVER = "home-care-medicaid-waiver"  # age at least 65, income within 2901.00 USD, in Alameda
BORN = date(1948, 5, 17)


def _asking(case_id: str = "case-1", **facts: Any) -> pb.DetermineEligibilityRequest:
    """As a coordinator, who acts on any case and needs nobody to carry it."""
    return pb.DetermineEligibilityRequest(
        context=command_context("coordinator"),
        case_id=case_id,
        program_id=WAIVER,
        facts=pb.EligibilityFacts(**facts),
    )


async def test_every_other_check_is_made_before_the_stated_age_is_compared_with_the_record(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """Refused for a fact missing, in another currency or too long for the decision's reason,
    or for a closed case, every age from 0 to 150 is answered alike: the age checked first, a
    caller stating one after another learnt the record's from the one refused otherwise, and
    nothing was written nor recorded."""
    await intake.register_client("client-1", BORN)
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await intake.open_case("case-2", "client-1", [NeedCategory.HOME_CARE])
    await intake.close_case("case-2")
    before = await store.last_position()
    refused_for: dict[str, dict[str, Any]] = {
        "facts.monthly_income": {"residence": "us-ca-alameda"},
        "facts.monthly_income.currency": {
            "monthly_income": pb.Money(amount_minor_units=100, currency="EUR"),
            "residence": "us-ca-alameda",
        },
        "facts.residence": {"monthly_income": usd(100), "residence": "x" * 480},
    }
    for field, facts in refused_for.items():
        answers = [
            await refused(stub.DetermineEligibility(_asking(age=age, **facts)))
            for age in range(151)
        ]
        assert {repr(answer) for answer in answers} == {repr(answers[0])}
        assert answers[0].fields == [field]
    closed = [
        await refused(
            stub.DetermineEligibility(
                _asking("case-2", age=age, monthly_income=usd(100), residence="us-ca-alameda")
            )
        )
        for age in range(151)
    ]
    assert {repr(answer) for answer in closed} == {repr(closed[0])}
    assert closed[0].rule == "CASE_CLOSED"
    assert await store.read_all(after_position=before) == []


async def test_a_refusal_telling_the_age_is_not_the_records_is_recorded_as_a_read(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """With every other fact as the programme needs, a stated age is either the record's (the
    decision is recorded: an event of the case) or refused AGE_CONTRADICTS_DATE_OF_BIRTH,
    which tells the caller something of the client's record: recorded before it is answered,
    as a read of the case's identity by the caller, as intake's GetClient is."""
    await intake.register_client("client-1", BORN)
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    age = age_on(BORN, datetime.now(UTC).date())
    facts: dict[str, Any] = {"monthly_income": usd(100_000), "residence": "us-ca-alameda"}
    before = await store.last_position()

    refusal = await refused(stub.DetermineEligibility(_asking(age=age - 1, **facts)))

    assert (refusal.code, refusal.rule) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "AGE_CONTRADICTS_DATE_OF_BIRTH",
    )
    [read] = await store.read_all(after_position=before)
    assert read.stream == "access-case-1"
    assert isinstance(read.event, RecordAccessed)
    assert (read.event.case_id, read.event.accessor_id, read.event.accessor_role) == (
        "case-1",
        "user-coordinator",
        Role.COORDINATOR,
    )
    assert (read.event.purpose, read.event.sections) == (
        AccessPurpose.COORDINATION,
        (RecordSection.IDENTITY,),
    )

    before = await store.last_position()
    decided = await stub.DetermineEligibility(_asking(age=age, **facts))
    assert decided.eligible
    [decision] = await store.read_all(after_position=before)
    assert isinstance(decision.event, EligibilityDetermined)


async def test_the_age_refusals_name_the_case_not_its_client(
    stub: Stub, intake: IntakeFeed
) -> None:
    """Given a case id, neither AGE_CONTRADICTS_DATE_OF_BIRTH nor CLIENT_AGE_NOT_KNOWN tells
    the caller its client's id (client data, answered by reads that record it): both are
    worded by the case, their subject the case."""
    await intake.register_client("client-with-dob", BORN)
    await intake.open_case("case-1", "client-with-dob", [NeedCategory.HOME_CARE])
    await intake.open_case("case-2", "client-no-dob", [NeedCategory.HOME_CARE])
    facts: dict[str, Any] = {"monthly_income": usd(100_000), "residence": "us-ca-alameda"}

    contradicted = await refused(stub.DetermineEligibility(_asking("case-1", age=1, **facts)))
    not_known = await refused(stub.DetermineEligibility(_asking("case-2", **facts)))

    told = [
        (contradicted, "AGE_CONTRADICTS_DATE_OF_BIRTH", "case-1", "client-with-dob"),
        (not_known, "CLIENT_AGE_NOT_KNOWN", "case-2", "client-no-dob"),
    ]
    for refusal, rule, case_id, client_id in told:
        assert refusal.rule == rule
        assert f"case {case_id}'s client" in refusal.message
        assert refusal.metadata["subject"] == f"case/{case_id}"
        assert client_id not in f"{refusal.message} {refusal.details}"


async def test_a_worker_is_answered_alike_whatever_age_while_the_policys_facts_trail(
    deps: Dependencies, issuer: TestIssuer, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """The case's worker states ages while the policy's facts trail the bus: each, the record's
    included, waits for them and is answered FACTS_NOT_CAUGHT_UP, nothing written. Only a
    contradiction's record waited: the wrong ages were answered so, unrecorded, and the right
    one was decided."""
    await intake.register_client("client-1", BORN)
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(deps.store, "case-1", "cm-dana")
    age = age_on(BORN, datetime.now(UTC).date())
    facts: dict[str, Any] = {"monthly_income": usd(100_000), "residence": "us-ca-alameda"}

    async def trailing(case_id: str) -> bool:
        return False

    def asking(stated: int) -> pb.DetermineEligibilityRequest:
        request = _asking(age=stated, **facts)
        request.context.CopyFrom(command_context("case_manager", user="cm-dana"))
        return request

    async with served(deps, issuer, trailing) as worker:
        before = await store.last_position()
        for stated in (age - 1, age, age + 1):
            refusal = await refused(worker.DetermineEligibility(asking(stated)))
            assert refusal.rule == "FACTS_NOT_CAUGHT_UP"
        assert await store.read_all(after_position=before) == []
