"""Coordination's facts from intake under out-of-order delivery: an event set aside (dead-lettered,
parked) and delivered after later events of its stream leaves the facts as an in-order delivery
(a rebuild) builds them."""

from __future__ import annotations

from datetime import date

from casetrail_platform.projections.port import Document
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from events.catalog.assessment import AssessedNeed, AssessmentFactors, InitialAssessmentRecorded
from events.catalog.cases import CaseOpened, PresentingNeed, ReferralSource, ReferralSourceKind
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered, PersonName
from events.catalog.values import NeedCategory, Urgency
from events.envelope import RecordedEvent
from services.coordination.adapters import read_models as views
from services.coordination.adapters.projections import CASE_FACTS, CaseFactsProjection
from tests.unit.coordination.support import IntakeFeed


async def test_a_replayed_registration_does_not_bring_back_a_corrected_date_of_birth(
    intake: IntakeFeed, read_models: SqliteReadModelStore
) -> None:
    registered = intake.record(
        ClientRegistered(
            client_id="client-1",
            name=PersonName(given_names="Walter", family_name="Brenner"),
            date_of_birth=date(1950, 1, 1),
        ),
        "client-client-1",
    )
    corrected = intake.record(
        ClientDateOfBirthCorrected(
            client_id="client-1", date_of_birth=date(1940, 1, 1), reason="Birth certificate seen"
        ),
        "client-client-1",
    )
    await intake.handler(corrected)
    await intake.handler(registered)  # dead-lettered, replayed after the correction

    assert await views.date_of_birth(read_models, "client-1") == date(1940, 1, 1)


def _opening(intake: IntakeFeed) -> list[RecordedEvent]:
    opened = CaseOpened(
        case_id="case-1",
        client_id="client-1",
        referral_source=ReferralSource(kind=ReferralSourceKind.HOSPITAL),
        presenting_needs=(
            PresentingNeed(category=NeedCategory.HOME_CARE),
            PresentingNeed(category=NeedCategory.HEALTH),
        ),
    )
    assessed = InitialAssessmentRecorded(
        case_id="case-1",
        assessment_id="assessment-1",
        factors=AssessmentFactors(social="lives alone"),
        needs=(
            AssessedNeed(category=NeedCategory.COUNSELING, urgency=Urgency.SOON),
            AssessedNeed(category=NeedCategory.HEALTH, urgency=Urgency.SOON),
        ),
    )
    return [intake.record(opened, "case-case-1"), intake.record(assessed, "case-case-1")]


async def _facts(read_models: SqliteReadModelStore) -> Document | None:
    return await read_models.get(CASE_FACTS, "case-1")


async def test_an_opening_delivered_after_the_assessment_gives_the_facts_of_in_order(
    intake: IntakeFeed, read_models: SqliteReadModelStore
) -> None:
    events = _opening(intake)
    for recorded in events:
        await intake.handler(recorded)
    in_order = await _facts(read_models)

    projection = CaseFactsProjection()
    await read_models.reset(projection.name, projection.collections)
    for recorded in reversed(events):
        await intake.handler(recorded)

    assert await _facts(read_models) == in_order
    facts = await views.case_facts(read_models, "case-1")
    assert facts is not None
    assert facts.needs == (NeedCategory.HOME_CARE, NeedCategory.HEALTH, NeedCategory.COUNSELING)
