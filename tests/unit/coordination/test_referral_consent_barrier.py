"""MakeReferral decides its disclosure on the case's facts as the bus has them
(``AccessControl.facts_as_on_the_bus``), whoever asks: a consent granted at intake, or revoked,
counts from intake's answer on (intake answers both once they are on the bus), not once the bus
has delivered them to coordination. Here the facts' group catches up when the barrier is asked
(``Delivering``), as it would while the referral waits; not in time, nothing is decided."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
import pytest

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import ConsentRevoked, RecordAccessDenied
from events.catalog.cases import CaseOpened, PresentingNeed, ReferralSource, ReferralSourceKind
from events.catalog.values import NeedCategory
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain.facts import case_stream
from tests.support.identity import TestIssuer
from tests.unit.coordination.rpc import refer, refused, served
from tests.unit.coordination.support import IntakeFeed, carried_by, query_context

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

CASE = "case-1"


class Delivering:
    """``case_facts_caught_up``: delivers what intake recorded and the bus has not yet brought
    to coordination's facts (``pending``), then answers ``caught_up``."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], Awaitable[object]]] = []
        self.asked: list[str] = []
        self.caught_up = True

    async def __call__(self, case_id: str) -> bool:
        self.asked.append(case_id)
        if self.caught_up:
            for deliver in self.pending:
                await deliver()
            self.pending.clear()
        return self.caught_up


@pytest.fixture
def barrier() -> Delivering:
    return Delivering()


@pytest.fixture
async def stub(deps: Dependencies, issuer: TestIssuer, barrier: Delivering) -> AsyncIterator[Stub]:
    """The package's ``stub``, its access control with the facts' barrier."""
    async with served(deps, issuer, barrier) as served_stub:
        yield served_stub


async def _a_carried_case(intake: IntakeFeed, store: SqliteEventStore) -> None:
    await intake.open_case(CASE, "client-1", [NeedCategory.COUNSELING])
    await carried_by(store, CASE)


async def test_a_consent_answered_at_intake_counts_in_the_next_referral(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, barrier: Delivering
) -> None:
    await _a_carried_case(intake, store)
    # Granted at intake and on the bus, not yet applied here (refused CONSENT_REQUIRED before).
    barrier.pending.append(lambda: intake.consent(CASE, "client-1"))
    made = await refer(stub, CASE, "counseling")
    assert made.referral_id
    assert barrier.asked == [CASE]


async def test_a_revocation_answered_at_intake_refuses_the_next_referral(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, barrier: Delivering
) -> None:
    await _a_carried_case(intake, store)
    await intake.consent(CASE, "client-1")
    version = await store.stream_version(f"case-{CASE}")
    # Revoked at intake and on the bus, not yet applied here (the referral was made before).
    revoked = ConsentRevoked(
        case_id=CASE, client_id="client-1", consent_id=f"consent-{CASE}-harbor-counseling"
    )
    barrier.pending.append(lambda: intake.deliver(revoked, f"case-{CASE}"))
    refusal = await refused(refer(stub, CASE, "counseling"))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_REQUIRED")
    assert await store.stream_version(f"case-{CASE}") == version


async def test_a_referral_whose_facts_trail_decides_nothing(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, barrier: Delivering
) -> None:
    await _a_carried_case(intake, store)
    await intake.consent(CASE, "client-1")
    version = await store.stream_version(f"case-{CASE}")
    barrier.caught_up = False
    refusal = await refused(refer(stub, CASE, "counseling"))
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.UNAVAILABLE, "FACTS_NOT_CAUGHT_UP")
    assert await store.stream_version(f"case-{CASE}") == version


async def test_the_assigned_worker_reads_their_client_s_schedule_while_the_facts_trail(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore, barrier: Delivering
) -> None:
    """The policy's facts knew none of the client's cases yet (coordination knew the opening
    and had recorded the assignment): decided as of a client with no case, the worker was
    refused, the refusal recorded. The cases coordination knows of are decided at the facts'
    barrier, as any listed case."""
    opening = intake.record(
        CaseOpened(
            case_id=CASE,
            client_id="client-1",
            referral_source=ReferralSource(kind=ReferralSourceKind.HOSPITAL),
            presenting_needs=(PresentingNeed(category=NeedCategory.HOME_CARE),),
        ),
        f"case-{CASE}",
    )
    await intake.handler(opening)
    await carried_by(store, CASE)
    assignment = next(r for r in await store.read_stream(case_stream(CASE)))
    barrier.pending.append(lambda: intake.policy(opening))
    barrier.pending.append(lambda: intake.policy(assignment))

    answer = await stub.GetClientSchedule(
        pb.GetClientScheduleRequest(
            context=query_context("case_manager", "direct_care"), client_id="client-1"
        )
    )

    assert list(answer.services) == []
    assert barrier.asked == [CASE]
    assert not [r for r in await store.read_all(0) if isinstance(r.event, RecordAccessDenied)]
