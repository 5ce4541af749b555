"""``AccessControl.reader_facts``: a read whose right may rest on a relationship an event ends
waits for the policy's facts to hold the case's facts on the bus (``case_facts_caught_up``);
other readers, whose right no event ends, ask nothing (README, "A transfer not delivered
yet")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from casetrail_platform.commands import NotCaughtUp
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.decide import may_rest_on_ended
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.policy.vocabulary import Action
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import AccessPurpose
from events.catalog.base import Role

CASE = "case-1"
P = AccessPurpose


@pytest.mark.parametrize(
    ("role", "action", "purpose", "waits"),
    [
        (Role.SOCIAL_WORKER, Action.READ_CASE, P.DIRECT_CARE, True),
        (Role.CASE_MANAGER, Action.LIST_CASES, P.COORDINATION, True),
        (Role.SUPERVISOR, Action.READ_CASE, P.SUPERVISION, True),
        (Role.PARTNER_AGENCY, Action.READ_CLIENT, P.COORDINATION, True),
        (Role.COORDINATOR, Action.READ_CASE, P.COORDINATION, False),
        (Role.INTAKE_WORKER, Action.READ_CASE, P.DIRECT_CARE, False),
        (Role.AUDITOR, Action.READ_CASE, P.CONFIDENTIALITY_REVIEW, False),
        (Role.CLIENT, Action.READ_CASE, P.CLIENT_REQUEST, False),
        # Break the glass: the access ends by the clock, or earlier by its closing (an event).
        (Role.SOCIAL_WORKER, Action.READ_CASE, P.EMERGENCY, True),
        # No rule fits: refused whatever the facts say, so nothing to wait for.
        (Role.SOCIAL_WORKER, Action.READ_CASE, P.SUPERVISION, False),
    ],
)
def test_who_waits_is_who_an_event_can_take_the_right_from(
    role: Role, action: Action, purpose: AccessPurpose, waits: bool
) -> None:
    assert may_rest_on_ended(role, action, purpose) is waits


class Barrier:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def __call__(self, case_id: str) -> bool:
        self.asked.append(case_id)
        return self.answer


@pytest.fixture
async def read_models(tmp_path: Path) -> AsyncIterator[SqliteReadModelStore]:
    opened = SqliteReadModelStore(tmp_path / "facts.db")
    yield opened
    await opened.close()


def control(
    store: SqliteEventStore, read_models: SqliteReadModelStore, barrier: Barrier
) -> AccessControl:
    return AccessControl(
        store, CaseFactsReader(read_models), "casetrail/planning", case_facts_caught_up=barrier
    )


WORKER = Principal("sw-ana", Role.SOCIAL_WORKER, "eastbay-dss", "test", team="team-east")
COORDINATOR = Principal("co-lee", Role.COORDINATOR, "eastbay-dss", "test")


async def test_a_worker_s_read_waits_and_is_not_decided_when_the_facts_trail(
    store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    barrier = Barrier(answer=False)
    access = control(store, read_models, barrier)

    with pytest.raises(NotCaughtUp) as raised:
        await access.reader_facts(WORKER, Action.READ_CASE, P.DIRECT_CARE, CASE)
    assert raised.value.case_id == CASE
    assert barrier.asked == [CASE]

    barrier.answer = True
    facts = await access.reader_facts(WORKER, Action.READ_CASE, P.DIRECT_CARE, CASE)
    assert facts.case_id == CASE


async def test_a_coordinator_s_read_asks_nothing(
    store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    barrier = Barrier(answer=False)
    access = control(store, read_models, barrier)

    facts = await access.reader_facts(COORDINATOR, Action.READ_CASE, P.COORDINATION, CASE)
    assert facts.case_id == CASE
    assert barrier.asked == []


class OneBehind(Barrier):
    """Caught up for every case but ``behind``."""

    def __init__(self, behind: str) -> None:
        super().__init__(answer=True)
        self.behind = behind

    async def __call__(self, case_id: str) -> bool:
        self.asked.append(case_id)
        return case_id != self.behind


async def test_a_worker_s_list_waits_for_each_case_and_is_not_decided_when_one_trails(
    store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    barrier = OneBehind("case-2")
    access = control(store, read_models, barrier)
    listed = ["case-1", "case-2", "case-3", "case-1"]

    with pytest.raises(NotCaughtUp) as raised:
        await access.reader_facts_of(WORKER, Action.LIST_CASES, P.DIRECT_CARE, listed)
    assert raised.value.case_id == "case-2"
    assert sorted(barrier.asked) == ["case-1", "case-2", "case-3"]  # each case once

    barrier.behind = "none"
    facts = await access.reader_facts_of(WORKER, Action.LIST_CASES, P.DIRECT_CARE, listed)
    assert list(facts) == ["case-1", "case-2", "case-3"]

    barrier.asked.clear()
    await access.reader_facts_of(COORDINATOR, Action.LIST_CASES, P.COORDINATION, listed)
    assert barrier.asked == []
