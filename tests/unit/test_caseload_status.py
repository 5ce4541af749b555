"""The caseload processor's status, which its Kubernetes probes read (services/caseload/web.py):
``/caseload-status/`` always answers while the process runs, ``/caseload-status/ready/`` is 503
until the tables are recovered, after the start and after each rebalance."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import faust
import pytest
from faust.types import TP

from services.caseload.processor import CaseloadApp, Counters, build_app
from services.caseload.settings import CaseloadSettings
from services.caseload.web import status_of, status_page


def _app(ready: bool) -> CaseloadApp:
    counters = Counters()
    counters.messages = 3
    counters.applied = 2
    counters.skipped = 1
    fake: Any = SimpleNamespace(counters=counters, ready=lambda: ready)
    return cast(CaseloadApp, fake)


@pytest.mark.parametrize("ready", [True, False])
def test_the_status_says_whether_the_tables_are_recovered(ready: bool) -> None:
    assert status_of(_app(ready)) == {
        "ready": ready,
        "messages": 3,
        "applied": 2,
        "skipped": 1,
        "undecodable": 0,
        "failed": 0,
    }


class _View:
    """Faust's view as the page uses it: ``json(body, status=...)``."""

    def json(self, body: dict[str, Any], status: int = 200) -> tuple[int, dict[str, Any]]:
        return status, body


@pytest.mark.parametrize(
    ("ready", "readiness", "status"),
    [(True, True, 200), (False, True, 503), (True, False, 200), (False, False, 200)],
)
async def test_only_the_readiness_page_refuses_until_the_tables_are_recovered(
    ready: bool, readiness: bool, status: int
) -> None:
    answered = await status_page(_app(ready), readiness)(_View(), None)
    assert answered[0] == status
    assert answered[1]["ready"] is ready


async def test_the_process_is_ready_from_the_end_of_each_rebalances_recovery_to_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust's hooks driven in the order a rebalance calls them. Readiness was Faust's
    ``recovery.completed``, set at the first recovery and never cleared: when a process joined
    and left again, the partitions handed back were restored while the views answered from
    them (a caseload of 0, then 1,000, ... of 15,000) and the readiness page said 200 (review
    f-web). Fails on the old code: ready from the second rebalance's start on."""
    app = build_app(CaseloadSettings(data_dir=tmp_path / "caseload"))
    ready_when_faust_reassigns: list[bool] = []

    async def reassigned(self: Any, assigned: set[TP], generation_id: int = 0) -> None:
        # Where Faust drops the revoked partitions from the tables and starts restoring the
        # assigned ones.
        ready_when_faust_reassigns.append(app.ready())

    monkeypatch.setattr(faust.App, "_on_partitions_assigned", reassigned)

    async def assigned(generation: int) -> None:
        partitions = {TP("casetrail.case-events", n) for n in range(3)}
        await app._on_partitions_assigned(partitions, generation)

    def recovery_ends() -> None:
        # What Faust's Recovery.on_recovery_completed does last.
        app.tables.recovery.completed.set()  # type: ignore[attr-defined]  # on TableManager
        app.on_rebalance_end()

    assert not app.ready()
    app.on_rebalance_start()
    await assigned(1)
    assert not app.ready()
    recovery_ends()
    assert app.ready()
    # Another process joins, or leaves: the tables change from the rebalance's start.
    app.on_rebalance_start()
    assert not app.ready()
    await assigned(2)
    assert not app.ready()
    recovery_ends()
    assert app.ready()
    # A recovery overtaken by the next rebalance (it started during the recovery's last seek)
    # ends after that start, and counts for its own assignment only.
    app.on_rebalance_start()
    recovery_ends()
    assert not app.ready()
    await assigned(3)
    assert not app.ready()
    recovery_ends()
    assert app.ready()
    assert ready_when_faust_reassigns == [False, False, False]
