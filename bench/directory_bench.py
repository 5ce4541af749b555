"""Duplicate lookups at scale: what one lookup of intake's client directory costs as the number
of registered clients grows, before and after its match-key documents.

``python -m bench.directory_bench [--sizes 10000,100000,300000] [--lookups N] [--dsn DSN]`` writes
the section "Duplicate lookups (intake)" of ``bench/RESULTS.md``. The read models are filled
directly (the documents ``ClientDirectoryProjection`` writes for a registration with a name, a
date of birth and one identifier: the client's, its name key's and its identifier key's), on
SQLite and on PostgreSQL (a schema of its own in ``--dsn``, dropped afterwards; the row is left
out without one). At each size, side by side in alternating rounds on a client that exists:
before, what ``ClientDirectory.candidates`` did until 12-04 (``find`` on the name key, then
``find`` on the identifier keys list: a scan of every client on both backends, no index serves
them); after, ``candidates`` as it is (``get_many`` of the probe's two match keys, then of the
clients listed: primary-key reads). A registration does one lookup per name key plus one per
identifier before, one of each ``get_many`` after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path

from bench.common import (
    machine_info,
    markdown_table,
    median,
    now_utc,
    percentile,
    replace_section,
    rotations,
)
from casetrail_platform.projections.port import Document, ReadModelStore
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.clients import ClientRegistered, PersonalIdentifier, PersonName
from events.catalog_registry import default_registry
from services.intake.adapters.client_directory import (
    CLIENTS,
    MATCH_KEYS,
    ClientDirectory,
    ClientDirectoryProjection,
    document_of,
)
from services.intake.domain.matching import Probe

HEADING = "## Duplicate lookups (intake)"
BATCH = 5000


def registration(number: int) -> ClientRegistered:
    return ClientRegistered(
        client_id=f"c-{number:08d}",
        name=PersonName(given_names=f"Given{number}", family_name=f"Family{number % 5000}"),
        date_of_birth=date(1930, 1, 1) + timedelta(days=number % 30000),
        identifiers=(PersonalIdentifier(scheme="national_id", value=f"N{number:010d}"),),
    )


async def fill(
    read_models: ReadModelStore, projection: ClientDirectoryProjection, start: int, stop: int
) -> None:
    await projection.match_keys.ready()
    for low in range(start, stop, BATCH):
        documents: list[tuple[str, str, Document]] = []
        for number in range(low, min(stop, low + BATCH)):
            event = registration(number)
            client = document_of(event, number + 1)
            documents.append((CLIENTS, event.client_id, client))
            # Every key is the client's own here (no namesake born the same day): one id each.
            documents += [
                (MATCH_KEYS, key, {"clients": [[number + 1, event.client_id]]})
                for key in projection.keys_of(client)
            ]
        async with read_models.transaction() as transaction:
            await transaction.put_many(documents)


async def before(read_models: ReadModelStore, probe: Probe) -> int:
    """``ClientDirectory.candidates``'s reads until 12-04."""
    documents: list[Document] = []
    if probe.name_key is not None:
        documents += await read_models.find(CLIENTS, equals={"name_key": probe.name_key})
    for identifier in probe.identifier_keys:
        documents += await read_models.find(CLIENTS, contains={"identifier_keys": identifier})
    return len(documents)


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def measure(
    backend: str,
    read_models: ReadModelStore,
    directory: ClientDirectory,
    sizes: list[int],
    lookups: int,
) -> list[list[str]]:
    projection = ClientDirectoryProjection()
    rows: list[list[str]] = []
    filled = 0
    for size in sizes:
        started = time.perf_counter()
        await fill(read_models, projection, filled, size)
        print(f"{backend}: {size} clients filled in {time.perf_counter() - started:.0f} s")
        filled = size
        times: dict[str, list[float]] = {"before": [], "after": []}
        for round_number in range(lookups):
            event = registration((round_number * 7919) % size)
            probe = Probe(event.name, event.date_of_birth, event.identifiers)

            async def old(probe: Probe = probe) -> object:
                return await before(read_models, probe)

            async def new(probe: Probe = probe) -> object:
                found = await directory.candidates(probe)
                assert len(found.candidates) == 1, found
                return found

            for name in rotations(["before", "after"], round_number):
                times[name].append(await timed(old if name == "before" else new))
        b, a = times["before"], times["after"]
        rows.append(
            [
                backend,
                f"{size:,}",
                f"{median(b):.2f}",
                f"{percentile(b, 99):.2f}",
                f"{median(a):.2f}",
                f"{percentile(a, 99):.2f}",
                f"{median(b) / median(a):.0f}x",
            ]
        )
        print(rows[-1])
    return rows


async def run(options: argparse.Namespace, directory: Path) -> list[list[str]]:
    sizes = [int(size) for size in options.sizes.split(",")]
    store = await SqliteEventStore.open(directory / "events.db", default_registry())
    rows: list[list[str]] = []
    try:
        sqlite = SqliteReadModelStore(directory / "read-models.db")
        try:
            rows += await measure(
                "SQLite", sqlite, ClientDirectory(store, sqlite), sizes, options.lookups
            )
        finally:
            await sqlite.close()
        if options.dsn:
            rows += await _postgres(options, store, sizes)
    finally:
        await store.close()
    return rows


async def _postgres(
    options: argparse.Namespace, store: SqliteEventStore, sizes: list[int]
) -> list[list[str]]:
    import psycopg

    from casetrail_platform.projections.postgres import PostgresReadModelStore

    schema = f"bench_directory_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(options.dsn, autocommit=True) as admin:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        postgres = await PostgresReadModelStore.connect(options.dsn, schema=schema)
        try:
            directory = ClientDirectory(store, postgres)
            return await measure("PostgreSQL", postgres, directory, sizes, options.lookups)
        finally:
            await postgres.close()
    finally:
        async with await psycopg.AsyncConnection.connect(options.dsn, autocommit=True) as admin:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.directory_bench")
    parser.add_argument("--sizes", default="10000,100000,300000")
    parser.add_argument("--lookups", type=int, default=100)
    parser.add_argument("--dsn", default="", help="PostgreSQL DSN; empty: SQLite only")
    options = parser.parse_args(argv)
    load_before = f"{os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory(prefix="casetrail-directory-bench-") as directory:
        rows = asyncio.run(run(options, Path(directory)))
    load_after = f"{os.getloadavg()[0]:.2f}"
    body = "\n".join(
        [
            f"Run: {now_utc()}. Command: `python -m bench.directory_bench --sizes {options.sizes}"
            f" --lookups {options.lookups} --dsn <own server>`. Load average (1 min) before /"
            f" after: {load_before} / {load_after}.",
            "",
            *machine_info().lines(),
            "",
            (__doc__ or "").split("\n\n", 1)[1].strip(),
            "",
            markdown_table(
                [
                    "backend",
                    "clients",
                    "before median ms",
                    "before p99 ms",
                    "after median ms",
                    "after p99 ms",
                    "before / after",
                ],
                rows,
            ),
        ]
    )
    replace_section(HEADING, body)
    print(body)


if __name__ == "__main__":
    main()
