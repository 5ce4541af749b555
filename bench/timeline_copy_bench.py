"""Audit's copy of an access record: the CPU audit's timeline spends per record it keeps, on
PostgreSQL, with its seen-marker, the record, its two index entries and the case's header in one
statement (``DocumentTransaction.put_once``, the product) or in the three statements the
port's default makes (how it was before, and how SQLite still does it).

    python -m bench.timeline_copy_bench [--records 3000] [--batch 10] [--rounds 4] [--no-write]

Access records as audit's consumer decodes them from Kafka (``from_kafka_binary``), spread
over 100 cases, go through audit's own ``BusProjectionHandler`` and ``TimelineProjection`` in
batches of ``--batch`` (one read-model transaction each), on a schema of the run's own
(dropped afterwards). CPU is this process's and the PostgreSQL server's (its processes, read
from ``/proc``). Rounds alternate the order of the two ways. Needs the PostgreSQL of ``make
servers-start`` (``CASETRAIL_PG_DSN``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from bench.common import (
    fmt_ratio,
    markdown_table,
    median,
    median_and_rounds,
    replace_section,
    run_header,
)
from bench.grpc_bench.cpu import cpu_of, postgres_pids
from casetrail_platform.projections import postgres as postgres_read_models
from casetrail_platform.projections.port import DocumentTransaction
from casetrail_platform.projections.runner import BusProjectionHandler
from events.catalog.access import AccessPurpose, RecordAccessed, RecordSection
from events.catalog.base import Role
from events.catalog_registry import default_registry
from events.cloudevents import from_kafka_binary, to_kafka_binary
from events.envelope import Actor, EventMetadata, RecordedEvent
from events.registry import EventRegistry
from services.audit.adapters.timeline import TimelineProjection
from tests.support.backends import read_models_on

HEADING = "## Audit's copy of an access record in one statement"
WAYS = ("three statements (before)", "one statement (put_once)")
CASES = 100
READER = Actor(user_id="coord-carla", role=Role.COORDINATOR)


@dataclass(frozen=True)
class Window:
    records: int
    process_cpu: float
    server_cpu: float
    seconds: float

    def per_record(self, value: float) -> float:
        return value / self.records * 1e6


@contextmanager
def kept_in_three_statements(three: bool) -> Iterator[None]:
    """This benchmark's switch, not the product's: the PostgreSQL transaction's ``put_once``
    replaced by the port's default (``put_new``, ``put_many``, ``put_new``)."""
    transaction = postgres_read_models._PostgresTransaction
    one_statement = transaction.put_once
    if three:
        transaction.put_once = DocumentTransaction.put_once  # type: ignore[method-assign]
    try:
        yield
    finally:
        transaction.put_once = one_statement  # type: ignore[method-assign]


def access_records(registry: EventRegistry, count: int, first: int) -> list[RecordedEvent]:
    """``count`` access records as audit's Kafka consumer hands them over."""
    start = datetime(2026, 12, 6, tzinfo=UTC)
    records = []
    for number in range(first, first + count):
        case_id = f"case-{number % CASES:04d}"
        occurred_at = start + timedelta(microseconds=number)
        recorded = RecordedEvent(
            event_id=uuid4(),
            stream=f"access-{case_id}",
            sequence=number // CASES + 1,
            position=number + 1,
            recorded_at=occurred_at,
            event=RecordAccessed(
                case_id=case_id,
                accessor_id=READER.user_id,
                accessor_role=READER.role,
                purpose=AccessPurpose.COORDINATION,
                sections=(RecordSection.ASSESSMENT, RecordSection.PLAN),
                rule="agency-coordinator",
                policy_version="2026.12-4",
            ),
            metadata=EventMetadata(
                source="casetrail/planning",
                actor=READER,
                occurred_at=occurred_at,
                correlation_id=uuid4(),
            ),
        )
        record = to_kafka_binary(recorded)
        records.append(from_kafka_binary(record.key, record.headers, record.value, registry))
    return records


async def window(
    handler: BusProjectionHandler, records: Sequence[RecordedEvent], batch: int, three: bool
) -> Window:
    with kept_in_three_statements(three):
        process_before, server_before = time.process_time(), cpu_of(postgres_pids())
        began = time.perf_counter()
        for first in range(0, len(records), batch):
            await handler.handle_batch(records[first : first + batch])
        seconds = time.perf_counter() - began
        process = time.process_time() - process_before
        server = cpu_of(postgres_pids()) - server_before
    return Window(len(records), process, server, seconds)


async def run(records: int, batch: int, rounds: int) -> str:
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    registry = default_registry()
    results: dict[str, list[Window]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as directory:
        async with read_models_on("postgres", Path(directory), "bench_timeline") as read_models:
            handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
            await handler.handle_batch(access_records(registry, CASES, 0))  # every case known
            first = CASES
            for round_number in range(rounds):
                order = WAYS if round_number % 2 == 0 else tuple(reversed(WAYS))
                for way in order:
                    taken = access_records(registry, records, first)
                    first += records
                    three = way == WAYS[0]
                    results[way].append(await window(handler, taken, batch, three))
    rows = []
    for way, windows in results.items():
        process = [w.per_record(w.process_cpu) for w in windows]
        server = [w.per_record(w.server_cpu) for w in windows]
        rows.append([
            way,
            median_and_rounds(process),
            median_and_rounds(server),
            f"{median(process) + median(server):.0f}",
            median_and_rounds([records / w.seconds for w in windows]),
        ])  # fmt: skip
    before, after = (results[way] for way in WAYS)
    ratios = [
        fmt_ratio(
            (b.per_record(b.process_cpu) + b.per_record(b.server_cpu))
            / (a.per_record(a.process_cpu) + a.per_record(a.server_cpu))
        )
        for a, b in zip(before, after, strict=True)
    ]
    command = (
        f"python -m bench.timeline_copy_bench --records {records} --batch {batch} --rounds {rounds}"
    )
    lines = [
        *run_header(began, command, load_before),
        "",
        f"Audit's timeline on PostgreSQL, {records} access records a round over {CASES} cases "
        f"already known, in transactions of {batch}, {rounds} rounds (the order of the two "
        "ways alternating); per record, the median of the rounds and each round in brackets:",
        "",
        markdown_table(
            [
                "the record kept in",
                "audit's process, µs CPU/record",
                "PostgreSQL, µs CPU/record",
                "both",
                "records/s",
            ],
            rows,
        ),
        "",
        f"One statement against three, both sides' CPU per record, by round: {', '.join(ratios)}.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args(argv)
    text = asyncio.run(run(options.records, options.batch, options.rounds))
    print(text)
    if not options.no_write:
        replace_section(HEADING, text)


if __name__ == "__main__":
    main()
