"""DetermineEligibility's texts stay within what its event holds: the residence is checked as it
is recorded (in lower case), and quoted in a reason of at most 500 characters. A refusal names
``facts.residence``, never the event's ``reasons.N``, which nobody sent, and the store never
takes an event its readers refuse."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from events.catalog.base import Role
from events.catalog.eligibility import EligibilityDetermined, EligibilityFacts
from events.catalog.values import NeedCategory
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain.agency import Program
from services.coordination.domain.eligibility import evaluate
from services.coordination.domain.facts import case_stream
from tests.unit.coordination.rpc import eligibility, refused, usd
from tests.unit.coordination.support import IntakeFeed, carried_by

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

WAIVER = "home-care-medicaid-waiver"  # age, income and residence in us-ca-alameda


async def _said(stub: Stub, request: object) -> dict[str, str]:
    refusal = await refused(stub.DetermineEligibility(request))
    assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
    bad = refusal.detail(error_details_pb2.BadRequest)
    return {violation.field: violation.description for violation in bad.field_violations}


async def _decisions(deps: Dependencies) -> list[EligibilityDetermined]:
    stream = await deps.store.read_stream(case_stream("case-1"))
    return [r.event for r in stream if isinstance(r.event, EligibilityDetermined)]


async def test_a_residence_longer_in_lower_case_is_refused_and_nothing_is_stored(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    """In lower case "İ" is two characters: 400 of them were recorded as 800, in an event no
    reader accepts (the old code: accepted, then the case's stream could not be read)."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(deps.store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)
    said = await _said(stub, eligibility("open-door", residence="İ" * 400))
    assert said == {"facts.residence": "at most 500 characters"}
    assert await _decisions(deps) == []
    await stub.DetermineEligibility(eligibility("open-door", residence="İ" * 250))
    [decided] = await _decisions(deps)
    assert decided.facts.residence == "i̇" * 250


async def test_a_residence_its_reason_cannot_hold_is_refused_naming_it(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    """The old code: "reasons.2: at most 500 characters"."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(deps.store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)

    def asking(residence: str) -> object:
        return eligibility(WAIVER, age=70, monthly_income=usd(100), residence=residence)

    room = 500 - len("residence  is outside the programme's area (us-ca-alameda)")
    said = await _said(stub, asking("x" * (room + 1)))
    assert said == {
        "facts.residence": f"at most {room} characters for programme {WAIVER}: the decision's"
        " reason quotes it"
    }
    assert await _decisions(deps) == []
    decided = await stub.DetermineEligibility(asking("x" * room))
    assert len(decided.reasons[-1]) == 500


async def test_a_megabyte_of_residence_is_refused_at_the_edge_naming_it(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    said = await _said(stub, eligibility("open-door", residence="x" * 1_000_000))
    assert said == {"facts.residence": "at most 20000 characters"}  # the edge's, for any text
    said = await _said(stub, eligibility("open-door", residence="x" * 20_000))
    assert said == {"facts.residence": "at most 500 characters"}  # the catalog's
    assert await _decisions(deps) == []


async def test_a_blank_residence_is_refused_with_its_bounds(
    stub: Stub, intake: IntakeFeed, deps: Dependencies
) -> None:
    """Blank is not left out (left out, the rules needing it say so): it is refused as an
    empty text is, with the bounds (the old code said only "required")."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    said = await _said(stub, eligibility("open-door", residence="   "))
    assert said == {"facts.residence": "required, 1-500 characters"}
    assert await _decisions(deps) == []


def test_an_area_too_long_to_list_in_the_reason_is_counted() -> None:
    """The old code listed all of it: a reason of 1,300 characters no event may hold."""
    codes = tuple(f"us-ca-{n:06d}" for n in range(100))
    program = Program(program_id="county-wide", name="County wide", residence_in=codes)
    eligible, [reason] = evaluate(program, EligibilityFacts(residence="us-ca-000007"))
    assert eligible
    assert reason == "residence us-ca-000007 is in the programme's area (100 jurisdictions)"


def test_a_programme_name_too_long_for_the_reason_is_not_quoted() -> None:
    """The old code quoted it: a reason of 530 characters no event may hold, so every decision
    on the programme was refused "reasons.0: at most 500 characters"."""
    program = Program(program_id="long-name", name="n" * 500)
    assert evaluate(program, EligibilityFacts()) == (
        True,
        ["the programme has no eligibility conditions"],
    )


@pytest.mark.parametrize("residence", ["US-CA-ALAMEDA", "us-ca-alameda"])
def test_the_residence_is_held_as_compared(residence: str) -> None:
    from services.coordination.domain.commands import DetermineEligibility

    for facts in (EligibilityFacts(residence=residence), {"residence": residence}):
        command = DetermineEligibility.model_validate(
            {"case_id": "case-1", "program_id": WAIVER, "facts": facts}
        )
        assert command.facts.residence == "us-ca-alameda"
