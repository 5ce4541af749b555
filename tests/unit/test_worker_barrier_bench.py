"""bench.worker_barrier_bench: its ``--backends`` refuses a name it does not run, before anything
starts, and its off switch takes the barriers out of planning's servicer and the wait for the
bus's acknowledgement out of intake's, and puts them back (the benchmark's own doing: the product
has no such switch)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from bench.worker_barrier_bench import _Switchable, parse
from casetrail_platform.decide import published_at_once
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from services.intake.entrypoints.grpc_server import IntakeDeps, IntakeServicer
from services.planning.app.handlers import Dependencies
from services.planning.entrypoints.grpc_server import PlanningServicer


def test_both_backends_by_default_and_one_when_named() -> None:
    assert parse([]).backends == ["embedded", "distributed"]
    assert parse(["--backends", "distributed"]).backends == ["distributed"]


def test_an_unknown_backend_is_refused_naming_the_argument(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as refused:
        parse(["--backends", "embedded,postgres"])
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "--backends" in error
    assert "postgres" in error


async def _caught_up(case_id: str) -> bool:
    return True


def test_the_switch_takes_the_barriers_out_and_puts_them_back() -> None:
    deps = Dependencies(cast(Any, None), cast(Any, None), _caught_up)
    access = AccessControl(
        cast(Any, None),
        None,
        "casetrail/planning",
        home_agency=DEFAULT_HOME_AGENCY,
        case_facts_caught_up=_caught_up,
    )
    servicer = PlanningServicer(deps, access)
    switch = _Switchable()
    switch.built(servicer)

    switch.barrier(False)
    assert servicer._deps.views_caught_up is None
    assert servicer._deps.store is deps.store
    assert servicer._access.case_facts_caught_up is None
    assert servicer._access.source == access.source

    switch.barrier(True)
    assert servicer._deps is deps
    assert servicer._access is access


async def _never(position: int) -> bool:
    return False


def test_the_switch_answers_intake_without_the_bus_and_puts_the_wait_back() -> None:
    deps = IntakeDeps(
        *(cast(Any, None),) * 6,
        published=_never,
    )
    servicer = IntakeServicer(deps)
    switch = _Switchable()
    switch.intake_built(servicer)

    switch.barrier(False)
    assert servicer._deps.published is published_at_once
    assert servicer._deps.store is deps.store

    switch.barrier(True)
    assert servicer._deps is deps
