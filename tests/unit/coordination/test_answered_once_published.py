"""AssignCase, TransferCase and WithdrawReferral answer only once the bus has their event (the
relay's acknowledgement, ``Dependencies.published``): planning's CloseCase and intake's
ReopenCase wait for their facts to apply what the bus held when they began, and so do the reads
of a caller whose right an event can end, so a transfer or a withdrawal answered is always
counted in a supervisor's command or a read sent after the answer (README, "A transfer not
delivered yet"). Past the wait's bound the command, recorded, is answered all the same."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from cli.rpc import Person
from events.catalog.values import NeedCategory
from services.coordination.app.handlers.running import Dependencies
from tests.support.identity import acting
from tests.support.publication import HeldPublication
from tests.unit.coordination.rpc import PT_CLINIC, accept, assign, assigned_case, refer
from tests.unit.coordination.support import IntakeFeed, command_context, transferred

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub


@pytest.fixture
def bus() -> HeldPublication:
    return HeldPublication()


@pytest.fixture
def deps(deps: Dependencies, bus: HeldPublication) -> Dependencies:
    """The package's ``deps`` (and so its ``stub``) answering only once ``bus`` has published."""
    return replace(deps, published=bus.published)


async def test_assignments_are_answered_once_the_bus_has_them(
    stub: Stub,
    bus: HeldPublication,
    deps: Dependencies,
    intake: IntakeFeed,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    assigning = asyncio.ensure_future(assign(stub, "case-1", "cm-dana"))
    await asyncio.sleep(0.3)
    assert not assigning.done(), "answered before the bus acknowledged it"
    [recorded] = await deps.store.read_stream("case-case-1")
    assert bus.asked == [recorded.position]
    bus.acknowledged.set()
    await assigning

    bus.acknowledged.clear()
    transfer = pb.TransferCaseRequest(
        context=command_context("coordinator"),
        case_id="case-1",
        worker_id="sw-lcsw",
        reason="worker on leave",
    )
    transferring = asyncio.ensure_future(stub.TransferCase(transfer))
    await asyncio.sleep(0.3)
    assert not transferring.done(), "answered before the bus acknowledged it"
    bus.acknowledged.set()
    moved = await transferring
    assert moved.previous_worker_id == "cm-dana"
    assert bus.asked[-1] == (await deps.store.read_stream("case-case-1"))[-1].position

    # The bus did not take it in time: recorded, answered, and the log says so.
    bus.down = True
    transfer.context.idempotency_key = "back"
    transfer.worker_id = "cm-dana"
    moved = await stub.TransferCase(transfer)
    assert moved.previous_worker_id == "sw-lcsw"
    assert "answered before the bus acknowledged it" in caplog.text


async def test_a_supervisor_s_transfer_retried_is_answered_once_the_bus_has_it(
    stub: Stub, bus: HeldPublication, deps: Dependencies, intake: IntakeFeed
) -> None:
    """A supervisor's transfer answered past the bound (or whose answer was lost while it
    waited), sent again under its key: the retry is answered from what was recorded, and only
    once the bus has it, as a coordinator's retry is (else the client, told "done", may ask
    planning to close the case before its facts can know of the transfer)."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    bus.acknowledged.set()
    await assign(stub, "case-1", "cm-dana")
    await intake.policy_told_assigned("case-1", "cm-dana", "team-east")
    east = Person("sup-east", "supervisor", team="team-east")
    transfer = pb.TransferCaseRequest(
        context=acting(east, common_pb2.CommandContext(idempotency_key="moved")),
        case_id="case-1",
        worker_id="sw-lcsw",
        reason="worker on leave",
    )
    bus.acknowledged.clear()
    bus.down = True
    first = await stub.TransferCase(transfer)  # past the bound: answered all the same
    transferred = (await deps.store.read_stream("case-case-1"))[-1].position

    bus.down = False
    bus.asked.clear()
    retrying = asyncio.ensure_future(stub.TransferCase(transfer))
    for _ in range(500):  # until it asks the bus, or is answered without asking
        if bus.asked or retrying.done():
            break
        await asyncio.sleep(0.02)
    assert not retrying.done(), "the retry was answered before the bus acknowledged it"
    assert bus.asked == [transferred]
    bus.acknowledged.set()
    assert await retrying == first


async def test_a_withdrawal_is_answered_once_the_bus_has_it(
    stub: Stub, bus: HeldPublication, deps: Dependencies, intake: IntakeFeed
) -> None:
    """The partner agency's reads wait for their facts to hold what the bus has: answered
    once the withdrawal is there, its next read is decided with it."""
    bus.acknowledged.set()
    await assigned_case(stub, intake, "sw-lcsw", NeedCategory.COUNSELING)
    referral = await refer(stub, "case-1", "counseling")
    await accept(stub, "case-1", referral.referral_id)
    bus.acknowledged.clear()
    bus.asked.clear()
    withdrawing = asyncio.ensure_future(
        stub.WithdrawReferral(
            pb.WithdrawReferralRequest(
                context=command_context("coordinator"),
                case_id="case-1",
                referral_id=referral.referral_id,
                reason="client changed their mind",
            )
        )
    )
    await asyncio.sleep(0.3)
    assert not withdrawing.done(), "answered before the bus acknowledged it"
    assert bus.asked == [(await deps.store.read_stream("case-case-1"))[-1].position]
    bus.acknowledged.set()
    await withdrawing


async def test_a_withdrawal_retried_after_a_transfer_is_answered_once_the_bus_has_it(
    stub: Stub, bus: HeldPublication, deps: Dependencies, intake: IntakeFeed
) -> None:
    """The case's worker withdrew a referral, then the case went to another worker: the same
    request retried under its key is answered as the first was (not refused as the previous
    worker's new command is), and only once the bus has the withdrawal."""
    bus.acknowledged.set()
    await assigned_case(stub, intake, "cm-dana", recipient=PT_CLINIC.provider_id)
    referral = await refer(stub, "case-1", "physical_therapy", PT_CLINIC)
    withdrawal = pb.WithdrawReferralRequest(
        context=command_context("case_manager", key="withdrawn", user="cm-dana"),
        case_id="case-1",
        referral_id=referral.referral_id,
        reason="client changed their mind",
    )
    first = await stub.WithdrawReferral(withdrawal)
    withdrawn = (await deps.store.read_stream("case-case-1"))[-1].position
    await transferred(deps.store, "case-1")
    after = await deps.store.last_position()

    bus.acknowledged.clear()
    bus.asked.clear()
    retrying = asyncio.ensure_future(stub.WithdrawReferral(withdrawal))
    for _ in range(500):  # until it asks the bus, or is answered without asking
        if bus.asked or retrying.done():
            break
        await asyncio.sleep(0.02)
    assert not retrying.done(), "the retry was not answered as the first, once on the bus"
    assert bus.asked == [withdrawn]
    bus.acknowledged.set()
    assert await retrying == first
    assert await deps.store.last_position() == after
