"""A wrong date of birth corrected end to end, on both backends: coordination refuses the age
the record contradicts, intake corrects the record, and eligibility then rests on the
corrected date."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.ages import age_on
from cli.rpc import Person, command, eventually, query, refusal_of, timestamp
from cli.walk.story import AUDITOR, COORDINATOR, HOME_CARE_PROGRAM, RECEPTIONIST, SOCIAL_WORKER
from tests.e2e.conftest import Casetrail
from tests.e2e.support import casetrail_cli, new_case
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")

DPO = Person("dpo-erin-walsh", "supervisor")
RIGHT = "1950-03-14"
WRONG = "1995-03-14"  # intake typed 95 for 50: a client of 76 or so recorded as about 31


def deciding(case_id: str, age: int | None = None) -> co.DetermineEligibilityRequest:
    request = co.DetermineEligibilityRequest(
        context=command(key()),
        case_id=case_id,
        program_id=HOME_CARE_PROGRAM,
        facts=co.EligibilityFacts(
            monthly_income=co.Money(amount_minor_units=185_000, currency="USD"),
            household_size=1,
            residence="us-ca-alameda",
        ),
    )
    if age is not None:
        request.facts.age = age
    return request


async def test_a_wrong_date_of_birth_is_corrected_and_eligibility_rests_on_it(
    casetrail: Casetrail,
) -> None:
    stubs = casetrail.stubs
    case = await new_case(casetrail, "home_care", born=WRONG)
    # Eligibility is decided by the case's worker.
    await stubs.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(
            context=command(key()), case_id=case.case_id, worker_id=SOCIAL_WORKER.user_id
        )
    )
    age = age_on(date.fromisoformat(RIGHT), datetime.now(UTC).date())

    # Decided on the record: too young for the programme.
    wrongly = await eventually(
        lambda: stubs.as_(SOCIAL_WORKER).coordination.DetermineEligibility(deciding(case.case_id)),
        what="coordination to learn the (wrong) date of birth",
        patience=casetrail.patience,
        retry=lambda refusal: refusal.reason == "CLIENT_AGE_NOT_KNOWN",
    )
    assert not wrongly.eligible
    # The worker who knows the client's age is refused, and told the way out.
    with pytest.raises(grpc.aio.AioRpcError) as contradicted:
        await stubs.as_(SOCIAL_WORKER).coordination.DetermineEligibility(
            deciding(case.case_id, age)
        )
    refused = refusal_of(contradicted.value)
    assert refused.reason == "AGE_CONTRADICTS_DATE_OF_BIRTH"
    assert refused.metadata["suggested_action"] == "CorrectClientDateOfBirth"

    # The receptionist may not rewrite the record; the coordinator may.
    correct = intake_pb2.CorrectClientDateOfBirthRequest(
        context=command(key()),
        client_id=case.client_id,
        date_of_birth=RIGHT,
        reason="Identity card seen at the first home visit",
    )
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stubs.as_(RECEPTIONIST).intake.CorrectClientDateOfBirth(correct)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    before_correction = datetime.now(UTC)
    corrected = await stubs.as_(COORDINATOR).intake.CorrectClientDateOfBirth(correct)
    assert corrected.result.event_ids
    client = await stubs.as_(COORDINATOR).intake.GetClient(
        intake_pb2.GetClientRequest(context=query("coordination"), client_id=case.client_id)
    )
    assert client.client.date_of_birth == RIGHT
    # Duplicate detection matches the person on the corrected date (the directory moved).
    found = await stubs.as_(COORDINATOR).intake.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(
            context=query("coordination"), name=client.client.name, date_of_birth=RIGHT
        )
    )
    assert case.client_id in [c.client_id for c in found.candidates]

    # The same request again under a new key: nothing left to correct, the field named.
    again = intake_pb2.CorrectClientDateOfBirthRequest()
    again.CopyFrom(correct)
    again.context.idempotency_key = key()
    with pytest.raises(grpc.aio.AioRpcError) as unchanged:
        await stubs.as_(COORDINATOR).intake.CorrectClientDateOfBirth(again)
    assert unchanged.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "date_of_birth" in refusal_of(unchanged.value).field_violations
    assert RIGHT not in (unchanged.value.details() or "")

    decided = await eventually(
        lambda: stubs.as_(SOCIAL_WORKER).coordination.DetermineEligibility(
            deciding(case.case_id, age)
        ),
        what="coordination to learn the corrected date of birth",
        patience=casetrail.patience,
        retry=lambda refusal: refusal.reason == "AGE_CONTRADICTS_DATE_OF_BIRTH",
    )
    assert decided.eligible
    assert decided.reasons[0] == f"age {age} is at least the minimum of 65"

    # The auditor replaying the case sees both decisions' ground: the correction in the case's
    # timeline, and the client's date of birth as known before it and after it.
    review = query("confidentiality_review")
    timeline = await eventually(
        lambda: stubs.as_(AUDITOR).audit.GetTimeline(
            audit_pb2.GetTimelineRequest(
                context=review,
                case_id=case.case_id,
                event_types=["casetrail.client.date_of_birth_corrected"],
            )
        ),
        lambda answer: len(answer.entries) == 1,
        what="audit to show the correction in the case's timeline",
        patience=casetrail.patience,
    )
    assert timeline.entries[0].event_id == corrected.result.event_ids[0]
    assert timeline.entries[0].source == "casetrail/intake"

    async def born(moment: datetime) -> str:
        answer = await stubs.as_(AUDITOR).audit.GetCaseStateAsOf(
            audit_pb2.GetCaseStateAsOfRequest(
                context=review,
                case_id=case.case_id,
                as_of=timestamp(moment),
                basis=audit_pb2.TIME_BASIS_RECORDED,
            )
        )
        return str(answer.state.client_date_of_birth)

    assert await born(before_correction) == WRONG
    assert await born(datetime.now(UTC)) == RIGHT


async def test_the_clients_own_commands_are_not_dated_before_what_they_follow(
    casetrail: Casetrail,
) -> None:
    """A correction dated before the registration and a hold's release dated before the hold
    was placed are refused naming ``context.occurred_at``, nothing written: accepted, audit's
    client record as it happened (``basis`` occurred, which folds by the moments stated)
    showed the wrong date of birth and the released hold in force for good, while intake's
    record and audit's as recorded had the corrected date and no hold."""
    stubs = casetrail.stubs
    case = await new_case(casetrail, "home_care", born=WRONG)
    before = datetime.now(UTC) - timedelta(days=30)  # before the registration

    def correcting(at: datetime | None) -> intake_pb2.CorrectClientDateOfBirthRequest:
        return intake_pb2.CorrectClientDateOfBirthRequest(
            context=command(key(), at=at),
            client_id=case.client_id,
            date_of_birth=RIGHT,
            reason="Identity card seen",
        )

    with pytest.raises(grpc.aio.AioRpcError) as backdated:
        await stubs.as_(COORDINATOR).intake.CorrectClientDateOfBirth(correcting(before))
    assert backdated.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, problem)] = refusal_of(backdated.value).field_violations.items()
    assert field == "context.occurred_at"
    assert f"must not be before client {case.client_id} was registered" in problem
    await stubs.as_(COORDINATOR).intake.CorrectClientDateOfBirth(correcting(None))

    held = await stubs.as_(DPO).intake.PlaceRetentionHold(
        intake_pb2.PlaceRetentionHoldRequest(
            context=command(key()), client_id=case.client_id, legal_basis="Court order 12/345"
        )
    )

    def releasing(at: datetime | None) -> intake_pb2.ReleaseRetentionHoldRequest:
        return intake_pb2.ReleaseRetentionHoldRequest(
            context=command(key(), at=at),
            client_id=case.client_id,
            hold_id=held.hold_id,
            reason="Proceedings ended",
        )

    with pytest.raises(grpc.aio.AioRpcError) as released_early:
        await stubs.as_(DPO).intake.ReleaseRetentionHold(releasing(before))
    assert released_early.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, problem)] = refusal_of(released_early.value).field_violations.items()
    assert field == "context.occurred_at"
    assert f"must not be before retention hold {held.hold_id} was placed" in problem
    await stubs.as_(DPO).intake.ReleaseRetentionHold(releasing(None))

    async def client_on(basis: audit_pb2.TimeBasis.ValueType) -> audit_pb2.CaseState:
        audit = stubs.as_(AUDITOR).audit
        answer: audit_pb2.GetCaseStateAsOfResponse = await audit.GetCaseStateAsOf(
            audit_pb2.GetCaseStateAsOfRequest(
                context=query("confidentiality_review"), case_id=case.case_id, basis=basis
            )
        )
        return answer.state

    await eventually(
        lambda: client_on(audit_pb2.TIME_BASIS_RECORDED),
        lambda state: state.client_date_of_birth == RIGHT and not state.client_retention_hold_ids,
        what="audit to hold the correction and the release",
        patience=casetrail.patience,
    )
    as_it_happened = await client_on(audit_pb2.TIME_BASIS_OCCURRED)
    assert as_it_happened.client_date_of_birth == RIGHT
    assert list(as_it_happened.client_retention_hold_ids) == []


async def test_a_worker_with_no_part_in_the_client_may_not_correct(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "home_care", born=WRONG)
    stranger = Person("cm-no-part", "case_manager")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await casetrail.stubs.as_(stranger).intake.CorrectClientDateOfBirth(
            intake_pb2.CorrectClientDateOfBirthRequest(
                context=command(key()),
                client_id=case.client_id,
                date_of_birth=RIGHT,
                reason="Told so on the phone",
            )
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refusal_of(denied.value).reason == "NO_RELATIONSHIP"


async def test_the_cli_corrects_a_date_of_birth(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "home_care", born=WRONG)
    caller = ["--intake", casetrail.addresses["intake"], "--token", casetrail.tokens(COORDINATOR)]

    status, out, err = await casetrail_cli(
        "client", "correct-birth-date", case.client_id, "--date", "2199-01-01",
        "--reason", "Typed from the passport", *caller,
    )  # fmt: skip
    assert (status, "date_of_birth" in err) == (1, True), err
    status, out, err = await casetrail_cli(
        "client", "correct-birth-date", case.client_id, "--date", RIGHT,
        "--reason", "Typed from the passport", *caller,
    )  # fmt: skip
    assert status == 0, err
    assert f"client {case.client_id}: date of birth corrected" in out
    assert RIGHT not in out  # personal data, never printed
    client = await casetrail.stubs.as_(COORDINATOR).intake.GetClient(
        intake_pb2.GetClientRequest(context=query("coordination"), client_id=case.client_id)
    )
    assert client.client.date_of_birth == RIGHT
