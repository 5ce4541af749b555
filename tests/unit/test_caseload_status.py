"""The caseload processor's status, which its Kubernetes probes read (services/caseload/web.py):
``/caseload-status/`` always answers while the process runs, ``/caseload-status/ready/`` is 503
until the tables are recovered."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from services.caseload.processor import CaseloadApp, Counters
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
