"""Ledger benchmark (issue 10): appends with and without the ledger, verify-store, proofs.

    python -m bench.ledger_bench [--quick] [--backends sqlite,postgres] [--no-write]

* Appends: the same writers append to a store with nobody hashing behind them ("off") and to
  one whose ledger follows it in the same process as a service runs it ("on": ``LedgerLog.run``
  hashing every new event, subtrees stored, a checkpoint signed every second). 1 and 100 events
  per commit, 8 concurrent writers; rounds alternate the order; the ratio is on/off.
* verify-store: ``verify_store`` over a store of real events (leaves per second), beside the
  rate of bare SHA-256 over the same canonical bytes in Python.
* Inclusion proofs in a ledger of 1,000,000 leaves: one proof = one query for its O(log n)
  stored subtree hashes plus the proof's hashing (the ledger's leaves are synthetic here: a
  proof reads the ledger only, never the events).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.common import (
    fmt_rate,
    fmt_ratio,
    machine_info,
    markdown_table,
    median,
    now_utc,
    percentile,
    replace_section,
)
from bench.store_bench import command_events
from casetrail_platform.keys.fields import FieldProtection
from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.port import DataKeyTable
from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.canonical import canonical_row
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import LedgerLog, prove_inclusion
from casetrail_platform.ledger.merkle import RootAccumulator
from casetrail_platform.ledger.note import origin_of
from casetrail_platform.ledger.port import LedgerStore
from casetrail_platform.ledger.verify import verify_store
from casetrail_platform.store.port import EventStore
from events.catalog_registry import default_registry
from events.registry import EventRegistry
from infra.servers import PG_DSN, server_setting

HEADING = "## Ledger (issue 10)"
ENCRYPTION_HEADING = "## Ledger with encryption (issue 10)"
WRITERS = 8


@dataclass(frozen=True)
class Sizes:
    rounds: int
    commits_of_1: int
    """Per writer, per round."""
    commits_of_100: int
    verify_events: int
    proof_leaves: int
    proofs: int


FULL = Sizes(rounds=5, commits_of_1=150, commits_of_100=40, verify_events=200_000,
             proof_leaves=1_000_000, proofs=2000)  # fmt: skip
QUICK = Sizes(rounds=2, commits_of_1=40, commits_of_100=4, verify_events=20_000,
              proof_leaves=100_000, proofs=300)  # fmt: skip


@dataclass
class Backend:
    name: str
    open_store: Callable[
        [EventRegistry | None], Awaitable[tuple[EventStore, Callable[[], Awaitable[LedgerStore]]]]
    ]
    cleanup: Callable[[], Awaitable[None]]
    key_table: Callable[[], DataKeyTable]
    """A new table of clients' data keys (for sealing sensitive fields)."""
    server_cpu: Callable[[], Awaitable[float]] | None = None
    """CPU seconds used so far by the database server's processes (PostgreSQL)."""


@dataclass(frozen=True)
class AppendRun:
    rate: float
    """Events per second until the last writer's commit."""
    client_cpu: float
    """CPU seconds of this process (writers, and the follower when on) per event."""
    server_cpu: float
    """CPU seconds of the database server per event (0 for SQLite: in process)."""
    lag: int
    """Events not yet hashed when the last writer finished."""


def _process_cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def postgres_cpu_seconds(data_directory: Path) -> float:
    """CPU seconds of a local PostgreSQL: the postmaster, its live children and those gone."""
    return _family_cpu_seconds(int((data_directory / "postmaster.pid").read_text().split()[0]))


def _family_cpu_seconds(parent: int) -> float:
    """CPU seconds of a process, its live children and those gone (this process: with
    verify-store's forkserver, which reaps the workers it forked)."""
    own, gone = _process_cpu_seconds(parent)
    total = own + gone
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                total += sum(_process_cpu_seconds(int(entry.name)))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total


def sqlite_backend(scratch: Path, registry: EventRegistry | None = None) -> Backend:
    """``registry``: the events' catalog (one that seals sensitive fields, say)."""
    from casetrail_platform.ledger.sqlite import SqliteLedgerStore
    from casetrail_platform.store.sqlite import SqliteEventStore

    async def open_store(
        registry: EventRegistry | None = None,
    ) -> tuple[EventStore, Callable[[], Awaitable[LedgerStore]]]:
        directory = scratch / uuid.uuid4().hex[:8]
        directory.mkdir()
        store = await SqliteEventStore.open(directory / "events.db", registry or default_registry())

        async def ledger() -> LedgerStore:
            return await SqliteLedgerStore.open(directory / "ledger.db", directory / "events.db")

        return store, ledger

    async def cleanup() -> None:
        return None

    def key_table() -> DataKeyTable:
        from casetrail_platform.keys.sqlite import SqliteDataKeyTable

        return SqliteDataKeyTable(scratch / f"keys-{uuid.uuid4().hex[:8]}.db")

    return Backend("SQLite", open_store, cleanup, key_table)


def postgres_backend(dsn: str, registry: EventRegistry | None = None) -> Backend:
    from casetrail_platform.ledger.postgres import PostgresLedgerStore
    from casetrail_platform.store.postgres import PostgresEventStore

    schemas: list[str] = []

    async def open_store(
        registry: EventRegistry | None = None,
    ) -> tuple[EventStore, Callable[[], Awaitable[LedgerStore]]]:
        schema = f"bench_ledger_{uuid.uuid4().hex[:10]}"
        schemas.append(schema)
        store = await PostgresEventStore.connect(dsn, registry or default_registry(), schema=schema)

        async def ledger() -> LedgerStore:
            return await PostgresLedgerStore.connect(dsn, schema=schema)

        return store, ledger

    async def cleanup() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            for schema in schemas:
                await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    async def server_cpu() -> float:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            cursor = await admin.execute("SHOW data_directory")
            row = await cursor.fetchone()
        assert row is not None
        try:
            return await asyncio.to_thread(postgres_cpu_seconds, Path(row[0]))
        except OSError:
            return 0.0  # a server not on this machine (or not ours to read)

    def key_table() -> DataKeyTable:
        from casetrail_platform.keys.postgres import PostgresDataKeyTable

        schema = f"bench_keys_{uuid.uuid4().hex[:10]}"
        schemas.append(schema)
        return PostgresDataKeyTable(dsn, schema=schema)

    return Backend("PostgreSQL", open_store, cleanup, key_table, server_cpu)


async def append_rate(
    backend: Backend,
    scratch: Path,
    per_commit: int,
    commits: int,
    ledger_on: bool,
    encryption: bool = False,
) -> AppendRun:
    """WRITERS concurrent writers (each its own stream) append ``commits`` commits each;
    ``encryption`` (with the ledger on): sensitive fields sealed as the services store them."""
    registry = None
    table: DataKeyTable | None = None
    if ledger_on and encryption:
        table = backend.key_table()
        kek = FileKeyEncryptionKey(scratch / f"kek-{uuid.uuid4().hex[:8]}" / KEK_FILE_NAME)
        registry = default_registry().protected(FieldProtection(ClientKeyring(kek, table)))
    store, open_ledger = await backend.open_store(registry)
    stop = asyncio.Event()
    follower: asyncio.Task[None] | None = None
    ledger_store: LedgerStore | None = None
    if ledger_on:
        ledger_store = await open_ledger()
        signer = FileSigner(origin_of("bench", "bench"), scratch / f"{uuid.uuid4().hex}.key")
        log = LedgerLog(ledger_store, signer)
        follower = asyncio.create_task(log.run(store.wait_for_append, stop, sign_every=1.0))
    batches = [
        [command_events(writer, 1 + i * per_commit, per_commit) for i in range(commits)]
        for writer in range(WRITERS)
    ]

    async def writer(number: int) -> None:
        version = 0
        for events in batches[number]:
            await store.append(f"case-{number:06d}", events, version)
            version += len(events)

    total = WRITERS * commits * per_commit
    server_before = await backend.server_cpu() if backend.server_cpu else 0.0
    cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(writer(number) for number in range(WRITERS)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    server = (await backend.server_cpu() - server_before) if backend.server_cpu else 0.0
    lag = total - await ledger_store.size() if ledger_store is not None else 0
    stop.set()
    if follower is not None:
        await follower
    if ledger_store is not None:
        assert await ledger_store.size() == total
        await ledger_store.close()
    await store.close()
    if table is not None:
        table.close()
    return AppendRun(total / elapsed, cpu / total, server / total, lag)


def _append_row(name: str, per_commit: int, runs: dict[bool, list[AppendRun]]) -> list[str]:
    off, on = runs[False], runs[True]
    ratios = [b.rate / a.rate for a, b in zip(off, on, strict=True)]

    def cpu(items: list[AppendRun]) -> float:
        return median([run.client_cpu + run.server_cpu for run in items])

    return [
        name,
        str(per_commit),
        fmt_rate(median([run.rate for run in off])),
        fmt_rate(median([run.rate for run in on])),
        fmt_ratio(median(ratios)),
        ", ".join(fmt_ratio(ratio) for ratio in ratios),
        f"{cpu(off) * 1e6:.0f} / {cpu(on) * 1e6:.0f}",
        f"{median([run.server_cpu for run in off]) * 1e6:.0f}"
        f" / {median([run.server_cpu for run in on]) * 1e6:.0f}",
        str(max(run.lag for run in on)),
    ]


async def fill(store: EventStore, events: int) -> None:
    """``events`` real catalog events, 1000 per commit."""
    stream = 0
    while events > 0:
        count = min(1000, events)
        await store.append(f"fill-{stream:06d}", command_events(stream, 1, count), 0)
        events -= count
        stream += 1


async def verify_rate(
    backend: Backend, scratch: Path, events: int
) -> tuple[float, float, float, float, float, float]:
    """(verify_store leaves/s as verify-store runs it, on every usable CPU from
    ``verify.PARALLEL_FROM`` events; the same in this process alone; rows read and hashed /s,
    bare SHA-256 of the canonical bytes /s, CPU seconds per leaf of this process (and its
    workers) and of the database server) over ``events``."""
    store, open_ledger = await backend.open_store(None)
    await fill(store, events)
    ledger_store = await open_ledger()
    signer = FileSigner(origin_of("bench", "bench"), scratch / f"{uuid.uuid4().hex}.key")
    log = LedgerLog(ledger_store, signer)
    await log.sign()
    verifier = await signer.verifier()
    # What bounds it: reading and hashing the rows alone (no comparison, no tree). First: the
    # first read after the fill was the slowest on PostgreSQL (a million events, verify-store
    # on every CPU 60k leaves/s read first, 133k in one process read second; cause not
    # isolated, autovacuum after the inserts or the machine's load of 7).
    started = time.perf_counter()
    after = 0
    while batch := await ledger_store.store_leaves(after, 20_000):
        after = batch[-1][0]
    rows_only = events / (time.perf_counter() - started)
    server_before = await backend.server_cpu() if backend.server_cpu else 0.0
    cpu_before = _family_cpu_seconds(os.getpid())
    started = time.perf_counter()
    result = await verify_store(ledger_store, verifier)
    elapsed = time.perf_counter() - started
    cpu = (_family_cpu_seconds(os.getpid()) - cpu_before) / events
    server = ((await backend.server_cpu() - server_before) / events) if backend.server_cpu else 0.0
    assert result.ok, result
    assert result.leaves == events, result
    started = time.perf_counter()
    alone = await verify_store(ledger_store, verifier, workers=1)
    one_process = events / (time.perf_counter() - started)
    assert alone.ok, alone
    assert alone.leaves == events, alone
    rows = await store.read_all(0, 20_000)
    canonical = [
        canonical_row(
            (r.position, str(r.event_id), r.stream, r.sequence, r.event_type, r.schema_version,
             r.data, r.metadata.source, r.metadata.actor.user_id, r.metadata.actor.role.value,
             str(r.metadata.correlation_id), None, 0, 0, r.subject)
        )
        for r in rows
    ]  # fmt: skip
    sha = hashlib.sha256
    started = time.perf_counter()
    for item in canonical:
        sha(b"\x00" + item).digest()
    bare = len(canonical) / (time.perf_counter() - started)
    await ledger_store.close()
    await store.close()
    return events / elapsed, one_process, rows_only, bare, cpu, server


async def proof_times(backend: Backend, leaves: int, proofs: int) -> tuple[float, list[float]]:
    """(seconds to build a ledger of ``leaves`` synthetic leaves, proof latencies)."""
    _store, open_ledger = await backend.open_store(None)
    ledger_store = await open_ledger()
    accumulator = RootAccumulator()
    started = time.perf_counter()
    chunk = 20_000
    for first in range(0, leaves, chunk):
        batch = [
            hashlib.sha256(b"%d" % index).digest()
            for index in range(first, min(first + chunk, leaves))
        ]
        await ledger_store.append(first, accumulator.extend_levels(batch))
    built = time.perf_counter() - started
    root = accumulator.root()
    picker = random.Random(10)
    latencies: list[float] = []
    for _ in range(proofs):
        position = picker.randint(1, leaves)
        started = time.perf_counter()
        proof = await prove_inclusion(ledger_store, position, leaves)
        latencies.append(time.perf_counter() - started)
        merkle.verify_inclusion(position - 1, leaves, proof.leaf_hash, proof.hashes, root)
    await ledger_store.close()
    await _store.close()
    return built, latencies


async def run(
    sizes: Sizes, backends: Sequence[str], dsn: str, write: bool, encryption: bool = False
) -> str:
    """``encryption``: appends only, "on" = ledger and sealed sensitive fields (issue 10's
    target), in a section of its own."""
    begun = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as directory:
        scratch = Path(directory)
        chosen = []
        if "sqlite" in backends:
            chosen.append(sqlite_backend(scratch))
        if "postgres" in backends:
            chosen.append(postgres_backend(dsn))
        append_rows, verify_rows, proof_rows = [], [], []
        try:
            for backend in chosen:
                for per_commit, commits in ((1, sizes.commits_of_1), (100, sizes.commits_of_100)):
                    runs: dict[bool, list[AppendRun]] = {False: [], True: []}
                    for round_number in range(sizes.rounds):
                        order = (False, True) if round_number % 2 == 0 else (True, False)
                        for ledger_on in order:
                            runs[ledger_on].append(
                                await append_rate(
                                    backend, scratch, per_commit, commits, ledger_on, encryption
                                )
                            )
                    append_rows.append(_append_row(backend.name, per_commit, runs))
                    print(append_rows[-1], flush=True)
                if encryption:
                    continue
                verify, one_process, rows_only, bare, cpu, server = await verify_rate(
                    backend, scratch, sizes.verify_events
                )
                verify_rows.append(
                    [backend.name, f"{sizes.verify_events:,}", fmt_rate(verify),
                     fmt_rate(one_process), fmt_rate(rows_only), fmt_rate(bare),
                     fmt_ratio(verify / bare), f"{cpu * 1e6:.1f} / {server * 1e6:.1f}"]
                )  # fmt: skip
                print(verify_rows[-1], flush=True)
                built, latencies = await proof_times(backend, sizes.proof_leaves, sizes.proofs)
                proof_rows.append(
                    [backend.name, f"{sizes.proof_leaves:,}", f"{built:.0f} s",
                     f"{median(latencies) * 1000:.2f}", f"{percentile(latencies, 99) * 1000:.2f}",
                     f"{max(latencies) * 1000:.2f}"]
                )  # fmt: skip
                print(proof_rows[-1], flush=True)
        finally:
            for backend in chosen:
                await backend.cleanup()
    later = [
        "",
        "verify-store (recompute every leaf from the stored events, compare with the"
        " ledger, recompute the root at each signed checkpoint; target >= 500k leaves/s),"
        " beside bare SHA-256 of the canonical bytes in Python:",
        "",
        markdown_table(
            [
                "backend",
                "events",
                "verify-store (leaves/s)",
                "in one process (leaves/s)",
                "rows read + leaf-hashed (/s)",
                "bare SHA-256 (/s)",
                "verify-store / bare SHA-256",
                "CPU µs/leaf: this process and its workers / server",
            ],
            verify_rows,
        ),
        "",
        "Inclusion proof of a random event (query for its subtree hashes + hashing;"
        " target < 5 ms):",
        "",
        markdown_table(
            ["backend", "ledger leaves", "ledger built in", "median ms", "p99 ms", "max ms"],
            proof_rows,
        ),
    ]
    machine = machine_info()
    quick = sizes.rounds == QUICK.rounds
    flags = (" --quick" if quick else "") + (" --encryption" if encryption else "")
    if sizes.verify_events != (QUICK if quick else FULL).verify_events:
        flags += f" --verify-events {sizes.verify_events}"
    on = (
        "ledger and encryption off vs on (on: the follower hashing every event as it is stored"
        " and signing every second, and the sensitive field of every event sealed with its"
        " case's data key, AES-256-GCM)"
        if encryption
        else "ledger off vs on (follower hashing every event as it is stored and signing"
        " every second)"
    )
    text = "\n".join(
        [
            f"Run {now_utc()}, {'quick' if quick else 'full'} run in"
            f" {time.perf_counter() - begun:.0f} s: `python -m bench.ledger_bench{flags}`;"
            f" load average (1 min) at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f}"
            " on 2 cores shared with other work.",
            "",
            *[f"- {line}" for line in machine.lines()],
            "",
            f"Appends, {WRITERS} concurrent writers, {on}, median of"
            f" {sizes.rounds} alternating rounds (target: on/off >= 0.9x):",
            "",
            markdown_table(
                [
                    "backend",
                    "events/commit",
                    "off (events/s)",
                    "on (events/s)",
                    "on/off (median of rounds)",
                    "per round",
                    "CPU µs/event off / on",
                    "of which server",
                    "max lag (events)",
                ],
                append_rows,
            ),
            "",
            "CPU µs/event: this process (writers, and the follower when on) plus, on"
            " PostgreSQL, the server's processes, per event appended, median of rounds; lag: events"
            " not yet hashed when the last writer finished (the follower lingers 250 ms to batch).",
            *([] if encryption else later),
        ]
    )
    if write:
        replace_section(ENCRYPTION_HEADING if encryption else HEADING, text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--no-write", action="store_true")

    parser.add_argument(
        "--encryption",
        action="store_true",
        help="appends only, with sensitive fields sealed as well when the ledger is on",
    )
    parser.add_argument(
        "--verify-events",
        type=int,
        help="events in verify-store's store (default 20,000 quick, 200,000 full); from"
        " verify.PARALLEL_FROM it runs on every usable CPU",
    )
    options = parser.parse_args(argv)
    dsn = server_setting(PG_DSN) if "postgres" in options.backends.split(",") else ""
    sizes = QUICK if options.quick else FULL
    if options.verify_events:
        sizes = dataclasses.replace(sizes, verify_events=options.verify_events)
    text = asyncio.run(
        run(sizes, options.backends.split(","), dsn, not options.no_write, options.encryption)
    )
    print(text)


if __name__ == "__main__":
    main()
