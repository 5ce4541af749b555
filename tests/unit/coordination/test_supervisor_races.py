"""A supervisor's command raced by the case's transfer to another team: the transfer commits
right after the command's first look at the case, or after the decision read the case's stream
(TransferCase: the history its append follows; ReserveBudget, ReleaseBudget: the guard their
budget line's append carries), before the command records. The team is checked again on the
case's stream as the command records after it, so the previous team's supervisor is refused
and nothing is recorded, instead of acting once more on a case no longer their team's. On both
stores: the guard is checked in SQLite's writer and in PostgreSQL's append."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.assignment import CaseReassigned
from events.catalog.values import NeedCategory
from events.catalog_registry import default_registry
from tests.support.identity import acting
from tests.support.servers import database_of_its_own
from tests.unit.coordination.rpc import assign, refused, usd
from tests.unit.coordination.support import IntakeFeed, TransferredOnceRead, command_context

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

Ask = Callable[[common_pb2.CommandContext], Awaitable[Any]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """Coordination's store on each backend (the unit tests' is SQLite's)."""
    opened: EventStore
    if request.param == "sqlite":
        opened = await SqliteEventStore.open(tmp_path / "events.db", default_registry())
        yield opened
        await opened.close()
        return
    from casetrail_platform.store.postgres import PostgresEventStore

    with database_of_its_own("coordination_races") as dsn:
        opened = await PostgresEventStore.connect(
            dsn, default_registry(), schema="coordination_events"
        )
        try:
            yield opened
        finally:
            await opened.close()


def _east(key: str) -> common_pb2.CommandContext:
    """The supervisor of team-east, cm-dana's team (the agency file's)."""
    supervisor = Person("sup-east", "supervisor", team="team-east")
    return acting(supervisor, common_pb2.CommandContext(idempotency_key=key))


async def _commands(stub: Stub, intake: IntakeFeed) -> dict[str, Ask]:
    """case-1 carried by cm-dana of team-east (the access policy's facts have it from the
    bus too), with money reserved for it on the flexible fund: each command its supervisor may
    run on it, asked with a context."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await assign(stub, "case-1", "cm-dana")
    await intake.policy_told_assigned("case-1", "cm-dana", "team-east")
    reserved = await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="flex",
            amount=usd(1_000),
        )
    )
    return {
        "TransferCase": lambda context: stub.TransferCase(
            pb.TransferCaseRequest(
                context=context, case_id="case-1", worker_id="sw-expired", reason="on leave"
            )
        ),
        "ReserveBudget": lambda context: stub.ReserveBudget(
            pb.ReserveBudgetRequest(
                context=context, case_id="case-1", budget_line="flex", amount=usd(500)
            )
        ),
        "ReleaseBudget": lambda context: stub.ReleaseBudget(
            pb.ReleaseBudgetRequest(
                context=context,
                case_id="case-1",
                budget_line="flex",
                reservation_id=reserved.reservation_id,
                reason="fewer hours needed",
            )
        ),
    }


@pytest.mark.parametrize("reads", [0, 1, 2], ids=["no-race", "after-the-check", "after-the-read"])
@pytest.mark.parametrize("name", ["TransferCase", "ReserveBudget", "ReleaseBudget"])
async def test_the_previous_team_s_supervisor_is_refused_once_the_case_is_transferred(
    stub: Stub,
    intake: IntakeFeed,
    store: EventStore,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    reads: int,
) -> None:
    ask = (await _commands(stub, intake))[name]
    before = await store.last_position()
    race = TransferredOnceRead(store, monkeypatch, "case-1", reads)

    call = ask(_east(f"{name}-{reads}"))

    if not reads:
        # The case's team's supervisor does it when nothing races (the command is a good one).
        assert await call
        return
    refusal = await refused(call)
    assert race.transferred
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    assert "their team" in refusal.message
    assert [r.event.event_type for r in await store.read_all(before)] == [CaseReassigned.event_type]


@pytest.mark.parametrize("name", ["TransferCase", "ReserveBudget", "ReleaseBudget"])
async def test_a_retry_of_a_supervisor_s_done_command_answers_as_the_first_after_a_transfer(
    stub: Stub, intake: IntakeFeed, store: EventStore, name: str
) -> None:
    """Team-east's supervisor's command was done, then the case went to team-west: the same
    request retried under its key gets the first answer again, not the refusal a new command
    of that supervisor would (the retry is looked up before the team is checked)."""
    ask = (await _commands(stub, intake))[name]
    first = await ask(_east(f"retried-{name}"))
    if name != "TransferCase":
        await stub.TransferCase(
            pb.TransferCaseRequest(
                context=command_context("coordinator"),
                case_id="case-1",
                worker_id="sw-expired",
                reason="on leave",
            )
        )
    after = await store.last_position()

    assert await ask(_east(f"retried-{name}")) == first
    assert await store.read_all(after) == []  # nothing recorded again
    refusal = await refused(ask(_east(f"new-{name}")))  # a new one is refused
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
