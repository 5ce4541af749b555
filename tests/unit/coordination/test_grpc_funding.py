"""Eligibility, budget reservations and insurance claims through the real gRPC server."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.ages import age_on
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.limits import MAX_RESERVATIONS_PER_SERVICE
from casetrail_platform.policy.projection import FACTS
from casetrail_platform.projections.port import Document
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.access import RecordAccessDenied, RecordAccessed, RecordSection
from events.catalog.assignment import CaseAssigned
from events.catalog.base import Role
from events.catalog.values import NeedCategory
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain import funding
from services.coordination.domain.eligibility import RECORDED_AGE
from services.coordination.domain.facts import budget_stream, case_stream
from services.coordination.entrypoints import convert
from tests.support.identity import TestIssuer, acting
from tests.unit.coordination.rpc import (
    HOME_CARE_CO,
    eligibility,
    recorded_reasons,
    refused,
    schedule_request,
    usd,
)
from tests.unit.coordination.support import (
    IntakeFeed,
    carried_by,
    command_context,
    query_context,
    timestamp,
    transferred,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

MONDAY_9 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
INSURER = pb.Provider(provider_id="medicare", name="Medicare")


async def test_eligibility_is_recorded_with_its_reasons(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.register_client("client-1", date(1948, 5, 17))
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)
    decided = await stub.DetermineEligibility(
        eligibility(
            "home-care-medicaid-waiver", monthly_income=usd(180_000), residence="us-ca-alameda"
        )
    )
    assert decided.eligible
    # From the birth date, on the server's date (never the command's stated moment): recorded
    # in the decision, and told in its answer without the number (the record's: client data).
    age = age_on(date(1948, 5, 17), datetime.now(UTC).date())
    assert decided.reasons[0] == f"{RECORDED_AGE} is at least the minimum of 65"
    assert (await recorded_reasons(stub))[0][0] == f"age {age} is at least the minimum of 65"
    # A year from the day it was decided, on the server's clock.
    assert decided.valid_until == (datetime.now(UTC).date() + timedelta(days=365)).isoformat()

    # The age stated as the record gives it is the record's.
    refused_decision = await stub.DetermineEligibility(
        eligibility(
            "home-care-medicaid-waiver",
            age=age,
            monthly_income=usd(400_000),
            residence="us-ca-marin",
        )
    )
    assert not refused_decision.eligible
    assert list(refused_decision.reasons) == [
        f"age {age} is at least the minimum of 65",
        "monthly income 4000.00 USD is over the limit of 2901.00 USD",
        "residence us-ca-marin is outside the programme's area (us-ca-alameda)",
    ]
    assert refused_decision.valid_until == ""
    view = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(context=query_context(), case_id="case-1")
    )
    assert [d.eligible for d in view.eligibility] == [True, False]


async def test_the_answer_never_tells_the_age_the_record_gives(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """The age a decision rests on when the caller stated none is the client's record's
    (intake's date of birth): a command's answer records no access, so the answer says
    whether it meets each rule without it, on the first attempt and its retry. The decision
    recorded holds it, for reads of the case (recorded) and review."""
    await intake.register_client("client-1", date(1954, 6, 1))
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)
    age = age_on(date(1954, 6, 1), datetime.now(UTC).date())
    before = await store.last_position()
    request = eligibility(
        "home-care-medicaid-waiver", monthly_income=usd(100_000), residence="us-ca-alameda"
    )
    for _attempt in range(2):
        decided = await stub.DetermineEligibility(request)
        assert decided.eligible
        assert decided.reasons[0] == f"{RECORDED_AGE} is at least the minimum of 65"
        assert not any(str(age) in reason for reason in decided.reasons)
        # Nothing read of the record was answered, so no read is recorded: the decision only.
        written = await store.read_all(after_position=before)
        assert [e.event_type for e in written] == ["casetrail.eligibility.determined"]
    assert (await recorded_reasons(stub))[0][0] == f"age {age} is at least the minimum of 65"


async def test_a_stated_age_the_date_of_birth_contradicts_is_refused(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    # Intake recorded a client of 77 or so; a caller's 64 would make a state programme's
    # decision rest on an age the record contradicts (here, one that keeps them out).
    await intake.register_client("client-1", date(1948, 5, 17))
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(deps.store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)
    await intake.policy_told_assigned("case-1", "user-social_worker", "team-east")
    assigned = await deps.store.read_stream(case_stream("case-1"))
    age = age_on(date(1948, 5, 17), datetime.now(UTC).date())
    for stated in (64, age + 1):
        refusal = await refused(
            stub.DetermineEligibility(
                eligibility(
                    "home-care-medicaid-waiver",
                    age=stated,
                    monthly_income=usd(180_000),
                    residence="us-ca-alameda",
                )
            )
        )
        assert (refusal.code, refusal.rule) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "AGE_CONTRADICTS_DATE_OF_BIRTH",
        )
        assert refusal.metadata["field"] == "facts.age"
        assert "facts.age" in refusal.message
        # The way out when the record is what is wrong.
        assert refusal.metadata["suggested_action"] == "CorrectClientDateOfBirth"
        assert "CorrectClientDateOfBirth" in refusal.message
        # Neither the record's age nor the date of birth is told (personal data).
        for told in (str(age), "1948", str(stated)):
            assert told not in refusal.message
            assert told not in str(refusal.metadata)
    assert await deps.store.read_stream(case_stream("case-1")) == assigned


async def test_a_corrected_date_of_birth_decides_the_age(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Intake typed 1984 for 1948: a client of 77 or so was recorded as about 42.
    await intake.register_client("client-1", date(1984, 5, 17))
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)
    request = eligibility(
        "home-care-medicaid-waiver", monthly_income=usd(180_000), residence="us-ca-alameda"
    )
    assert not (await stub.DetermineEligibility(request)).eligible

    await intake.correct_date_of_birth("client-1", date(1948, 5, 17))

    request.context.idempotency_key += "-after-correction"
    decided = await stub.DetermineEligibility(request)
    age = age_on(date(1948, 5, 17), datetime.now(UTC).date())
    assert decided.eligible
    assert decided.reasons[0] == f"{RECORDED_AGE} is at least the minimum of 65"
    assert (await recorded_reasons(stub))[-1][0] == f"age {age} is at least the minimum of 65"
    # The age the caller knows to be right is no longer refused.
    request.context.idempotency_key += "-stated"
    request.facts.age = age
    assert (await stub.DetermineEligibility(request)).eligible


async def test_a_retried_decision_answers_as_the_first_whatever_the_date_of_birth_says_since(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    """A decision taken on the age the caller stated, before intake's date of birth arrived,
    or on a date of birth corrected since (a birthday between the attempts does the same):
    the same request retried under its key gets the first answer again, not the refusal or
    the other age a new request now gets; the key with another request is refused as
    reused."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)
    await intake.policy_told_assigned("case-1", "user-social_worker", "team-east")
    stated = eligibility(
        "home-care-medicaid-waiver",
        age=70,
        monthly_income=usd(180_000),
        residence="us-ca-alameda",
    )
    first = await stub.DetermineEligibility(stated)
    assert first.reasons[0] == "age 70 is at least the minimum of 65"
    await intake.register_client("client-1", date(1948, 5, 17))  # 77 or so, not 70
    after = await store.last_position()

    assert await stub.DetermineEligibility(stated) == first
    assert await store.last_position() == after  # nothing recorded again
    stated.facts.residence = "us-ca-marin"
    reused = await refused(stub.DetermineEligibility(stated))
    assert reused.rule == "IDEMPOTENCY_KEY_REUSED"
    stated.facts.residence = "us-ca-alameda"
    stated.context.idempotency_key += "-new"
    contradicted = await refused(stub.DetermineEligibility(stated))
    assert contradicted.rule == "AGE_CONTRADICTS_DATE_OF_BIRTH"

    # Decided on the age the record gives, stated as the record's and left out; then the date
    # of birth is corrected: each retry's answer is the first, neither refused for an age the
    # record no longer gives nor decided on the corrected date.
    age = age_on(date(1948, 5, 17), datetime.now(UTC).date())
    as_recorded = eligibility(
        "home-care-medicaid-waiver",
        age=age,
        monthly_income=usd(180_000),
        residence="us-ca-alameda",
    )
    on_record = eligibility(
        "home-care-medicaid-waiver", monthly_income=usd(180_000), residence="us-ca-alameda"
    )
    decided = [await stub.DetermineEligibility(r) for r in (as_recorded, on_record)]
    assert all(d.eligible for d in decided)
    await intake.correct_date_of_birth("client-1", date(1984, 5, 17))
    after = await store.last_position()
    assert [await stub.DetermineEligibility(r) for r in (as_recorded, on_record)] == decided
    assert await store.last_position() == after
    as_recorded.context.idempotency_key += "-new"
    contradicted = await refused(stub.DetermineEligibility(as_recorded))
    assert contradicted.rule == "AGE_CONTRADICTS_DATE_OF_BIRTH"
    on_record.context.idempotency_key += "-new"
    assert not (await stub.DetermineEligibility(on_record)).eligible


async def test_a_stated_age_is_used_while_no_date_of_birth_is_known(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)
    decided = await stub.DetermineEligibility(
        eligibility(
            "home-care-medicaid-waiver",
            age=64,
            monthly_income=usd(180_000),
            residence="us-ca-alameda",
        )
    )
    assert not decided.eligible
    assert decided.reasons[0] == "age 64 is under the minimum of 65"


async def test_facts_a_programme_needs_are_required(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)
    refusal = await refused(stub.DetermineEligibility(eligibility("home-care-medicaid-waiver")))
    assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refusal.fields == ["facts.age", "facts.monthly_income", "facts.residence"]
    refusal = await refused(stub.DetermineEligibility(eligibility("no-such-programme")))
    assert refusal.code is grpc.StatusCode.NOT_FOUND


async def test_an_age_coordination_has_not_learnt_yet_is_a_precondition(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)
    request = eligibility("home-care-medicaid-waiver")
    request.facts.monthly_income.CopyFrom(pb.Money(amount_minor_units=180_000, currency="USD"))
    request.facts.residence = "us-ca-alameda"

    refusal = await refused(stub.DetermineEligibility(request))

    assert refusal.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.rule == "CLIENT_AGE_NOT_KNOWN"
    # A client registered without one has it recorded at intake.
    assert "CorrectClientDateOfBirth" in refusal.message


async def _home_care(
    stub: Stub, intake: IntakeFeed, store: EventStore, team: str | None = None
) -> str:
    """case-1, carried by the case manager (of ``team``) who schedules a home care service
    for it."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1", team=team)
    scheduled = await stub.ScheduleService(
        schedule_request("case-1", "home_care", MONDAY_9, provider=HOME_CARE_CO)
    )
    service_id: str = scheduled.service_id
    return service_id


async def deliver(stub: Stub, service_id: str) -> None:
    await stub.RecordServiceDelivered(
        pb.RecordServiceDeliveredRequest(
            context=command_context("partner_agency", agency=HOME_CARE_CO.provider_id),
            case_id="case-1",
            service_id=service_id,
            starts_at=timestamp(MONDAY_9),
            ends_at=timestamp(MONDAY_9 + timedelta(hours=1)),
        )
    )


def reserve(
    amount: pb.Money, service_id: str = "", line: str = "home-care-fy2026"
) -> pb.ReserveBudgetRequest:
    return pb.ReserveBudgetRequest(
        context=command_context("coordinator"),
        case_id="case-1",
        budget_line=line,
        amount=amount,
        service_id=service_id,
    )


async def test_a_budget_line_is_never_overspent(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    service_id = await _home_care(stub, intake, store, team="team-east")
    first = await stub.ReserveBudget(reserve(usd(70_000), service_id))
    assert first.available == usd(30_000)

    refusal = await refused(stub.ReserveBudget(reserve(usd(30_001), service_id)))
    assert refusal.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.rule == "BUDGET_EXCEEDED"
    assert refusal.metadata == {
        "subject": "budget_line/home-care-fy2026",
        "budget_line": "home-care-fy2026",
        "requested": "30001",
        "available": "30000",
        "currency": "USD",
    }

    released = await stub.ReleaseBudget(
        pb.ReleaseBudgetRequest(
            context=acting(
                Person("sup-east", "supervisor", team="team-east"),
                common_pb2.CommandContext(idempotency_key="release"),
            ),
            case_id="case-1",
            budget_line="home-care-fy2026",
            reservation_id=first.reservation_id,
            amount=usd(20_000),
            reason="fewer hours needed",
        )
    )
    assert released.available == usd(50_000)
    await stub.ReserveBudget(reserve(usd(50_000), service_id))
    line = await stub.GetBudgetLine(
        pb.GetBudgetLineRequest(context=query_context(), budget_line="home-care-fy2026")
    )
    assert (line.reserved, line.available) == (usd(100_000), usd(0))
    assert [r.amount for r in line.reservations] == [usd(50_000), usd(50_000)]


async def test_a_supervisor_reserves_and_releases_only_for_a_case_of_their_team(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # As transferring, closing and reopening: a supervisor commits or gives back the agency's
    # money for their team's cases only. A case no one carries has no team yet (the
    # coordinator reserves for it), and an unknown case id is refused alike.
    service_id = await _home_care(stub, intake, store, team="team-east")
    await intake.open_case("case-2", "client-2", [NeedCategory.HOME_CARE])
    reserved = await stub.ReserveBudget(reserve(usd(1_000), service_id))
    line = budget_stream("home-care-fy2026")
    written = await store.read_stream(line)

    def of(team: str, key: str) -> common_pb2.CommandContext:
        supervisor = Person(f"sup-{team}", "supervisor", team=team)
        return acting(supervisor, common_pb2.CommandContext(idempotency_key=key))

    def reservation(team: str, case_id: str, key: str) -> pb.ReserveBudgetRequest:
        return pb.ReserveBudgetRequest(
            context=of(team, key), case_id=case_id, budget_line="home-care-fy2026", amount=usd(1)
        )

    def release(team: str, case_id: str, key: str) -> pb.ReleaseBudgetRequest:
        return pb.ReleaseBudgetRequest(
            context=of(team, key),
            case_id=case_id,
            budget_line="home-care-fy2026",
            reservation_id=reserved.reservation_id,
            reason="fewer hours needed",
        )

    answers = set()
    for case_id in ("case-1", "case-2", "case-unknown"):
        for call in (
            stub.ReserveBudget(reservation("team-west", case_id, f"reserve-{case_id}")),
            stub.ReleaseBudget(release("team-west", case_id, f"release-{case_id}")),
        ):
            refusal = await refused(call)
            answers.add((refusal.code, refusal.rule, refusal.message))
    [(code, rule, message)] = answers
    assert (code, rule) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    assert "their team" in message
    assert await store.read_stream(line) == written

    released = await stub.ReleaseBudget(release("team-east", "case-1", "release"))
    assert released.available == usd(100_000)
    await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            context=of("team-east", "reserve"),
            case_id="case-1",
            budget_line="home-care-fy2026",
            amount=usd(500),
            service_id=service_id,
        )
    )


async def test_a_supervisor_reserves_and_releases_by_the_team_coordination_recorded(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # The case moved to team-west on coordination's own case stream; the access policy's facts
    # over the bus still say team-east. The stream decides: team-east's supervisor no longer
    # commits or gives back the case's money, team-west's does.
    service_id = await _home_care(stub, intake, store, team="team-east")
    await intake.policy_told_assigned("case-1", "user-case_manager", "team-east")
    reserved = await stub.ReserveBudget(reserve(usd(1_000), service_id))
    await transferred(store, "case-1", previous_worker_id="user-case_manager")
    line = budget_stream("home-care-fy2026")
    written = await store.read_stream(line)

    def of(team: str, key: str) -> common_pb2.CommandContext:
        supervisor = Person(f"sup-{team}", "supervisor", team=team)
        return acting(supervisor, common_pb2.CommandContext(idempotency_key=key))

    def reservation(team: str) -> pb.ReserveBudgetRequest:
        return pb.ReserveBudgetRequest(
            context=of(team, f"reserve-{team}"),
            case_id="case-1",
            budget_line="home-care-fy2026",
            amount=usd(500),
            service_id=service_id,
        )

    def release(team: str) -> pb.ReleaseBudgetRequest:
        return pb.ReleaseBudgetRequest(
            context=of(team, f"release-{team}"),
            case_id="case-1",
            budget_line="home-care-fy2026",
            reservation_id=reserved.reservation_id,
            reason="fewer hours needed",
        )

    for call in (
        stub.ReserveBudget(reservation("team-east")),
        stub.ReleaseBudget(release("team-east")),
    ):
        refusal = await refused(call)
        assert (refusal.code, refusal.rule) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NO_RELATIONSHIP",
        )
    assert await store.read_stream(line) == written
    await stub.ReserveBudget(reservation("team-west"))
    released = await stub.ReleaseBudget(release("team-west"))
    assert released.available == usd(99_500)


async def test_a_budget_line_lists_its_latest_reservations_and_says_how_many_there_are(
    stub: Stub, intake: IntakeFeed, monkeypatch: pytest.MonkeyPatch, store: SqliteEventStore
) -> None:
    """A line funds an agency's year: its answer lists the latest reservations, never all of
    them (tens of thousands outgrew gRPC's 4 MB answer), and says that it left some out."""
    monkeypatch.setattr(convert, "RESERVATIONS_LISTED", 2)
    service_id = await _home_care(stub, intake, store)
    made = [
        (await stub.ReserveBudget(reserve(usd(100 + n), service_id))).reservation_id
        for n in range(3)
    ]
    request = pb.GetBudgetLineRequest(context=query_context(), budget_line="home-care-fy2026")

    line = await stub.GetBudgetLine(request)

    assert [r.reservation_id for r in line.reservations] == made[1:]
    assert (line.truncated, line.reservations_total) == (True, 3)
    assert line.reserved == usd(303)
    monkeypatch.setattr(convert, "RESERVATIONS_LISTED", 3)
    line = await stub.GetBudgetLine(request)
    assert (len(line.reservations), line.truncated, line.reservations_total) == (3, False, 3)


async def _reserve_on_two_cases(stub: Stub, intake: IntakeFeed) -> None:
    """case-1 carried by cm-dana, case-2 by no one, each with a reservation on the line."""
    for day, case_id in enumerate(("case-1", "case-2")):
        await intake.open_case(case_id, "client-1", [NeedCategory.HOME_CARE])
        starts_at = MONDAY_9 + timedelta(days=day)
        scheduled = await stub.ScheduleService(
            schedule_request(
                case_id, "home_care", starts_at, provider=HOME_CARE_CO, role="coordinator"
            )
        )
        await stub.ReserveBudget(
            pb.ReserveBudgetRequest(
                context=command_context("coordinator"),
                case_id=case_id,
                budget_line="home-care-fy2026",
                amount=usd(100),
                service_id=scheduled.service_id,
            )
        )
    await intake.deliver(
        CaseAssigned(
            case_id="case-1", worker_id="cm-dana", worker_role=Role.CASE_MANAGER, reason="fits"
        ),
        case_stream("case-1"),
        source="casetrail/coordination",
    )


async def _accesses(deps: Dependencies, after: int) -> list[object]:
    return [
        recorded.event
        for recorded in await deps.store.read_all(after)
        if isinstance(recorded.event, RecordAccessed | RecordAccessDenied)
    ]


async def test_a_budget_line_records_a_read_of_each_case_it_lists(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    """A reservation names its case, service and amount: the line's answer is a read of each
    case it lists, recorded (in one append) before it is answered."""
    await _reserve_on_two_cases(stub, intake)
    after = (await deps.store.read_all())[-1].position

    line = await stub.GetBudgetLine(
        pb.GetBudgetLineRequest(context=query_context(), budget_line="home-care-fy2026")
    )

    assert [r.case_id for r in line.reservations] == ["case-1", "case-2"]
    accesses = await _accesses(deps, after)
    assert all(isinstance(a, RecordAccessed) for a in accesses)
    read = {a.case_id: a for a in accesses if isinstance(a, RecordAccessed)}
    assert set(read) == {"case-1", "case-2"}
    assert all(a.sections == (RecordSection.FUNDING,) for a in read.values())
    assert {a.accessor_id for a in read.values()} == {"user-coordinator"}


async def test_a_budget_line_reads_the_facts_of_the_cases_it_lists_at_once(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to 1,000 cases listed: their policy facts come in one read, not one per case."""
    await _reserve_on_two_cases(stub, intake)
    # Both cases' facts change, so neither is kept in memory when the line is read.
    await intake.deliver(
        CaseAssigned(
            case_id="case-2", worker_id="cm-dana", worker_role=Role.CASE_MANAGER, reason="fits"
        ),
        case_stream("case-2"),
        source="casetrail/coordination",
    )
    reads: list[tuple[str, ...]] = []
    get, get_many = deps.read_models.get, deps.read_models.get_many

    async def one(collection: str, key: str) -> Document | None:
        if collection == FACTS:
            reads.append((key,))
        return await get(collection, key)

    async def many(collection: str, keys: Sequence[str]) -> dict[str, Document]:
        if collection == FACTS:
            reads.append(tuple(keys))
        return await get_many(collection, keys)

    monkeypatch.setattr(deps.read_models, "get", one)
    monkeypatch.setattr(deps.read_models, "get_many", many)

    line = await stub.GetBudgetLine(
        pb.GetBudgetLineRequest(context=query_context(), budget_line="home-care-fy2026")
    )

    assert [r.case_id for r in line.reservations] == ["case-1", "case-2"]
    assert reads == [("case-1", "case-2")]


async def test_a_budget_line_leaves_out_the_cases_its_reader_may_not_read(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    """A case manager reads the line's figures and the reservations of the cases they carry;
    the others are left out and each refusal recorded."""
    await _reserve_on_two_cases(stub, intake)
    after = (await deps.store.read_all())[-1].position
    dana = acting(Person("cm-dana", "case_manager"), common_pb2.QueryContext(purpose="direct_care"))

    line = await stub.GetBudgetLine(
        pb.GetBudgetLineRequest(context=dana, budget_line="home-care-fy2026")
    )

    assert [r.case_id for r in line.reservations] == ["case-1"]
    assert (line.reserved, line.reservations_total) == (usd(200), 2)
    accesses = await _accesses(deps, after)
    [read] = [a for a in accesses if isinstance(a, RecordAccessed)]
    assert (read.case_id, read.accessor_id) == ("case-1", "cm-dana")
    [denied] = [a for a in accesses if isinstance(a, RecordAccessDenied)]
    assert (denied.case_id, denied.rule) == ("case-2", "no-relationship")

    # Every case refused: the line's own figures are still answered, no reservation listed.
    other = acting(Person("cm-lee", "case_manager"), common_pb2.QueryContext(purpose="direct_care"))
    line = await stub.GetBudgetLine(
        pb.GetBudgetLineRequest(context=other, budget_line="home-care-fy2026")
    )
    assert (list(line.reservations), line.reserved) == ([], usd(200))


async def test_a_role_refused_a_budget_line_is_on_the_record(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    """A line lists reservations of cases: a caller refused it is refused a read of case data,
    recorded before the answer (under ``budget-line``, as planning's refused lists are under
    ``case-list``), whether the policy gives the role no case at all (the front desk) or
    coordination shows its records to its own readers only (a partner agency)."""
    await _reserve_on_two_cases(stub, intake)
    for role, purpose, rule in (
        ("receptionist", "direct_care", "role-not-allowed"),
        ("intake_worker", "direct_care", "role-not-allowed"),
        ("partner_agency", "coordination", "role-not-allowed"),
        ("client", "client_request", "role-not-allowed"),
    ):
        after = (await deps.store.read_all())[-1].position
        refusal = await refused(
            stub.GetBudgetLine(
                pb.GetBudgetLineRequest(
                    context=query_context(role, purpose), budget_line="home-care-fy2026"
                )
            )
        )
        assert refusal.code is grpc.StatusCode.PERMISSION_DENIED, role
        [denied] = await _accesses(deps, after)
        assert isinstance(denied, RecordAccessDenied), role
        assert (denied.case_id, denied.accessor_role, denied.purpose, denied.rule) == (
            "budget-line",
            role,
            purpose,
            rule,
        )


async def test_reservations_must_fit_the_line(
    stub: Stub, intake: IntakeFeed, issuer: TestIssuer, store: SqliteEventStore
) -> None:
    service_id = await _home_care(stub, intake, store)
    refusal = await refused(stub.ReserveBudget(reserve(usd(100))))
    assert refusal.rule == "BUDGET_LINE_DOES_NOT_FUND_SERVICE"
    refusal = await refused(
        stub.ReserveBudget(reserve(pb.Money(amount_minor_units=100, currency="EUR"), service_id))
    )
    assert refusal.fields == ["amount.currency"]
    refusal = await refused(stub.ReserveBudget(reserve(usd(0), service_id)))
    assert refusal.fields == ["amount"]
    refusal = await refused(stub.ReserveBudget(reserve(usd(100), "no-such-service")))
    assert refusal.code is grpc.StatusCode.NOT_FOUND
    refusal = await refused(stub.ReserveBudget(reserve(usd(100), service_id, line="nope")))
    assert refusal.code is grpc.StatusCode.NOT_FOUND
    # The flexible fund pays for anything, with or without a service.
    await stub.ReserveBudget(reserve(usd(100), line="flex"))
    request = reserve(usd(100), service_id)
    case_manager = Person("user-case_manager", "case_manager")
    refusal = await refused(
        stub.ReserveBudget(request, metadata=bearer_metadata(issuer.token_for(case_manager)))
    )
    assert refusal.code is grpc.StatusCode.PERMISSION_DENIED


async def test_a_service_may_be_topped_up_a_bounded_number_of_times(
    stub: Stub, intake: IntakeFeed, monkeypatch: pytest.MonkeyPatch, store: SqliteEventStore
) -> None:
    """A service's cost may grow (more hours): another reservation for it is a top-up. Each stays
    in the line's stream for good, so a line holds at most MAX_RESERVATIONS_PER_SERVICE for one
    service, released ones included, and MAX_RESERVATIONS_PER_CASE for a case naming none."""
    service_id = await _home_care(stub, intake, store)
    first = await stub.ReserveBudget(reserve(usd(100), service_id))
    for _ in range(MAX_RESERVATIONS_PER_SERVICE - 1):
        await stub.ReserveBudget(reserve(usd(100), service_id))
    await stub.ReleaseBudget(
        pb.ReleaseBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="home-care-fy2026",
            reservation_id=first.reservation_id,
            reason="fewer hours needed",
        )
    )

    refusal = await refused(stub.ReserveBudget(reserve(usd(100), service_id)))

    assert refusal.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.rule == "TOO_MANY_RESERVATIONS"
    assert refusal.metadata == {
        "subject": f"service/{service_id}",
        "budget_line": "home-care-fy2026",
        "limit": str(MAX_RESERVATIONS_PER_SERVICE),
    }
    assert f"{MAX_RESERVATIONS_PER_SERVICE} reservations for service {service_id}" in (
        refusal.message
    )
    line = await stub.GetBudgetLine(
        pb.GetBudgetLineRequest(context=query_context(), budget_line="home-care-fy2026")
    )
    assert line.reservations_total == MAX_RESERVATIONS_PER_SERVICE
    # Another line may still fund the service, and the case itself (no service) has its own.
    await stub.ReserveBudget(reserve(usd(100), service_id, line="flex"))
    monkeypatch.setattr(funding, "MAX_RESERVATIONS_PER_CASE", 2)
    for _ in range(2):
        await stub.ReserveBudget(reserve(usd(100), line="flex"))
    refusal = await refused(stub.ReserveBudget(reserve(usd(100), line="flex")))
    assert (refusal.rule, refusal.metadata["subject"], refusal.metadata["limit"]) == (
        "TOO_MANY_RESERVATIONS",
        "case/case-1",
        "2",
    )


async def test_a_release_gives_back_at_most_what_is_reserved(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    service_id = await _home_care(stub, intake, store)
    reserved = await stub.ReserveBudget(reserve(usd(1_000), service_id))

    def release(amount: pb.Money | None = None) -> pb.ReleaseBudgetRequest:
        return pb.ReleaseBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="home-care-fy2026",
            reservation_id=reserved.reservation_id,
            amount=amount,
            reason="service cancelled",
        )

    refusal = await refused(stub.ReleaseBudget(release(usd(1_001))))
    assert (refusal.rule, refusal.metadata["remaining"]) == ("RELEASE_EXCEEDS_RESERVATION", "1000")
    everything = await stub.ReleaseBudget(release())
    assert everything.available == usd(100_000)
    refusal = await refused(stub.ReleaseBudget(release()))
    assert refusal.rule == "RESERVATION_ALREADY_RELEASED"


async def test_insurance_claims_are_filed_and_decided(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    service_id = await _home_care(stub, intake, store)

    def claim(service_ids: list[str]) -> pb.FileInsuranceClaimRequest:
        return pb.FileInsuranceClaimRequest(
            context=command_context("case_manager"),
            case_id="case-1",
            insurer=INSURER,
            policy_number="1EG4-TE5-MK72",
            amount_claimed=usd(12_000),
            service_ids=service_ids,
        )

    refusal = await refused(stub.FileInsuranceClaim(claim([])))
    assert refusal.fields == ["service_ids"]
    refusal = await refused(stub.FileInsuranceClaim(claim(["no-such-service"])))
    assert refusal.code is grpc.StatusCode.NOT_FOUND
    refusal = await refused(stub.FileInsuranceClaim(claim([service_id])))
    assert (refusal.code, refusal.rule) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "SERVICE_NOT_DELIVERED",
    )
    await deliver(stub, service_id)
    filed = await stub.FileInsuranceClaim(claim([service_id]))
    refusal = await refused(stub.FileInsuranceClaim(claim([service_id])))
    assert (refusal.rule, refusal.metadata["claim_id"]) == (
        "SERVICE_ALREADY_CLAIMED",
        filed.claim_id,
    )

    def decision(**fields: object) -> pb.RecordClaimDecisionRequest:
        values: dict[str, object] = {
            "insurer_id": "medicare",
            "decision": "partial",
            "amount_approved": usd(9_000),
            "reason": "two hours not covered",
            **fields,
        }
        return pb.RecordClaimDecisionRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            claim_id=filed.claim_id,
            **values,  # type: ignore[arg-type]
        )

    refusal = await refused(stub.RecordClaimDecision(decision(decision="denied", reason="")))
    assert sorted(refusal.fields) == ["amount_approved", "reason"]
    refusal = await refused(stub.RecordClaimDecision(decision(insurer_id="aetna")))
    assert refusal.rule == "INSURER_MISMATCH"
    refusal = await refused(stub.RecordClaimDecision(decision(amount_approved=usd(12_001))))
    assert refusal.rule == "APPROVED_AMOUNT_EXCEEDS_CLAIM"
    # Approved is paid in full; anything less is partial, with its reason.
    for wrong in (decision(decision="approved"), decision(amount_approved=usd(12_000))):
        refusal = await refused(stub.RecordClaimDecision(wrong))
        assert (refusal.code, refusal.fields) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            ["amount_approved"],
        )
    await stub.RecordClaimDecision(decision())
    refusal = await refused(stub.RecordClaimDecision(decision()))
    assert (refusal.rule, refusal.metadata["decision"]) == ("CLAIM_ALREADY_DECIDED", "partial")
    view = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(context=query_context(), case_id="case-1")
    )
    [claimed] = view.claims
    assert (claimed.status, claimed.amount_approved) == ("partial", usd(9_000))


async def test_a_cancelled_service_is_neither_funded_nor_claimed(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    service_id = await _home_care(stub, intake, store)
    await stub.CancelService(
        pb.CancelServiceRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            service_id=service_id,
            cancelled_by="client",
            reason="in hospital",
        )
    )
    refusal = await refused(stub.ReserveBudget(reserve(usd(100), service_id)))
    assert refusal.rule == "SERVICE_CANCELLED"
    refusal = await refused(
        stub.FileInsuranceClaim(
            pb.FileInsuranceClaimRequest(
                context=command_context("coordinator"),
                case_id="case-1",
                insurer=INSURER,
                amount_claimed=usd(100),
                service_ids=[service_id],
            )
        )
    )
    assert refusal.rule == "SERVICE_CANCELLED"


async def test_a_programme_without_rules_needs_no_facts(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.SOCIALISATION])
    await carried_by(store, "case-1")
    decided = await stub.DetermineEligibility(
        pb.DetermineEligibilityRequest(
            context=command_context("case_manager"), case_id="case-1", program_id="open-door"
        )
    )
    assert decided.eligible
    programs = await stub.ListPrograms(pb.ListProgramsRequest(context=query_context()))
    rules = {program.program_id: list(program.rules) for program in programs.programs}
    assert rules == {
        "home-care-medicaid-waiver": [
            "age at least 65",
            "monthly income at most 2901.00 USD",
            "residence in us-ca-alameda",
        ],
        "open-door": [],
    }
