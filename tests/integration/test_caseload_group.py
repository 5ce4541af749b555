"""Two caseload worker processes in one group, as the chart runs ``caseload.replicas: 2`` behind
one Service: whichever is asked, the all-worker views (``/caseload/``, ``/overdue/``) are the
whole group's, gathered from both processes' parts, the read recorded once by the process
asked; a part goes only to the process that asked for it, and with a process out of reach the
views refuse rather than answer a part of them as if it were all."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from events.catalog.access import RecordAccessDenied, RecordAccessed
from events.envelope import RecordedEvent
from services.caseload.gathering import ASKER, PART_MARK
from services.caseload.routing import FORWARDED_MARK
from tests.integration.caseload import (
    CONVERGENCE_LIMIT,
    PARTITIONS,
    TODAY,
    Setup,
    ago,
    day,
    facts_partition_of,
    get,
    one_per_partition,
    publish,
    reports_ready,
    worker_env,
    worker_process,
)
from tests.support.audit_server import RunningAudit, audit_server
from tests.support.case_history import History
from tests.support.identity import TestIssuer
from tests.support.servers import free_port

pytestmark = pytest.mark.kafka


def group_history(history: History, workers: dict[int, str]) -> list[RecordedEvent]:
    """On each worker-facts partition a worker holding a case whose follow-up is overdue (the
    further the partition, the older), and two open cases nobody holds."""
    events: list[RecordedEvent] = []
    for partition, worker in workers.items():
        case = f"late-{partition}"
        events += [
            history.opened(case, ago(10)),
            history.assigned(case, worker, ago(9)),
            history.contact(case, worker, ago(8), day(-1 - partition)),
        ]
    return [*events, history.opened("u-1", ago(3)), history.opened("u-2", ago(2))]


async def accesses(audit: RunningAudit) -> list[tuple[str, str]]:
    """The reads audit recorded so far: case and sections, in order."""
    events = await audit.store.read_all(limit=10_000)
    return [
        (e.event.case_id, ",".join(s.value for s in e.event.sections))
        for e in events
        if isinstance(e.event, RecordAccessed)
    ]


async def refusals(audit: RunningAudit) -> list[tuple[str, str]]:
    """The refusals audit recorded so far: case (``caseloads`` when none) and who, in order."""
    events = await audit.store.read_all(limit=10_000)
    return [
        (e.event.case_id, e.event.accessor_id)
        for e in events
        if isinstance(e.event, RecordAccessDenied)
    ]


async def until(check: Callable[[], Awaitable[bool]], what: str, last: Callable[[], Any]) -> None:
    try:
        async with asyncio.timeout(CONVERGENCE_LIMIT):
            # Polling: the processes tell their state in their answers only.
            while not await check():  # noqa: ASYNC110
                await asyncio.sleep(0.3)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {what}; last seen: {last()!r}")


async def test_each_process_of_a_group_answers_the_all_worker_views_whole_recorded_once(
    setup: Setup, tmp_path: Path, issuer: TestIssuer
) -> None:
    """Each process answered the all-worker views from its own partitions, 200 and
    ``truncated: false``: overdue follow-ups and unassigned cases dropped out depending on the
    process the Service picked, and audit recorded the read as if it were whole (review
    rev-chart). Fails on the old code: each process names only its partitions' workers and
    follow-ups, and with the other process gone still answers 200."""
    history = History()
    workers = one_per_partition((f"w-{n}" for n in range(100)), facts_partition_of)
    await publish(setup.kafka, setup.topic, group_history(history, workers))
    overdue = [
        {
            "case_id": f"late-{p}",
            "worker_id": workers[p],
            "due": day(-1 - p).isoformat(),
            "days_overdue": 1 + p,
        }
        for p in reversed(range(PARTITIONS))
    ]
    whole = {
        "caseload": (
            200,
            {
                "workers": {w: 1 for w in sorted(workers.values())},
                "unassigned": ["u-1", "u-2"],
                "truncated": False,
            },
        ),
        "overdue": (200, {"today": TODAY.isoformat(), "overdue": overdue, "truncated": False}),
    }
    auditor = issuer.mint("james.liu", "auditor")
    ports = [free_port(), free_port()]
    overdue_path = f"/overdue/?today={TODAY.isoformat()}"
    seen: dict[int, Any] = {}

    async def views(port: int) -> dict[str, Any]:
        """Both all-worker views as ``port``'s process answers them, statuses included."""
        return {
            "caseload": await get(port, "/caseload/", auditor),
            "overdue": await get(port, overdue_path, auditor),
        }

    async def every_process_whole() -> bool:
        # Both in the group, their tables recovered: each holds part of the partitions.
        if not all([await reports_ready(port) for port in ports]):
            return False
        with contextlib.suppress(OSError, ValueError):
            for port in ports:
                seen[port] = await views(port)
        return len(seen) == len(ports) and all(answer == whole for answer in seen.values())

    async with audit_server(tmp_path, issuer) as audit:
        envs = [
            worker_env(
                replace(
                    setup.settings, web_enabled=True, web_port=port, data_dir=tmp_path / f"w{n}"
                ),
                audit,
                issuer,
            )
            for n, port in enumerate(ports)
        ]
        async with (
            worker_process(envs[0], tmp_path / "w0.log") as first,
            worker_process(envs[1], tmp_path / "w1.log"),
        ):
            await until(
                every_process_whole, "both processes to answer the whole views", lambda: seen
            )
            for port in ports:
                # A shorter list: the oldest follow-ups of both processes, and more are.
                before = len(await accesses(audit))
                status, body = await get(port, f"{overdue_path}&limit=2", auditor)
                assert status == 200, body
                shown = [o["case_id"] for o in body["overdue"]]
                assert shown == [o["case_id"] for o in overdue[:2]], body
                assert body["truncated"] is True
                # One read, by the process asked: the cases shown, not each process's part.
                assert (await accesses(audit))[before:] == [
                    (case, "assignment,contacts") for case in shown
                ]
                status, body = await get(port, "/caseload/?limit=1", auditor)
                assert (status, body["unassigned"], body["truncated"]) == (200, ["u-1"], True)
            # A caller sending the marks of a part is no process of the group: no part, and
            # the refusal on record, an auditor's too (nothing was, review rev-web).
            before = len(await accesses(audit))
            denied = len(await refusals(audit))
            for port, other in (ports, ports[::-1]):
                marks = {
                    FORWARDED_MARK: "1",
                    PART_MARK: "guessed",
                    ASKER: f"http://127.0.0.1:{other}",
                }
                for path in ("/caseload/", overdue_path):
                    status, body = await get(port, path, auditor, marks)
                    assert (status, body["reason"]) == (403, "PART_NOT_ASKED"), (port, path)
            assert (await accesses(audit))[before:] == []
            assert (await refusals(audit))[denied:] == [("caseloads", "james.liu")] * 4
            # A role audit refuses the views is recorded refused too, naming no case (nothing
            # was, review rev-r3b).
            denied = len(await refusals(audit))
            receptionist = issuer.mint("mallory.k", "receptionist")
            marks = {PART_MARK: "guessed", ASKER: f"http://127.0.0.1:{ports[1]}"}
            status, body = await get(ports[0], "/caseload/", receptionist, marks)
            assert status == 403, body
            assert (await refusals(audit))[denied:] == [("caseloads", "mallory.k")]
            assert all([await reports_ready(port) for port in ports])  # still one group of two
            # The first process gone, the other cannot have its part until the group hands
            # its partitions over (the session timeout, 10 s): refused, not a part of the view.
            first.send_signal(signal.SIGKILL)
            await first.wait()
            refused = await get(ports[1], "/caseload/", auditor)
            assert refused[0] == 503, refused
            assert refused[1]["reason"] == "OWNER_UNAVAILABLE"
            refused = await get(ports[1], overdue_path, auditor)
            assert (refused[0], refused[1]["reason"]) == (503, "OWNER_UNAVAILABLE")

            async def alone_whole() -> bool:
                with contextlib.suppress(OSError, ValueError):
                    seen[ports[1]] = await views(ports[1])
                return seen.get(ports[1]) == whole

            await until(alone_whole, "the other process to hold every partition", lambda: seen)
