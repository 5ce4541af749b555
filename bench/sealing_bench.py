"""Sealing benchmark (issue 10 item 3): what per-client encryption of sensitive fields costs.

    python -m bench.sealing_bench [--quick] [--backends sqlite,postgres] [--no-write]

The store benchmark's events (``casetrail.contact.logged``, whose ``summary`` is sensitive)
appended by 8 concurrent writers, 1 and 100 events per commit, side by side in one run with
rounds alternating the order:

* sealing off vs on (the store alone): the cost of sealing itself;
* ledger and sealing both off vs both on (the ledger's follower hashing behind the store, as
  ``bench.ledger_bench`` runs it): issue 10's target, on/off >= 0.9x.

Beside them, in-process: sealing one event's data and opening it again (decode), per event.
Keys are the embedded default's (a KEK file, the SQLite key table) or PostgreSQL's key table.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psycopg

from bench.common import fmt_ratio, machine_info, markdown_table, median, now_utc, replace_section
from bench.ledger_bench import (
    QUICK,
    WRITERS,
    Backend,
    Sizes,
    append_rate,
    postgres_backend,
    sqlite_backend,
)
from bench.store_bench import command_events
from casetrail_platform.keys.fields import FieldProtection
from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.port import DataKeyTable
from casetrail_platform.keys.postgres import PostgresDataKeyTable
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from events.catalog_registry import build_registry
from events.registry import EventRegistry, encode
from infra.servers import PG_DSN, server_setting

HEADING = "## Sealing sensitive fields (issue 10)"
FULL = Sizes(rounds=3, commits_of_1=150, commits_of_100=15, verify_events=0, proof_leaves=0,
             proofs=0)  # fmt: skip


def sealing_registry(scratch: Path, table: DataKeyTable) -> EventRegistry:
    keyring = ClientKeyring(FileKeyEncryptionKey(scratch / KEK_FILE_NAME), table)
    return build_registry().protected(FieldProtection(keyring))


def seal_and_open_micros(registry: EventRegistry, count: int) -> tuple[float, float]:
    """Microseconds per event to seal its data, and to decode it opened."""
    events = command_events(0, 1, count)
    encoded = [encode(new.event) for new in events]
    started = time.perf_counter()
    sealed = [
        registry.seal(new.event, new.event_id, data)
        for new, data in zip(events, encoded, strict=True)
    ]
    sealing = time.perf_counter() - started
    started = time.perf_counter()
    for new, data in zip(events, sealed, strict=True):
        registry.decode(new.event.event_type, new.event.schema_version, data, new.event_id)
    opening = time.perf_counter() - started
    return sealing / count * 1e6, opening / count * 1e6


async def run(sizes: Sizes, backends: Sequence[str], dsn: str, write: bool) -> str:
    begun = time.perf_counter()
    rows: list[list[str]] = []
    micro_rows: list[list[str]] = []
    key_schema = f"bench_keys_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="sealing-bench-") as directory:
        scratch = Path(directory)
        pairs: list[tuple[Backend, Backend, EventRegistry]] = []
        if "sqlite" in backends:
            sealed = sealing_registry(scratch, SqliteDataKeyTable(scratch / "keys.db"))
            pairs.append((sqlite_backend(scratch), sqlite_backend(scratch, sealed), sealed))
        if "postgres" in backends:
            sealed = sealing_registry(scratch, PostgresDataKeyTable(dsn, schema=key_schema))
            pairs.append((postgres_backend(dsn), postgres_backend(dsn, sealed), sealed))
        try:
            for plain, sealed_backend, registry in pairs:
                seal_us, open_us = seal_and_open_micros(registry, 2000)
                plain_us = _decode_micros(2000)
                micro_rows.append(
                    [plain.name, f"{seal_us:.1f}", f"{open_us:.1f}", f"{plain_us:.1f}"]
                )
                for per_commit, commits in ((1, sizes.commits_of_1), (100, sizes.commits_of_100)):
                    for ledger in (False, True):
                        rates: dict[bool, list[float]] = {False: [], True: []}
                        for round_number in range(sizes.rounds):
                            order = (False, True) if round_number % 2 == 0 else (True, False)
                            for sealing in order:
                                backend = sealed_backend if sealing else plain
                                run = await append_rate(
                                    backend, scratch, per_commit, commits, ledger
                                )
                                rates[sealing].append(run.rate)
                        off, on = median(rates[False]), median(rates[True])
                        ratios = [b / a for a, b in zip(rates[False], rates[True], strict=True)]
                        what = "ledger + sealing" if ledger else "sealing"
                        rows.append(
                            [plain.name, str(per_commit), what, f"{off:,.0f}", f"{on:,.0f}",
                             fmt_ratio(on / off), ", ".join(fmt_ratio(r) for r in ratios)]
                        )  # fmt: skip
                        print(rows[-1], flush=True)
        finally:
            for plain, sealed_backend, _ in pairs:
                await plain.cleanup()
                await sealed_backend.cleanup()
            if "postgres" in backends:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
                    await admin.execute(f'DROP SCHEMA IF EXISTS "{key_schema}" CASCADE')
    text = "\n".join(
        [
            f"Run {now_utc()}, {'quick' if sizes is QUICK else 'full'} run in"
            f" {time.perf_counter() - begun:.0f} s: `python -m bench.sealing_bench"
            f"{' --quick' if sizes is QUICK else ''}`.",
            "",
            *[f"- {line}" for line in machine_info().lines()],
            "",
            f"Appends of `casetrail.contact.logged` (sensitive `summary`), {WRITERS} concurrent"
            ' writers; "off" is the plain store (and no ledger), "on" seals (and, in the'
            f" ledger rows, the ledger follows); median of {sizes.rounds} alternating rounds"
            " (issue 10 target for ledger + sealing: on/off >= 0.9x):",
            "",
            markdown_table(
                [
                    "backend",
                    "events/commit",
                    "turned on",
                    "off (events/s)",
                    "on (events/s)",
                    "on/off",
                    "per round",
                ],
                rows,
            ),
            "",
            "Per event, in-process (2,000 events, keys cached): sealing its data, decoding it"
            " with its sealed value opened, decoding the same event unsealed:",
            "",
            markdown_table(
                ["keys on", "seal (µs)", "decode sealed (µs)", "decode plain (µs)"], micro_rows
            ),
        ]
    )
    if write:
        replace_section(HEADING, text)
    return text


def _decode_micros(count: int) -> float:
    registry = build_registry()
    events = command_events(0, 1, count)
    encoded = [encode(new.event) for new in events]
    started = time.perf_counter()
    for new, data in zip(events, encoded, strict=True):
        registry.decode(new.event.event_type, new.event.schema_version, data, new.event_id)
    return (time.perf_counter() - started) / count * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args(argv)
    dsn = server_setting(PG_DSN) if "postgres" in options.backends.split(",") else ""
    sizes = QUICK if options.quick else FULL
    print(asyncio.run(run(sizes, options.backends.split(","), dsn, not options.no_write)))


if __name__ == "__main__":
    main()
