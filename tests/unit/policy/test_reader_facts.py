"""``AccessControl.reader_facts``: a read whose right may rest on a relationship an event ends
waits for the policy's facts to hold the case's facts on the bus (``case_facts_caught_up``);
other readers, whose right no event ends, ask nothing (README, "A transfer not delivered
yet")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.rpc import error_details_pb2

from casetrail_platform.commands import NotCaughtUp
from casetrail_platform.grpc_platform.errors import status_for
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.decide import may_rest_on_ended
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.policy.vocabulary import Action
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import AccessPurpose
from events.catalog.base import Role
from tests.support.grpc import details, mentions

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
        store,
        CaseFactsReader(read_models),
        "casetrail/planning",
        home_agency=DEFAULT_HOME_AGENCY,
        case_facts_caught_up=barrier,
    )


WORKER = Principal("sw-ana", Role.SOCIAL_WORKER, "eastbay-dss", "test", team="team-east")
COORDINATOR = Principal("co-lee", Role.COORDINATOR, "eastbay-dss", "test")


async def test_a_worker_s_read_waits_and_is_not_decided_when_the_facts_trail(
    store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    barrier = Barrier(answer=False)
    access = control(store, read_models, barrier)

    with pytest.raises(NotCaughtUp) as raised:
        await access.reader_facts(WORKER, Action.READ_CASE, P.DIRECT_CARE, CASE, subject=CASE)
    assert (raised.value.subject, raised.value.what) == (CASE, "the case's relationships")
    assert barrier.asked == [CASE]

    barrier.answer = True
    facts = await access.reader_facts(WORKER, Action.READ_CASE, P.DIRECT_CARE, CASE, subject=CASE)
    assert facts.case_id == CASE


async def test_a_coordinator_s_read_asks_nothing(
    store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    barrier = Barrier(answer=False)
    access = control(store, read_models, barrier)

    facts = await access.reader_facts(
        COORDINATOR, Action.READ_CASE, P.COORDINATION, CASE, subject=CASE
    )
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
        await access.reader_facts_of(
            WORKER, Action.LIST_CASES, P.DIRECT_CARE, listed, subject="case-list"
        )
    assert raised.value.subject == "case-list"
    assert sorted(barrier.asked) == ["case-1", "case-2", "case-3"]  # each case once

    barrier.behind = "none"
    facts = await access.reader_facts_of(
        WORKER, Action.LIST_CASES, P.DIRECT_CARE, listed, subject="case-list"
    )
    assert list(facts) == ["case-1", "case-2", "case-3"]

    barrier.asked.clear()
    await access.reader_facts_of(
        COORDINATOR, Action.LIST_CASES, P.COORDINATION, listed, subject="case-list"
    )
    assert barrier.asked == []


LOOKED_UP = "case-looked-up-9"
"""A case found for the request (a client's, a list's), not named in it."""


@pytest.mark.parametrize(
    "subject", ["case-list", "client-7f3a", "budget-2030-home-care", "client-search"]
)
async def test_facts_not_caught_up_name_what_was_asked_never_a_case_looked_up_for_it(
    store: SqliteEventStore, read_models: SqliteReadModelStore, subject: str
) -> None:
    """Nothing is decided yet: naming the trailing case would tell the caller that it exists
    (and how it relates to what they asked) before the policy let them read it. The status
    is the same whichever case trails."""
    access = control(store, read_models, OneBehind(LOOKED_UP))
    answers = []
    for found in (["case-1", LOOKED_UP], [LOOKED_UP]):
        with pytest.raises(NotCaughtUp) as raised:
            await access.reader_facts_of(
                WORKER, Action.READ_CASE, P.DIRECT_CARE, found, subject=subject
            )
        assert (raised.value.subject, raised.value.what) == (subject, "the cases' relationships")
        status = status_for(raised.value)
        assert not mentions(status, LOOKED_UP), status
        [info] = details(status, error_details_pb2.ErrorInfo)
        assert dict(info.metadata) == {"facts": "the cases' relationships", "subject": subject}
        [retry] = details(status, error_details_pb2.RetryInfo)
        assert retry.retry_delay.seconds == 1
        answers.append(status.SerializeToString())
    assert answers[0] == answers[1]
    # One case at a time (intake's reads of a client's cases) names the client too.
    with pytest.raises(NotCaughtUp) as raised:
        await access.reader_facts(
            WORKER, Action.READ_CLIENT, P.DIRECT_CARE, LOOKED_UP, subject=subject
        )
    assert raised.value.subject == subject
    assert not mentions(status_for(raised.value), LOOKED_UP)


async def test_a_client_correction_whose_facts_trail_names_the_client(
    store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    access = control(store, read_models, OneBehind(LOOKED_UP))
    access.facts = OneClientsCases([LOOKED_UP], read_models)

    with pytest.raises(NotCaughtUp) as raised:
        await access.require_client_correction(WORKER, "client-7f3a")
    assert raised.value.subject == "client-7f3a"
    assert not mentions(status_for(raised.value), LOOKED_UP)


class OneClientsCases(CaseFactsReader):
    """The facts, every client having ``cases``."""

    def __init__(self, cases: list[str], read_models: SqliteReadModelStore) -> None:
        super().__init__(read_models)
        self.cases = cases

    async def cases_of_client(self, client_id: str) -> list[str]:
        return list(self.cases)
