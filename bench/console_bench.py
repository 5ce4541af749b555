"""Audit console: server time of the timeline page of a 10,000-event case (issue 12).

``python -m bench.console_bench [--events N] [--accesses A] [--runs R]`` writes the section
"Audit console (issue 12)" of ``bench/RESULTS.md``. The case's events (``case_history``: each
example case event of the catalog once, then the ones that carry no policy fact, cycled; ten
actors) and A access records are written straight into audit's own
store before the embedded services start (audit folds them into the case's timeline from its
store, as it does every access); the console then runs in-process (Starlette's TestClient, so
"server time" is the console's whole answer, audit's gRPC call included, without a browser or a
network stack of its own). Side by side in the same rounds: the same page's audit call made
directly (GetTimeline, 50 entries), so the ratio shows what the console adds. Every page read
is itself recorded, so the case's access records grow by one per request measured.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

from starlette.testclient import TestClient

from bench.common import machine_info, markdown_table, median, now_utc, percentile, replace_section
from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail_platform.identity.development import DevelopmentSigner
from casetrail_platform.identity.tls import channel
from casetrail_platform.identity.verifier import TokenVerifier
from casetrail_platform.policy.facts import FACT_EVENT_TYPES
from casetrail_platform.policy.guard import access_stream
from casetrail_platform.policy.vocabulary import POLICY_VERSION
from casetrail_platform.store.port import ANY_VERSION
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import query
from events.catalog.access import AccessPurpose, RecordAccessDenied, RecordAccessed, RecordSection
from events.catalog.base import CaseEvent, Role
from events.catalog.examples import example_events
from events.catalog_registry import default_registry
from events.envelope import Actor, EventMetadata, NewEvent
from services.console.app import create_app
from services.console.audit_client import AuditClient, Caller
from services.console.pages import TimelineFilter
from services.console.settings import ConsoleSettings
from services.demo import embedded_services

T = TypeVar("T")
CASE = "bench-case"
ACTORS = [f"reader-{number}" for number in range(10)]
HEADING = "## Audit console (issue 12)"


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 600.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


def history_events() -> list[CaseEvent]:
    """The catalog's example events of a case, moved to the bench's case (no access event)."""
    return [
        event.model_copy(update={"case_id": CASE})
        for event in example_events()
        if event.subject_field == "case_id"
        and event.event_type not in (RecordAccessed.event_type, RecordAccessDenied.event_type)
    ]


def case_history(events: int) -> list[CaseEvent]:
    """``events`` events: each example once (opening, assessment, assignment, referrals,
    consents: the facts the policy decides on), then the examples that carry no such fact
    (contacts, services, plans, notes), cycled, as a long case mostly grows."""
    examples = history_events()
    everyday = [event for event in examples if event.event_type not in FACT_EVENT_TYPES]
    made = examples[:events]
    while len(made) < events:
        made.append(everyday[len(made) % len(everyday)])
    return made


def access_event(actor: str) -> RecordAccessed:
    return RecordAccessed(
        case_id=CASE,
        accessor_id=actor,
        accessor_role=Role.SUPERVISOR,
        purpose=AccessPurpose.SUPERVISION,
        sections=(RecordSection.ASSESSMENT,),
        rule="team-supervisor",
        policy_version=POLICY_VERSION,
    )


async def fill_case(data_dir: Path, events: int, accesses: int) -> None:
    folder = data_dir / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    store = await SqliteEventStore.open(folder / "events.db", default_registry())
    start = datetime.now(UTC) - timedelta(days=30)
    made: list[tuple[str, CaseEvent]] = [(f"case-{CASE}", e) for e in case_history(events)] + [
        (access_stream(CASE), access_event(ACTORS[n % len(ACTORS)])) for n in range(accesses)
    ]
    try:
        for first in range(0, len(made), 500):
            batch = [
                NewEvent(
                    event=event,
                    metadata=EventMetadata(
                        source="casetrail/audit",
                        actor=Actor(ACTORS[number % len(ACTORS)], Role.SUPERVISOR),
                        occurred_at=start + timedelta(seconds=number),
                        correlation_id=uuid4(),
                    ),
                )
                for number, (_, event) in enumerate(made[first : first + 500], start=first)
            ]
            streams = {stream for stream, _ in made[first : first + 500]}
            for stream in sorted(streams):
                chosen = [
                    new
                    for new, (named, _) in zip(batch, made[first : first + 500], strict=True)
                    if named == stream
                ]
                await store.append(stream, chosen, ANY_VERSION)
    finally:
        await store.close()


def timed(call: Any, runs: int) -> list[float]:
    call()  # warm-up, not counted: the first call of a row pays for caches and connections
    spent = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console_bench")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--accesses", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=30)
    options = parser.parse_args(argv)
    loop = Loop()
    with tempfile.TemporaryDirectory(prefix="casetrail-console-bench-") as directory:
        data_dir = Path(directory)
        loop.run(fill_case(data_dir, options.events, options.accesses))
        services = embedded_services(data_dir)
        local = loop.run(services.__aenter__())
        try:
            rows = measure(loop, data_dir, local.addresses["audit"], options)
        finally:
            loop.run(services.__aexit__(None, None, None))
    body = "\n".join(
        [
            f"Run: {now_utc()}. Command: `python -m bench.console_bench --events "
            f"{options.events} --accesses {options.accesses} --runs {options.runs}`.",
            "",
            *machine_info().lines(),
            "",
            (__doc__ or "").split("\n\n", 1)[1].strip(),
            "",
            markdown_table(["page", "median ms", "p95 ms", "vs audit call"], rows),
        ]
    )
    replace_section(HEADING, body)
    print(body)


def measure(
    loop: Loop, data_dir: Path, audit_address: str, options: argparse.Namespace
) -> list[list[str]]:
    signer = DevelopmentSigner.load(data_dir)
    settings = ConsoleSettings(
        audit_address=audit_address,
        verifier=TokenVerifier.for_issuer(signer.issuer, signer.audience),
        development_signer=signer,
    )
    token = signer.mint("bench-auditor", "auditor")
    caller = Caller(token, "confidentiality_review")
    audit_channel = loop.run(_open(audit_address))
    direct = AuditClient(audit_channel)
    # The development sign-in answers only loopback host names (TestClient's own is testserver).
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        page = client.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        client.post(
            "/signin",
            data={
                "csrf": csrf,
                "method": "token",
                "token": token,
                "purpose": "confidentiality_review",
            },
        )
        deadline = time.monotonic() + 600
        while True:
            first = client.get(f"/cases/{CASE}")
            found = re.search(r"(\d+) in the case's view", first.text)
            if found and int(found.group(1)) >= options.events:
                break
            if time.monotonic() > deadline:
                title = re.search(r"<h1>([^<]*)</h1>", first.text)
                raise SystemExit(
                    f"audit never showed the whole case: {first.status_code}"
                    f" {title.group(1) if title else ''} {found.group(0) if found else ''}"
                )
            time.sleep(0.5)
        next_link = re.search(r'<a href="([^"]+)" rel="next">', first.text).group(1)  # type: ignore[union-attr]
        next_link = next_link.replace("&amp;", "&")
        second = client.get(next_link)
        previous_link = re.search(r'<a href="([^"]+)" rel="prev">', second.text).group(1)  # type: ignore[union-attr]
        previous_link = previous_link.replace("&amp;", "&")
        rare_type = next(
            e.event_type for e in history_events() if e.event_type not in FACT_EVENT_TYPES
        )
        cases: dict[str, Callable[[], object]] = {
            "timeline, first page (50)": lambda: client.get(f"/cases/{CASE}"),
            "timeline, next page": lambda: client.get(next_link),
            "timeline, previous page": lambda: client.get(previous_link),
            "timeline, actor filter (1 in 10 match)": lambda: client.get(
                f"/cases/{CASE}", params={"actor": ACTORS[3]}
            ),
            f"timeline, type filter ({rare_type})": lambda: client.get(
                f"/cases/{CASE}", params={"type": rare_type}
            ),
            "timeline, period filter (the last day: no event in it)": lambda: client.get(
                f"/cases/{CASE}",
                params={"from": (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")},
            ),
            "timeline, filter matching nothing": lambda: client.get(
                f"/cases/{CASE}", params={"actor": "nobody"}
            ),
        }
        direct_call = lambda: loop.run(  # noqa: E731
            direct.timeline(caller, CASE, "occurred", TimelineFilter(), page_size=50, page_token="")
        )
        runs = options.runs
        reference = timed(direct_call, runs)
        rows = [
            [
                "audit GetTimeline, 50 entries (direct gRPC)",
                f"{median(reference):.1f}",
                f"{percentile(reference, 95):.1f}",
                "1.00x",
            ]
        ]
        whole_case = audit_pb2_grpc.AuditServiceStub(audit_channel).ExportCase
        whole_request = audit_pb2.ExportCaseRequest(context=query(caller.purpose), case_id=CASE)

        async def read_whole_case() -> object:
            return [chunk async for chunk in whole_case(whole_request, metadata=caller.metadata())]

        cases["audit ExportCase (reads the whole case, as GetTimeline did)"] = lambda: loop.run(
            read_whole_case()
        )
        for name, call in cases.items():
            spent = timed(call, runs)
            rows.append(
                [
                    name,
                    f"{median(spent):.1f}",
                    f"{percentile(spent, 95):.1f}",
                    f"{median(spent) / median(reference):.2f}x",
                ]
            )
    loop.run(audit_channel.close())
    return rows


async def _open(address: str) -> Any:
    # The channel belongs to the loop it is opened on.
    return channel(address, plaintext_allowed=False)  # the embedded services, on loopback


if __name__ == "__main__":
    main()
