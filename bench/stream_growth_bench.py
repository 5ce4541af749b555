"""Command cost as a stream grows: coordination's ReserveBudget decision on one budget line.

    python -m bench.stream_growth_bench [--sizes 1000,10000,50000] [--backends sqlite,postgres]
                                        [--commands 15] [--no-write]

Each size is at least ``SNAPSHOT_EVERY`` (``casetrail_platform.folded``, 1,000): the restart
columns need the line's snapshot; the smallest default size is that interval.

One budget line is filled with reservations up to each size in turn. At each size:

* where the time of a command that re-reads its stream goes: fetching the rows, building the
  records (``read_stream``), decoding and validating the events, folding them
  (``budget_state``);
* the command itself, both ways side by side, alternating: ``before``, ``decide.execute``
  reading and folding the whole stream (as every command did); ``after``,
  ``decide.execute_folded`` on the kept state (``BUDGET_LINE``), reading only what came since.
  ``after cold``: its first command at the size, which folds everything the filling appended
  behind its back (what a process pays once per line after a start or an eviction).
* the first command after a restart (the kept states dropped), alternating, medians of 3:
  ``restart, no snapshot`` folds the whole line (the snapshots deleted first);
  ``restart, snapshot`` starts from the line's snapshot (``BUDGET_LINE.snapshots``, written
  after the command that folded the fill) and folds only the events after it (a few dozen);
  ``snapshot N behind`` (N = ``SNAPSHOT_EVERY - 1``, 999), then (medians of 3), with the line
  filled to one event short of its next snapshot first (so it grows by up to 3 intervals): what
  a state evicted just before its next snapshot costs on its next use, the most that writing a
  snapshot at eviction would save.

The decision is the service's (``decide_reservation``); the store, the command table and the
version check are the real ones, durable commits included. PostgreSQL: ``CASETRAIL_PG_DSN``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import machine_info, markdown_table, median, now_utc, replace_section
from casetrail_platform import decide
from casetrail_platform.commands import CommandContext
from casetrail_platform.decide import execute, execute_folded, snapshots_written
from casetrail_platform.folded import SNAPSHOT_EVERY
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.postgres import PostgresEventStore
from casetrail_platform.store.rows import COLUMNS
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.funding import BudgetReserved
from events.catalog.values import Money
from events.catalog_registry import default_registry
from events.envelope import Actor, EventMetadata, NewEvent
from infra.servers import PG_DSN, server_setting
from services.coordination.domain.agency import BudgetLine
from services.coordination.domain.budget import BUDGET_LINE, budget_state
from services.coordination.domain.commands import ReserveBudget
from services.coordination.domain.facts import CaseFacts, budget_stream
from services.coordination.domain.funding import decide_reservation
from services.coordination.domain.schedule import Schedule

LINE = BudgetLine(
    budget_line="home-care-2026",
    name="Home care 2026",
    amount=Money(amount_minor_units=10**15, currency="EUR"),
)
STREAM = budget_stream(LINE.budget_line)
AMOUNT = Money(amount_minor_units=100, currency="EUR")
ACTOR = Actor("coordinator-1", Role.CASE_MANAGER)
FILL_BATCH = 500
HEADING = "## Stream growth: command cost vs. stream length (h-fold)"


def _reservation(number: int) -> NewEvent:
    return NewEvent(
        event=BudgetReserved(
            case_id=f"case-{number % 997}",
            reservation_id=f"fill-{number}",
            budget_line=LINE.budget_line,
            amount=AMOUNT,
        ),
        metadata=EventMetadata(
            source="casetrail/coordination",
            actor=ACTOR,
            occurred_at=datetime.now(UTC),
            correlation_id=uuid.uuid4(),
        ),
    )


async def _fill(store: EventStore, size: int) -> None:
    version = await store.stream_version(STREAM)
    while version < size:
        batch = [_reservation(n) for n in range(version, min(size, version + FILL_BATCH))]
        version = (await store.append(STREAM, batch, version))[-1].sequence


def _decide(history_or_state: Any) -> list[Any]:
    state = history_or_state
    # A case of its own per command: a line holds at most 100 reservations of one case naming
    # no service (casetrail_platform.limits), and the benchmark makes more than that.
    case_id = f"bench-{uuid.uuid4().hex}"
    facts = CaseFacts(case_id=case_id, client_id="client-1", needs=())
    command = ReserveBudget(case_id=case_id, budget_line=LINE.budget_line, amount=AMOUNT)
    return decide_reservation(LINE, state, facts, Schedule(0, {}), command, uuid.uuid4().hex)


async def _before(store: EventStore) -> None:
    context = CommandContext(ACTOR, uuid.uuid4().hex)
    await execute(
        store,
        "casetrail/coordination",
        context,
        STREAM,
        lambda history: _decide(budget_state(history)),
    )


async def _after(store: EventStore) -> None:
    context = CommandContext(ACTOR, uuid.uuid4().hex)
    await execute_folded(store, "casetrail/coordination", context, STREAM, BUDGET_LINE, _decide)


async def _timed(work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await work()
    return (time.perf_counter() - started) * 1000


async def _restarts(
    store: EventStore, drop_snapshots: Callable[[], Awaitable[object]]
) -> tuple[float, float]:
    """Milliseconds (medians of 3, alternating) of the first command after a restart without
    and with the line's snapshot. A restart is the store's kept states dropped."""
    without: list[float] = []
    with_snapshot: list[float] = []
    for round_number in range(3):
        pair = [(without, True), (with_snapshot, False)]
        for found, drop in pair if round_number % 2 == 0 else pair[::-1]:
            # Each command folding the whole line writes its snapshot: wait for it, so the
            # next restart finds one (or deletes it) and nothing writes while one is timed.
            await snapshots_written(store)
            if drop:
                await drop_snapshots()
            decide._folds.pop(store, None)
            found.append(await _timed(lambda: _after(store)))
    await snapshots_written(store)
    return median(without), median(with_snapshot)


def behind() -> int:
    """How far behind its line the snapshot of the last restart column is: one event short of
    the next (read from ``SNAPSHOT_EVERY`` when called, so the label and the filling follow the
    product's interval)."""
    return SNAPSHOT_EVERY - 1


async def _stale_restarts(store: EventStore) -> float:
    """Milliseconds (median of 3) of the first command after a restart, or an eviction, with
    the line's snapshot ``behind()`` events behind: the command folds them and writes
    the next snapshot, so each round fills the line up to one short of the next."""
    found: list[float] = []
    for _ in range(3):
        await snapshots_written(store)
        snapshot = await store.load_snapshot(BUDGET_LINE.name, STREAM)
        assert snapshot is not None
        await _fill(store, snapshot.version + behind())
        decide._folds.pop(store, None)
        found.append(await _timed(lambda: _after(store)))
    await snapshots_written(store)
    return median(found)


async def _phases(store: EventStore, rows: Callable[[], Awaitable[object]]) -> dict[str, float]:
    """Milliseconds (median of 3) of each part of a whole-stream read and fold."""
    found: dict[str, list[float]] = {"rows": [], "records": [], "decode": [], "fold": []}
    for _ in range(3):
        found["rows"].append(await _timed(rows))
        started = time.perf_counter()
        history = await store.read_stream(STREAM)
        found["records"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        for recorded in history:
            recorded.event  # noqa: B018 (decoding is what is timed)
        found["decode"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        budget_state(history)
        found["fold"].append((time.perf_counter() - started) * 1000)
    return {name: median(values) for name, values in found.items()}


async def _run_backend(
    name: str,
    store: EventStore,
    rows: Callable[[], Awaitable[object]],
    drop_snapshots: Callable[[], Awaitable[object]],
    args: argparse.Namespace,
) -> list[list[str]]:
    table: list[list[str]] = []
    for size in args.sizes:
        await _fill(store, size)
        phases = await _phases(store, rows)
        cold = await _timed(lambda: _after(store))
        before: list[float] = []
        after: list[float] = []
        for round_number in range(args.commands):
            pair = [("before", _before), ("after", _after)]
            for label, command in pair if round_number % 2 == 0 else pair[::-1]:
                (before if label == "before" else after).append(
                    await _timed(lambda command=command: command(store))  # type: ignore[misc]
                )
        b, a = median(before), median(after)
        restart_whole, restart_snapshot = await _restarts(store, drop_snapshots)
        restart_stale = await _stale_restarts(store)
        table.append(
            [
                name,
                f"{size:,}",
                f"{phases['rows']:.1f}",
                f"{phases['records']:.1f}",
                f"{phases['decode']:.1f}",
                f"{phases['fold']:.1f}",
                f"{b:.1f}",
                f"{a:.2f}",
                f"{cold:.1f}",
                f"{b / a:.0f}x",
                f"{restart_whole:.1f}",
                f"{restart_snapshot:.1f}",
                f"{restart_stale:.1f}",
            ]
        )
        print(" | ".join(table[-1]), flush=True)
    return table


async def _sqlite(args: argparse.Namespace) -> list[list[str]]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "events.db"
        store = await SqliteEventStore.open(path, default_registry())
        query = f"SELECT {COLUMNS} FROM stored_events WHERE stream = ? ORDER BY sequence"

        async def rows() -> object:
            return await store.read(lambda c: c.execute(query, (STREAM,)).fetchall())

        async def drop_snapshots() -> object:
            return await store.writer.write(lambda c: c.execute("DELETE FROM snapshots"))

        try:
            return await _run_backend("SQLite", store, rows, drop_snapshots, args)
        finally:
            await store.close()


async def _postgres(args: argparse.Namespace) -> list[list[str]]:
    dsn = server_setting(PG_DSN)
    schema = f"bench_growth_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    store = await PostgresEventStore.connect(dsn, default_registry(), schema=schema)
    query = sql.SQL(f"SELECT {COLUMNS} FROM {{}} WHERE stream = %s ORDER BY sequence").format(
        sql.Identifier(schema, "stored_events")
    )

    async def rows() -> object:
        return await store._fetch(query, (STREAM,))

    async def drop_snapshots() -> object:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "snapshots")))
        return None

    try:
        return await _run_backend("PostgreSQL", store, rows, drop_snapshots, args)
    finally:
        await store.close()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def headers() -> list[str]:
    return [
        "backend",
        "events on the line",
        "rows ms",
        "read_stream ms",
        "decode ms",
        "fold ms",
        "before: command ms",
        "after: command ms",
        "after cold ms",
        "before/after",
        "restart, no snapshot ms",
        "restart, snapshot ms",
        f"restart, snapshot {behind():,} behind ms",
    ]


async def main(args: argparse.Namespace) -> None:
    rows: list[list[str]] = []
    for backend in args.backends:
        rows.extend(await (_sqlite(args) if backend == "sqlite" else _postgres(args)))
    table = markdown_table(headers(), rows)
    print(table)
    if args.write:
        machine = machine_info()
        body = "\n".join(
            [
                f"Run: {now_utc()}, `python -m bench.stream_growth_bench` "
                f"(sizes {', '.join(f'{s:,}' for s in args.sizes)}, "
                f"{args.commands} commands each way per size, medians).",
                "",
                *[f"- {line}" for line in machine.lines()],
                "",
                "One budget line filled with reservations; at each size, the parts of a "
                "whole-stream read (rows fetched, `read_stream` = rows + records, decoding and "
                "validating every event, `budget_state` fold: medians of 3), then "
                "ReserveBudget's decision appended both ways, alternating: before = "
                "`decide.execute` (reads and folds the whole line), after = "
                "`decide.execute_folded` on the kept state (reads what came since). "
                "After cold = its first command at the size, folding the whole fill. "
                "Restart = the first command once the kept states are dropped (medians of 3, "
                "alternating): no snapshot = the snapshots deleted, the whole line folded; "
                "snapshot = from the line's snapshot, folding only the events after it (a few "
                f"dozen); {behind():,} behind = then with the line filled to one event short of "
                f"its next snapshot (median of 3; the line grows by up to {3 * SNAPSHOT_EVERY:,}): "
                "the most a snapshot "
                "written when a state is evicted would save.",
                "",
                table,
            ]
        )
        replace_section(HEADING, body)


def _sizes(text: str) -> list[int]:
    """``--sizes``: whole numbers, none below ``SNAPSHOT_EVERY``: the restart columns start
    from the line's snapshot, which a shorter line does not have."""
    try:
        sizes = [int(size) for size in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not whole numbers separated by commas: {text!r}"
        ) from None
    if min(sizes) < SNAPSHOT_EVERY:
        raise argparse.ArgumentTypeError(
            f"each size must be at least {SNAPSHOT_EVERY:,} (a snapshot is written every "
            f"{SNAPSHOT_EVERY:,} events; the restart columns start from one): {text!r}"
        )
    return sizes


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=_sizes, default=f"{SNAPSHOT_EVERY},10000,50000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--commands", type=int, default=15)
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    args.backends = args.backends.split(",")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
