"""Key look-ups off the event loop: how long a process's event loop stalls while its keyring
creates, looks up and unwraps clients' data keys through a KMS.

    python -m bench.keys_bench [--quick] [--backends sqlite,postgres] [--kms-ms 5] [--no-write]

A KMS-shaped KEK (``KmsKeyEncryptionKey``) whose calls take ``--kms-ms`` (a network round
trip, simulated with a sleep) over the backend's data-key table. Three phases, 8 concurrent
callers, while a ticker on the same loop wakes every millisecond and notes how late it is:

* **new cases**: one sealed event appended to each of N new cases (each needs a new key: the
  table asked, the key created, wrapped by the KMS);
* **cold reads**: the N cases read back by another keyring (nothing cached: each key looked up
  and unwrapped by the KMS), every event decoded;
* **warm appends**: ``WARM_APPENDS`` more events to each case, one append each (everything
  cached): what sealing from the cache first costs on the hot path; ops/s and CPU per append;
  cost on the hot path, CPU µs per event.

Modes side by side in one run, rounds alternating the order: **on the loop** (a switch of this
benchmark only: the cache checks report "cached", so the table and the KMS are asked from
the event loop, as before this change) and **off the loop** (as the product runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import machine_info, markdown_table, median, now_utc, percentile, replace_section
from bench.store_bench import command_events
from casetrail_platform.keys import off_loop
from casetrail_platform.keys.fields import FieldProtection
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.kms import KmsKeyEncryptionKey
from casetrail_platform.keys.port import DataKeyTable
from casetrail_platform.store.port import EventStore
from events.catalog_registry import build_registry
from events.envelope import NewEvent
from events.registry import EventRegistry
from infra.servers import PG_DSN, server_setting

HEADING = "## Key look-ups off the event loop (issue 10)"
CALLERS = 8
MODES = ("on the loop", "off the loop")
T = TypeVar("T")
WARM_APPENDS = 5


@dataclass(frozen=True)
class Phase:
    rate: float
    """Operations per second."""
    lag_p99_ms: float
    lag_max_ms: float
    cpu_us: float
    """Process CPU per operation."""


def simulated_kms(latency: float) -> KmsKeyEncryptionKey:
    """A KMS whose encrypt and decrypt each take ``latency`` seconds (the round trip)."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def encrypt(payload: bytes, context: bytes) -> bytes:
        time.sleep(latency)
        nonce = os.urandom(12)
        return nonce + aead.encrypt(nonce, payload, context)

    def decrypt(payload: bytes, context: bytes) -> bytes:
        time.sleep(latency)
        return aead.decrypt(payload[:12], payload[12:], context)

    return KmsKeyEncryptionKey("bench-kms", encrypt, decrypt)


@contextmanager
def keys_asked_on_the_loop(enabled: bool) -> Iterator[None]:
    """The benchmark's switch: the stores seal in place whatever the cache holds and fetch no
    keys before decoding, so the table and the KMS are asked from the event loop, as before."""
    if not enabled:
        yield
        return
    sealing, fetches = off_loop.sealing, FieldProtection.keys_to_fetch

    async def in_place(seal: Callable[[bool], T]) -> T:
        return seal(False)

    def nothing_to_fetch(self: FieldProtection, stored: Iterable[Any]) -> set[tuple[str, int]]:
        return set()

    off_loop.sealing = in_place
    FieldProtection.keys_to_fetch = nothing_to_fetch  # type: ignore[method-assign]
    try:
        yield
    finally:
        off_loop.sealing = sealing
        FieldProtection.keys_to_fetch = fetches  # type: ignore[method-assign]


async def measured(operations: Sequence[Callable[[], Awaitable[None]]], each: int = 1) -> Phase:
    """Run ``operations`` (of ``each`` operations each) from ``CALLERS`` concurrent callers
    beside a 1 ms ticker."""
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            lateness.append(time.perf_counter() - asked - 0.001)

    queue = list(operations)

    async def caller() -> None:
        while queue:
            await queue.pop()()

    ticking = asyncio.create_task(ticker())
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done.set()
    await ticking
    count = len(operations) * each
    return Phase(
        count / wall, percentile(lateness, 99) * 1e3, max(lateness) * 1e3, cpu / count * 1e6
    )


def registry_over(table: DataKeyTable, kms: KmsKeyEncryptionKey) -> EventRegistry:
    return build_registry().protected(FieldProtection(ClientKeyring(kms, table)))


@dataclass(frozen=True)
class Files:
    """One round's event store and key table: opened again through any registry."""

    open_store: Callable[[EventRegistry], Awaitable[EventStore]]
    table: DataKeyTable
    cleanup: Callable[[], Awaitable[None]]


def sqlite_files(scratch: Path) -> Files:
    from casetrail_platform.keys.sqlite import SqliteDataKeyTable
    from casetrail_platform.store.sqlite import SqliteEventStore

    directory = Path(tempfile.mkdtemp(dir=scratch))

    async def open_store(registry: EventRegistry) -> EventStore:
        return await SqliteEventStore.open(directory / "events.db", registry)

    async def cleanup() -> None:
        return None

    return Files(open_store, SqliteDataKeyTable(directory / "keys.db"), cleanup)


def postgres_files(dsn: str) -> Files:
    from casetrail_platform.keys.postgres import PostgresDataKeyTable
    from casetrail_platform.store.postgres import PostgresEventStore

    suffix = uuid.uuid4().hex[:10]

    async def open_store(registry: EventRegistry) -> EventStore:
        return await PostgresEventStore.connect(dsn, registry, schema=f"bench_keys_{suffix}")

    async def cleanup() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            for schema in (f"bench_keys_{suffix}", f"bench_keytable_{suffix}"):
                await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    table = PostgresDataKeyTable(dsn, schema=f"bench_keytable_{suffix}")
    return Files(open_store, table, cleanup)


async def one_round(
    files: Files, cases: int, kms: KmsKeyEncryptionKey, on_loop: bool
) -> dict[str, Phase]:
    streams = [f"case-{uuid.uuid4().hex[:12]}" for _ in range(cases)]
    store = await files.open_store(registry_over(files.table, kms))

    def append(stream: str, version: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            [new] = command_events(0, version, 1)
            event = new.event.model_copy(update={"case_id": stream.removeprefix("case-")})
            await store.append(stream, [NewEvent(event, new.metadata)], version - 1)

        return run

    def appends(stream: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for version in range(2, 2 + WARM_APPENDS):
                await append(stream, version)()

        return run

    try:
        with keys_asked_on_the_loop(on_loop):
            opened = await measured([append(stream, 1) for stream in streams])
            reader = await files.open_store(registry_over(files.table, kms))  # nothing cached

            def read(stream: str) -> Callable[[], Awaitable[None]]:
                async def run() -> None:
                    for record in await reader.read_stream(stream):
                        assert record.event is not None

                return run

            try:
                cold = await measured([read(stream) for stream in streams])
            finally:
                await reader.close()
            warm = await measured([appends(stream) for stream in streams], WARM_APPENDS)
    finally:
        await store.close()
        files.table.close()
        await files.cleanup()
    return {"new cases": opened, "cold reads": cold, "warm appends": warm}


async def run(
    backends: Sequence[str], cases: int, rounds: int, kms_ms: float, dsn: str, write: bool
) -> str:
    begun = time.perf_counter()
    kms = simulated_kms(kms_ms / 1000)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="casetrail-keys-bench-") as scratch:
        for name in backends:
            label = "SQLite" if name == "sqlite" else "PostgreSQL"
            results: dict[str, list[dict[str, Phase]]] = {mode: [] for mode in MODES}
            for number in range(rounds):
                order = MODES if number % 2 == 0 else tuple(reversed(MODES))
                for mode in order:
                    files = sqlite_files(Path(scratch)) if name == "sqlite" else postgres_files(dsn)
                    results[mode].append(await one_round(files, cases, kms, mode == MODES[0]))
            for phase in ("new cases", "cold reads", "warm appends"):
                for mode in MODES:
                    runs = [result[phase] for result in results[mode]]
                    rows.append(
                        [
                            label,
                            phase,
                            mode,
                            f"{median([r.rate for r in runs]):,.0f}",
                            f"{median([r.lag_p99_ms for r in runs]):.1f}",
                            f"{median([r.lag_max_ms for r in runs]):.1f}",
                            f"{median([r.cpu_us for r in runs]):,.0f}",
                        ]
                    )
    info = machine_info()
    text = "\n".join(
        [
            f"Run {now_utc()}, {rounds} rounds of {cases} cases, KMS round trip {kms_ms:g} ms,"
            f" in {time.perf_counter() - begun:.0f} s: `python -m bench.keys_bench`;"
            f" load average (1 min) {os.getloadavg()[0]:.1f} at the end.",
            "",
            "\n".join(f"- {line}" for line in info.lines()),
            "",
            f"{CALLERS} concurrent callers; a ticker on the same event loop asks to wake every"
            " 1 ms: lag is how late it woke (what every other call the process serves waits"
            " too). Medians of the rounds.",
            "",
            markdown_table(
                [
                    "backend",
                    "phase",
                    "keys asked",
                    "ops/s",
                    "loop lag p99 (ms)",
                    "loop lag max (ms)",
                    "CPU µs/op",
                ],
                rows,
            ),
        ]
    )
    if write:
        replace_section(HEADING, text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--kms-ms", type=float, default=5.0)
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args(argv)
    dsn = server_setting(PG_DSN) if "postgres" in options.backends.split(",") else ""
    cases, rounds = (50, 2) if options.quick else (200, 4)
    print(
        asyncio.run(
            run(
                options.backends.split(","),
                cases,
                rounds,
                options.kms_ms,
                dsn,
                not options.no_write,
            )
        )
    )


if __name__ == "__main__":
    main()
