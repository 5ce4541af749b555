"""A transfer coordination has answered counts in the previous team's supervisor's CloseCase
(planning) and ReopenCase (intake), however far the policy's facts trail, in the previous
worker's reads of the case (every service), however far the facts trail, and in the previous
worker's planning commands, however far planning's case view trails (README, "A transfer not
delivered yet"): coordination answers once the bus has the transfer, and planning and intake
wait for the consumer group they decide on to have applied the case's partition as far as the
bus held it, else answer UNAVAILABLE ``FACTS_NOT_CAUGHT_UP``, deciding nothing.

The consumer groups are held back here on any batch holding the transfer (before their
transaction), as a slow consumer would be. On both backends, the services in this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from casetrail_platform.policy.projection import CaseFactsProjection
from casetrail_platform.projections.runner import BusProjectionHandler
from cli.rpc import Connection, Person, command, eventually, query
from cli.walk.story import COORDINATOR, RECEPTIONIST
from events.catalog.assignment import CaseReassigned
from events.envelope import RecordedEvent
from services.audit.adapters.timeline import TimelineProjection
from services.planning.adapters.case_views import CaseViewProjection
from tests.e2e.support import ON_CALL, Case, opening
from tests.support.backends import on_each_backend
from tests.support.cases import key, opened_case
from tests.support.identity import TestIssuer
from tests.support.in_process import outcome, services_in_process

SERVICES = ("intake", "coordination", "planning")
EAST = Person("sup-omar-haddad", "supervisor", team="team-east")
WEST = Person("sup-helen-reyes", "supervisor", team="team-west")
DANA = Person("cm-dana-reyes", "case_manager", team="team-east")
TOM = Person("sw-tom-becker", "social_worker", team="team-west")
PATIENCE = 90.0


async def told(
    backend: str,
    tmp_path: Path,
    flowing: asyncio.Event,
    story: Callable[[Connection, asyncio.Event], Awaitable[None]],
    services: tuple[str, ...] = SERVICES,
) -> None:
    """``story`` told against ``services`` on ``backend``; the held groups let go after it."""
    issuer = TestIssuer()
    try:
        async with services_in_process(backend, tmp_path, issuer, services) as stubs:
            await story(stubs, flowing)
    finally:
        flowing.set()
        issuer.stop()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set: the policy facts' groups (and audit's timeline, its facts) apply what they get.
    Cleared: a batch holding a transfer waits (uncommitted) until it is set again."""
    return _holding(monkeypatch, CaseFactsProjection.name, TimelineProjection.name)


@pytest.fixture
def view_held(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """``held`` for planning's case view group instead (the policy's facts flow)."""
    return _holding(monkeypatch, CaseViewProjection.name)


def _holding(monkeypatch: pytest.MonkeyPatch, *projections: str) -> asyncio.Event:
    flowing = asyncio.Event()
    flowing.set()
    original = BusProjectionHandler.handle_batch

    async def handle_batch(self: BusProjectionHandler, records: Sequence[RecordedEvent]) -> None:
        transfer = any(r.event_type == CaseReassigned.event_type for r in records)
        if transfer and self._projection.name in projections:
            await flowing.wait()
        await original(self, records)

    monkeypatch.setattr(BusProjectionHandler, "handle_batch", handle_batch)
    return flowing


@on_each_backend
async def test_a_transfer_answered_counts_in_the_previous_teams_close_and_reopen(
    backend: str, tmp_path: Path, held: asyncio.Event
) -> None:
    await told(backend, tmp_path, held, _transfer_then_close_and_reopen)


async def _transfer_then_close_and_reopen(stubs: Connection, flowing: asyncio.Event) -> None:
    case_id = await _assigned_to_dana(stubs)
    # Planning's and intake's facts have it with team-east: its supervisor reads the case.
    await eventually(
        lambda: stubs.as_(EAST).planning.GetCaseView(
            pl.GetCaseViewRequest(context=query("supervision"), case_id=case_id)
        ),
        what="planning's facts to hold the assignment",
        patience=PATIENCE,
        retry=lambda refusal: refusal.code is not grpc.StatusCode.INVALID_ARGUMENT,
    )
    await eventually(
        lambda: stubs.as_(EAST).intake.GetCase(
            intake_pb2.GetCaseRequest(context=query("supervision"), case_id=case_id)
        ),
        what="intake's facts to hold the assignment",
        patience=PATIENCE,
        retry=lambda refusal: refusal.code is not grpc.StatusCode.INVALID_ARGUMENT,
    )

    flowing.clear()  # the facts' groups hold the transfer from now on
    await _transfer_to_tom(stubs, case_id)

    def close(person: Person) -> Awaitable[object]:
        request = pl.CloseCaseRequest(
            context=command(key()), case_id=case_id, reason="client_moved"
        )
        answer: Awaitable[object] = stubs.as_(person).planning.CloseCase(request)
        return answer

    def reopen(person: Person) -> Awaitable[object]:
        request = intake_pb2.ReopenCaseRequest(
            context=command(key()), case_id=case_id, reason="needs help again"
        )
        answer: Awaitable[object] = stubs.as_(person).intake.ReopenCase(request)
        return answer

    waiting = (grpc.StatusCode.UNAVAILABLE, "FACTS_NOT_CAUGHT_UP")
    assert await outcome(close(EAST)) == waiting
    # The coordinator closes whoever carries the case (no team): it waits for nothing.
    assert await outcome(close(COORDINATOR)) == (grpc.StatusCode.OK, "")
    # Intake learns the closure in a group of its own, not held back.
    for _ in range(int(PATIENCE / 0.1)):
        answer = await outcome(reopen(EAST))
        if answer != (grpc.StatusCode.FAILED_PRECONDITION, "CASE_NOT_CLOSED"):
            break
        await asyncio.sleep(0.1)
    assert answer == waiting

    flowing.set()
    denied = (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    for _ in range(int(PATIENCE / 0.1)):
        answer = await outcome(reopen(EAST))
        if answer != waiting:
            break
    assert answer == denied
    assert await outcome(reopen(WEST)) == (grpc.StatusCode.OK, "")


@on_each_backend
async def test_a_transfer_answered_counts_in_the_previous_workers_commands(
    backend: str, tmp_path: Path, view_held: asyncio.Event
) -> None:
    """Planning decides "is the caller the case's assigned worker" on its case view: a worker's
    command first waits for the view's group to hold every transfer answered before it."""
    await told(backend, tmp_path, view_held, _transfer_then_log_contacts)


async def _transfer_then_log_contacts(stubs: Connection, flowing: asyncio.Event) -> None:
    case_id = await _assigned_to_dana(stubs)

    def log_contact(person: Person) -> Awaitable[object]:
        request = pl.LogContactRequest(
            context=command(key()), case_id=case_id, kind="phone_call", summary="Phoned"
        )
        answer: Awaitable[object] = stubs.as_(person).planning.LogContact(request)
        return answer

    await eventually(
        lambda: log_contact(DANA),
        what="planning's case view to hold the assignment",
        patience=PATIENCE,
        retry=lambda refusal: refusal.code is not grpc.StatusCode.INVALID_ARGUMENT,
    )

    flowing.clear()  # the case view's group holds the transfer from now on
    await _transfer_to_tom(stubs, case_id)
    waiting = (grpc.StatusCode.UNAVAILABLE, "FACTS_NOT_CAUGHT_UP")
    assert await outcome(log_contact(DANA)) == waiting  # answered OK before the barrier
    assert await outcome(log_contact(TOM)) == waiting
    # The coordinator logs on any case: it waits for nothing.
    assert await outcome(log_contact(COORDINATOR)) == (grpc.StatusCode.OK, "")

    flowing.set()
    for _ in range(int(PATIENCE / 0.1)):
        answer = await outcome(log_contact(DANA))
        if answer != waiting:
            break
    assert answer[0] is grpc.StatusCode.PERMISSION_DENIED
    assert await outcome(log_contact(TOM)) == (grpc.StatusCode.OK, "")


@on_each_backend
async def test_a_transfer_answered_counts_in_the_previous_workers_reads(
    backend: str, tmp_path: Path, held: asyncio.Event
) -> None:
    """Every service decides a read on the policy's facts: a caller whose right rests on being
    the assigned worker first waits for the facts' group to hold every fact of the case the bus
    had, so the worker a case was transferred from reads nothing more of it."""
    await told(backend, tmp_path, held, _transfer_then_read, services=(*SERVICES, "audit"))


async def _transfer_then_read(stubs: Connection, flowing: asyncio.Event) -> None:
    case_id = await _assigned_to_dana(stubs)

    def reads(person: Person, purpose: str = "direct_care") -> list[Awaitable[object]]:
        caller = stubs.as_(person)
        return [
            caller.planning.GetCaseView(
                pl.GetCaseViewRequest(context=query(purpose), case_id=case_id)
            ),
            caller.intake.GetCase(
                intake_pb2.GetCaseRequest(context=query(purpose), case_id=case_id)
            ),
            caller.coordination.GetCaseCoordination(
                co.GetCaseCoordinationRequest(context=query(purpose), case_id=case_id)
            ),
        ]

    async def answers(
        person: Person, purpose: str = "direct_care"
    ) -> list[tuple[grpc.StatusCode, str]]:
        return [await outcome(call) for call in reads(person, purpose)]

    ok = (grpc.StatusCode.OK, "")
    await eventually(
        lambda: asyncio.gather(*reads(DANA)),
        what="every service's facts to hold the assignment",
        patience=PATIENCE,
        retry=lambda refusal: refusal.code is not grpc.StatusCode.INVALID_ARGUMENT,
    )

    read = await stubs.as_(COORDINATOR).intake.GetCase(
        intake_pb2.GetCaseRequest(context=query("coordination"), case_id=case_id)
    )
    client_id = read.record.client.client_id

    def correct_date_of_birth(person: Person) -> Awaitable[object]:
        answer: Awaitable[object] = stubs.as_(person).intake.CorrectClientDateOfBirth(
            intake_pb2.CorrectClientDateOfBirthRequest(
                context=command(key()),
                client_id=client_id,
                date_of_birth="1941-05-02",
                reason="birth certificate seen",
            )
        )
        return answer

    def trail(person: Person) -> Awaitable[object]:
        answer: Awaitable[object] = stubs.as_(person).audit.GetTimeline(
            audit_pb2.GetTimelineRequest(context=query("supervision"), case_id=case_id)
        )
        return answer

    await eventually(
        lambda: trail(EAST),
        what="audit's copy of the assignment",
        patience=PATIENCE,
        retry=lambda refusal: refusal.code is not grpc.StatusCode.INVALID_ARGUMENT,
    )

    # Dana's colleague on call broke the glass: her supervisor reviews it (the team's case).
    opened = await stubs.as_(ON_CALL).intake.OpenEmergencyAccess(opening(Case(client_id, case_id)))

    async def review_queue(person: Person) -> list[str]:
        answer = await stubs.as_(person).intake.ListEmergencyAccesses(
            intake_pb2.ListEmergencyAccessesRequest(context=query("supervision"), case_id=case_id)
        )
        return [entry.emergency_access_id for entry in answer.accesses]

    await eventually(
        lambda: review_queue(EAST),
        lambda listed: listed == [opened.emergency_access_id],
        what="intake's queue to show the access",
        patience=PATIENCE,
    )

    flowing.clear()  # the facts' groups hold the transfer from now on
    await _transfer_to_tom(stubs, case_id)
    waiting = (grpc.StatusCode.UNAVAILABLE, "FACTS_NOT_CAUGHT_UP")
    assert await answers(DANA) == [waiting] * 3  # each answered OK before the barrier
    # Correcting who the client is rests on the assignment too (answered OK before).
    assert await outcome(correct_date_of_birth(DANA)) == waiting
    # Her supervisor reads the trail at audit, on audit's copy of the case (answered OK before).
    assert await outcome(trail(EAST)) == waiting
    # And the queue of emergency accesses to review (listed the access before).
    assert await outcome(review_queue(EAST)) == waiting
    assert await answers(TOM) == [waiting] * 3
    # A coordinator's right is the agency's, which no event ends: it waits for nothing.
    assert await answers(COORDINATOR, "coordination") == [ok] * 3
    # Her list no longer shows the case: planning's view has it moved, or her wait for its
    # facts is not over (the view is not held here: either may come first).
    listing = stubs.as_(DANA).planning.ListCases(pl.ListCasesRequest(context=query("direct_care")))
    listed: list[str] = []

    async def list_it() -> None:
        listed.extend(case.case_id for case in (await listing).cases)

    assert await outcome(list_it()) in (ok, waiting)
    assert case_id not in listed

    flowing.set()
    for _ in range(int(PATIENCE / 0.1)):
        dana = await answers(DANA)
        if waiting not in dana:
            break
    assert {code for code, _ in dana} == {grpc.StatusCode.PERMISSION_DENIED}
    assert await answers(TOM) == [ok] * 3
    assert (await outcome(correct_date_of_birth(DANA)))[0] is grpc.StatusCode.PERMISSION_DENIED
    assert await outcome(correct_date_of_birth(TOM)) == ok
    assert (await outcome(trail(EAST)))[0] is grpc.StatusCode.PERMISSION_DENIED
    assert await outcome(trail(WEST)) == ok
    assert await review_queue(EAST) == []
    assert await review_queue(WEST) == [opened.emergency_access_id]


async def _assigned_to_dana(stubs: Connection) -> str:
    """A new case, assigned by coordination to Dana (team-east); its id."""
    case_id = await opened_case(stubs, RECEPTIONIST)
    coordinator = stubs.as_(COORDINATOR).coordination
    await eventually(
        lambda: coordinator.AssignCase(
            co.AssignCaseRequest(context=command(key()), case_id=case_id, worker_id=DANA.user_id)
        ),
        what="coordination to learn the case and assign it to team-east",
        patience=PATIENCE,
    )
    return case_id


async def _transfer_to_tom(stubs: Connection, case_id: str) -> None:
    await stubs.as_(COORDINATOR).coordination.TransferCase(
        co.TransferCaseRequest(
            context=command(key()), case_id=case_id, worker_id=TOM.user_id, reason="moved"
        )
    )
