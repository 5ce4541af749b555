"""Need-to-know reviews (issue 9 items 5 and 7): what an accounting of disclosures and an
"as U saw it at T" view cost beside the audit reads they resemble.

``python -m bench.reviews_bench [--cases C] [--reads N] [--runs R]`` writes the section
"Need-to-know reviews (issue 9)" of ``bench/RESULTS.md``. Audit's application layer is called
in-process on SQLite (no gRPC), on one client with C cases of N recorded reads each (one in ten by
a partner agency under consent, the rest by the assigned worker). Side by side in alternating
rounds: the reference, one case read whole from audit's timeline and every event decoded (what
GetAccessLog, GetCaseStateAsOf and GetCaseAsSeen each did before 12-03), then GetCaseStateAsOf of
one case (the case's own events, its access records left out), GetAccessLog of one case (its first
page of 100, from the timeline's index), ListDisclosures of the client (its cases' facts, then one
page of 100 from audit's disclosure index: ``services.audit.adapters.disclosure_index``) beside
what the accounting did before that index (every event of the client's cases read and classified:
the same answer, computed from the timelines), and GetCaseAsSeen of one case (state and policy
facts folded from the case's own events up to T, U's reads from the timeline's index). Every call
records its own access, as in the product, so the histories grow by one event per call measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from bench.common import (
    machine_info,
    markdown_table,
    median,
    now_utc,
    percentile,
    replace_section,
    rotations,
)
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.vocabulary import POLICY_VERSION
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.queries import QueryContext
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import (
    AccessPurpose,
    ConsentGranted,
    ConsentRecipient,
    RecipientKind,
    RecordAccessed,
    RecordSection,
)
from events.catalog.assignment import CaseAssigned
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseOpened, PresentingNeed, ReferralSource, ReferralSourceKind
from events.catalog.values import NeedCategory
from events.catalog_registry import default_registry
from events.envelope import Actor, EventMetadata, RecordedEvent
from services.audit.adapters.client_cases import ClientCasesProjection, ReadModelClientCases
from services.audit.adapters.disclosure_index import (
    DisclosureIndexProjection,
    ReadModelDisclosureIndex,
)
from services.audit.adapters.timeline import ReadModelTimelines, TimelineProjection
from services.audit.app import as_seen, disclosures, queries
from services.audit.domain.disclosures import disclosure_of
from services.audit.domain.history import TimeBasis
from services.audit.entrypoints.reviews import state_rendering

HEADING = "## Need-to-know reviews (issue 9)"
REFERENCE = "whole case read and decoded (each call below did this before 12-03)"
CLIENT = "bench-client"
PARTNER = "bench-partner"
WORKER = "sw-bench"
WORKER_ACTOR = Actor(WORKER, Role.SOCIAL_WORKER)
PARTNER_ACTOR = Actor(PARTNER, Role.PARTNER_AGENCY)
AUDITOR = QueryContext(Actor("bench-auditor", Role.AUDITOR), AccessPurpose.CONFIDENTIALITY_REVIEW)


def case_history(case_id: str, reads: int, start: datetime) -> list[RecordedEvent]:
    sequence = 0

    def recorded(
        event: CaseEvent, at: datetime, stream: str, actor: Actor = WORKER_ACTOR
    ) -> RecordedEvent:
        nonlocal sequence
        sequence += 1
        return RecordedEvent(
            event_id=uuid4(),
            stream=stream,
            sequence=sequence,
            position=sequence,
            recorded_at=at,
            event=event,
            metadata=EventMetadata(
                source="casetrail/intake",
                actor=actor,
                occurred_at=at,
                correlation_id=uuid4(),
            ),
        )

    case = f"case-{case_id}"
    events = [
        recorded(
            CaseOpened(
                case_id=case_id,
                client_id=CLIENT,
                referral_source=ReferralSource(kind=ReferralSourceKind.SELF),
                presenting_needs=(PresentingNeed(category=NeedCategory.HOME_CARE),),
            ),
            start,
            case,
        ),
        recorded(
            CaseAssigned(
                case_id=case_id,
                worker_id=WORKER,
                worker_role=Role.SOCIAL_WORKER,
                reason="bench",
                worker_team="team-east",
            ),
            start + timedelta(seconds=1),
            case,
        ),
        recorded(
            ConsentGranted(
                case_id=case_id,
                client_id=CLIENT,
                consent_id=f"consent-{case_id}",
                scope=(RecordSection.IDENTITY, RecordSection.REFERRALS, RecordSection.SERVICES),
                recipient=ConsentRecipient(
                    kind=RecipientKind.AGENCY, recipient_id=PARTNER, name="Partner"
                ),
                purpose=AccessPurpose.COORDINATION,
                expires_at=start + timedelta(days=365),
            ),
            start + timedelta(seconds=2),
            case,
        ),
    ]
    for number in range(reads):
        partner = number % 10 == 0
        events.append(
            recorded(
                RecordAccessed(
                    case_id=case_id,
                    accessor_id=PARTNER if partner else WORKER,
                    accessor_role=Role.PARTNER_AGENCY if partner else Role.SOCIAL_WORKER,
                    accessor_agency_id=PARTNER if partner else "eastbay-dss",
                    purpose=AccessPurpose.COORDINATION if partner else AccessPurpose.DIRECT_CARE,
                    sections=(RecordSection.IDENTITY, RecordSection.REFERRALS),
                    consent_ids=(f"consent-{case_id}",) if partner else (),
                    rule="referral-recipient" if partner else "assigned-worker",
                    policy_version=POLICY_VERSION,
                ),
                start + timedelta(seconds=10 + number),
                f"access-{case_id}",
                # As AccessControl records them: the reader is the event's actor.
                PARTNER_ACTOR if partner else WORKER_ACTOR,
            )
        )
    return events


async def read_whole_case(deps: queries.AuditDeps, case_id: str) -> int:
    return len([recorded.event for recorded in await deps.timelines.events_of(case_id)])


async def run(options: argparse.Namespace, directory: Path) -> list[list[str]]:
    store = await SqliteEventStore.open(directory / "events.db", default_registry())
    read_models = SqliteReadModelStore(directory / "read-models.db")
    try:
        start = datetime.now(UTC) - timedelta(days=60)
        cases = [f"bench-case-{number}" for number in range(options.cases)]
        handlers = [
            BusProjectionHandler(read_models, TimelineProjection(), service="audit"),
            BusProjectionHandler(read_models, ClientCasesProjection(), service="audit"),
            BusProjectionHandler(
                read_models, DisclosureIndexProjection(DEFAULT_HOME_AGENCY), service="audit"
            ),
        ]
        for case_id in cases:
            history = case_history(case_id, options.reads, start)
            for handler in handlers:
                for first in range(0, len(history), 500):
                    await handler.handle_batch(history[first : first + 500])
        deps = queries.AuditDeps(
            timelines=ReadModelTimelines(read_models, default_registry()),
            store=store,
            access=AccessControl(store, None, "casetrail/audit", home_agency=DEFAULT_HOME_AGENCY),
        )
        client_cases = ReadModelClientCases(read_models)
        index = ReadModelDisclosureIndex(read_models, default_registry())

        async def classify_every_event() -> int:
            found = 0
            for case_id in await client_cases.cases_of(CLIENT):
                events = await deps.timelines.events_of(case_id)
                found += sum(disclosure_of(e, DEFAULT_HOME_AGENCY) is not None for e in events)
            return found

        at = start + timedelta(seconds=10 + options.reads // 2)
        period = disclosures.period(start - timedelta(days=1), datetime.now(UTC))
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            REFERENCE: lambda: read_whole_case(deps, cases[0]),
            "GetCaseStateAsOf, one case (recorded)": lambda: queries.get_state_as_of(
                deps, AUDITOR, cases[0], at, TimeBasis.RECORDED
            ),
            "GetAccessLog, one case (first page of 100)": lambda: queries.get_access_log(
                deps, AUDITOR, cases[0]
            ),
            f"ListDisclosures, client of {options.cases} cases (page 100)": lambda: (
                disclosures.list_disclosures(deps, client_cases, index, AUDITOR, CLIENT, period)
            ),
            f"  before the index: every event of the {options.cases} cases classified": (
                classify_every_event
            ),
            "GetCaseAsSeen, one case": lambda: as_seen.case_as_seen(
                deps, AUDITOR, cases[0], as_seen.UserClaims(PARTNER), at, state_rendering(at)
            ),
        }
        spent: dict[str, list[float]] = {name: [] for name in calls}
        for round_number in range(options.runs):
            for name in rotations(list(calls), round_number):
                began = time.perf_counter()
                await calls[name]()
                spent[name].append((time.perf_counter() - began) * 1000)
        reference = median(spent[REFERENCE])
        return [
            [
                name,
                f"{median(values):.1f}",
                f"{percentile(values, 95):.1f}",
                f"{median(values) / reference:.2f}x",
            ]
            for name, values in spent.items()
        ]
    finally:
        await read_models.close()
        await store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reviews_bench")
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    options = parser.parse_args(argv)
    load_before = f"{os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory(prefix="casetrail-reviews-bench-") as directory:
        rows = asyncio.run(run(options, Path(directory)))
    load_after = f"{os.getloadavg()[0]:.2f}"
    body = "\n".join(
        [
            f"Run: {now_utc()}. Command: `python -m bench.reviews_bench --cases {options.cases}"
            f" --reads {options.reads} --runs {options.runs}`. Load average (1 min) before /"
            f" after: {load_before} / {load_after}.",
            "",
            *machine_info().lines(),
            "",
            (__doc__ or "").split("\n\n", 1)[1].strip(),
            "",
            markdown_table(["call", "median ms", "p95 ms", "vs whole case"], rows),
        ]
    )
    replace_section(HEADING, body)
    print(body)


if __name__ == "__main__":
    main()
