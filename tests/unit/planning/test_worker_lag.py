"""An assigned worker's command waits for planning's case view to have applied the case's
partition as far as the bus held it (``Dependencies.views_caught_up``), so a transfer answered
before it counts; roles acting on any case wait for nothing, and a role that may never act is
refused before any wait (README, "A transfer not delivered yet"). The bus behind the barrier
is the tests' in integration/test_transfer_barrier.py; here it is a stand-in."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date

import pytest

from casetrail_platform.commands import CommandContext, NotAllowed, NotCaughtUp
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.monitoring import ContactKind
from events.envelope import Actor
from services.planning.app.handlers import Dependencies, handle
from services.planning.domain import commands as c
from tests.unit.planning.support import COORDINATOR, RECEPTIONIST, START, WORKER, Bus

CASE = "case-1"


@dataclass
class Barrier:
    caught_up: bool = False
    asked: list[str] = field(default_factory=list)

    async def __call__(self, case_id: str) -> bool:
        self.asked.append(case_id)
        return self.caught_up


def contact(actor: Actor, key: str) -> tuple[CommandContext, c.LogContact]:
    context = CommandContext(actor=actor, idempotency_key=key, occurred_at=START)
    return context, c.LogContact(CASE, key, ContactKind.PHONE_CALL, "Phoned", date(2030, 4, 1))


async def test_a_worker_waits_for_the_view_then_is_decided_on_it(
    deps: Dependencies, bus: Bus, store: SqliteEventStore
) -> None:
    await bus.open_case(CASE, WORKER)
    barrier = Barrier()
    waiting = replace(deps, views_caught_up=barrier)

    with pytest.raises(NotCaughtUp) as refused:
        await handle(waiting, *contact(WORKER, "k1"))
    assert (refused.value.reason, refused.value.subject) == ("FACTS_NOT_CAUGHT_UP", CASE)
    assert barrier.asked == [CASE]
    assert await store.read_all(0) == [], "nothing decided nor written while the view trails"

    barrier.caught_up = True
    outcome = await handle(waiting, *contact(WORKER, "k2"))
    assert len(outcome.recorded) == 1


async def test_roles_acting_on_any_case_or_never_do_not_wait(deps: Dependencies, bus: Bus) -> None:
    await bus.open_case(CASE, WORKER)
    barrier = Barrier()
    waiting = replace(deps, views_caught_up=barrier)

    outcome = await handle(waiting, *contact(COORDINATOR, "k1"))
    assert len(outcome.recorded) == 1
    with pytest.raises(NotAllowed):
        await handle(waiting, *contact(RECEPTIONIST, "k2"))
    assert barrier.asked == []
