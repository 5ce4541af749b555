"""``AccessControl.release`` fails closed: an answer part whose decision discloses none of its
sections, or leaves one undisclosed that it cannot withhold, is refused and recorded, never
answered (a partner whose consent covers its referral but not who the client is)."""

from __future__ import annotations

import pytest

from casetrail.intake.v1 import intake_pb2
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import (
    SECTIONS_NOT_COVERED,
    AccessControl,
    AccessDenied,
    Disclosure,
    access_stream,
)
from casetrail_platform.policy.vocabulary import Action, Decision
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import AccessPurpose, RecordAccessDenied, RecordAccessed, RecordSection
from events.catalog.base import Role

PARTNER = Principal("harbour", Role.PARTNER_AGENCY, "harbour", "test-issuer")
REFERRALS_ONLY = Decision(True, "referral-recipient", sections=frozenset({RecordSection.REFERRALS}))
IDENTITY_ONLY = Decision(True, "referral-recipient", sections=frozenset({RecordSection.IDENTITY}))
CASE = "case-1"
IDENTITY = (RecordSection.IDENTITY,)
CASE_SECTIONS = (RecordSection.IDENTITY, RecordSection.ASSESSMENT)


def _record() -> intake_pb2.GetCaseResponse:
    answer = intake_pb2.GetCaseResponse()
    answer.record.case_id = CASE
    answer.record.client.client_id = "client-1"
    answer.record.client.name.family_name = "Conti"
    answer.record.presenting_needs.add(category="housing")
    return answer


async def _recorded(store: SqliteEventStore) -> list[object]:
    return [recorded.event for recorded in await store.read_stream(access_stream(CASE))]


@pytest.mark.parametrize(
    "item",
    [
        # Who the client is, with nothing in the message to withhold it by.
        Disclosure(CASE, REFERRALS_ONLY, _record(), (), IDENTITY),
        # The same about a message-less part (its data sit elsewhere in the answer).
        Disclosure(CASE, REFERRALS_ONLY, None, (), IDENTITY),
        # Every section could be withheld, but then the part would show none of them.
        Disclosure(
            CASE,
            REFERRALS_ONLY,
            _record(),
            (),
            CASE_SECTIONS,
            section_paths={
                RecordSection.IDENTITY: ("record.client",),
                RecordSection.ASSESSMENT: ("record.presenting_needs",),
            },
        ),
        # One section disclosed, another undisclosed with no place to withhold it from.
        Disclosure(CASE, IDENTITY_ONLY, _record(), (), CASE_SECTIONS),
    ],
)
async def test_a_part_showing_sections_its_decision_does_not_cover_is_refused_and_recorded(
    access: AccessControl, store: SqliteEventStore, item: Disclosure
) -> None:
    with pytest.raises(AccessDenied) as refused:
        await access.release(
            None, PARTNER, AccessPurpose.COORDINATION, [item], action=Action.READ_CLIENT
        )
    assert refused.value.reason == "SECTIONS_NOT_COVERED"
    [denied] = await _recorded(store)
    assert isinstance(denied, RecordAccessDenied)
    assert (denied.rule, denied.action, denied.accessor_id) == (
        SECTIONS_NOT_COVERED,
        Action.READ_CLIENT.value,
        PARTNER.subject,
    )


async def test_a_part_whose_undisclosed_sections_can_be_withheld_is_answered_without_them(
    access: AccessControl, store: SqliteEventStore
) -> None:
    answer = _record()
    item = Disclosure(
        CASE,
        IDENTITY_ONLY,
        answer,
        (),
        CASE_SECTIONS,
        section_paths={RecordSection.ASSESSMENT: ("record.presenting_needs",)},
    )
    await access.release(None, PARTNER, AccessPurpose.COORDINATION, [item])
    assert (answer.record.client.name.family_name, list(answer.record.presenting_needs)) == (
        "Conti",
        [],
    )
    [accessed] = await _recorded(store)
    assert isinstance(accessed, RecordAccessed)
    assert list(accessed.sections) == [RecordSection.IDENTITY]


async def test_a_refused_part_stops_the_whole_answer_before_anything_is_recorded(
    access: AccessControl, store: SqliteEventStore
) -> None:
    shown = Disclosure("case-2", IDENTITY_ONLY, None, (), IDENTITY)
    withheld = Disclosure(CASE, REFERRALS_ONLY, None, (), IDENTITY)
    with pytest.raises(AccessDenied):
        await access.release(None, PARTNER, AccessPurpose.COORDINATION, [shown, withheld])
    assert await store.read_stream(access_stream("case-2")) == []
    assert [type(e) for e in await _recorded(store)] == [RecordAccessDenied]


async def test_a_part_naming_no_section_shows_no_case_and_is_not_recorded(
    access: AccessControl, store: SqliteEventStore
) -> None:
    ledger = Decision(True, "ledger-review")
    await access.release(
        None, PARTNER, AccessPurpose.COORDINATION, [Disclosure(CASE, ledger, None, (), ())]
    )
    assert await _recorded(store) == []


async def test_the_access_recorded_names_every_consent_its_decision_rested_on(
    access: AccessControl, store: SqliteEventStore
) -> None:
    """A partner reads under each accepted referral's own consent: its access record names
    them all, as audit's log and the client's accounting must."""
    both = ("consent-1", "consent-2")
    decision = Decision(
        True, "referral-recipient", sections=frozenset({RecordSection.REFERRALS}), consent_ids=both
    )
    item = Disclosure(CASE, decision, None, (), (RecordSection.REFERRALS,))
    await access.release(None, PARTNER, AccessPurpose.COORDINATION, [item])
    [accessed] = await _recorded(store)
    assert isinstance(accessed, RecordAccessed)
    assert accessed.consent_ids == both
