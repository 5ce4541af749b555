"""CloseCase is answered only once the bus has the closure (``Dependencies.published``): a
closure ends a partner agency's part in the case, and the partner's reads in every service
wait for their facts to hold what the bus has, so from the answer on they are decided with it.
A retry is answered the same way; past the wait's bound the closure, recorded, is answered all
the same (README, "A transfer not delivered yet")."""

from __future__ import annotations

from dataclasses import replace

import pytest

from casetrail.planning.v1 import planning_pb2
from casetrail_platform.store.sqlite import SqliteEventStore
from services.planning.app.handlers import Dependencies, stream_for
from tests.support.publication import HeldPublication
from tests.unit.planning.conftest import Planning
from tests.unit.planning.support import COORDINATOR, INTAKE, INTAKE_WORKER, case_opened, ctx

CASE = "case-1"


@pytest.fixture
def publication() -> HeldPublication:
    return HeldPublication()


@pytest.fixture
def deps(deps: Dependencies, publication: HeldPublication) -> Dependencies:
    """The package's ``deps`` (and so its ``planning``) answering once the bus has published."""
    return replace(deps, published=publication.published)


def closing(key: str) -> planning_pb2.CloseCaseRequest:
    return planning_pb2.CloseCaseRequest(
        context=ctx(COORDINATOR, key), case_id=CASE, reason="client_moved"
    )


async def test_a_closure_is_answered_once_the_bus_has_it(
    planning: Planning, publication: HeldPublication, store: SqliteEventStore
) -> None:
    await planning.bus.record(INTAKE, CASE, case_opened(CASE), actor=INTAKE_WORKER)
    await publication.answered_once_acknowledged(
        store, stream_for(CASE), lambda: planning.stub.CloseCase(closing("c-1"))
    )


async def test_a_closure_the_bus_did_not_take_in_time_is_answered_all_the_same(
    planning: Planning, publication: HeldPublication, caplog: pytest.LogCaptureFixture
) -> None:
    await planning.bus.record(INTAKE, CASE, case_opened(CASE), actor=INTAKE_WORKER)
    publication.down = True
    await planning.stub.CloseCase(closing("c-2"))
    assert "case closure recorded at position" in caplog.text
    assert "answered before the bus acknowledged it" in caplog.text
