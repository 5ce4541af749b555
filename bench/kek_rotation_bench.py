"""KEK rotation benchmark: how fast ``casetrail keys rotate-kek`` re-wraps the data-key table.

    python -m bench.kek_rotation_bench [--quick] [--backends sqlite,postgres] [--no-write]

Per backend, one table of data keys (two versions per client, file KEKs as the embedded
default) is rotated again and again, each rotation to a new KEK: batch sizes 1, 100 and 500
side by side, their order rotating from round to round. Beside them, the floor: unwrapping
and wrapping the same number of keys in-process, without the table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import (
    fmt_ratio,
    machine_info,
    markdown_table,
    median,
    now_utc,
    replace_section,
    rotations,
)
from casetrail_platform.keys.file_kek import FileKeyEncryptionKey
from casetrail_platform.keys.keyring import wrap_context
from casetrail_platform.keys.port import DataKeyTable, KeyEncryptionKey
from casetrail_platform.keys.postgres import PostgresDataKeyTable
from casetrail_platform.keys.rotation import KeyEncryptionKeyRing, rotate_kek
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from infra.servers import PG_DSN, server_setting

HEADING = "## KEK rotation (issue 10)"
BATCH_SIZES = (1, 100, 500)


def main(arguments: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 keys, 2 rounds")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS")
    options = parser.parse_args(arguments)
    clients, rounds = (500, 2) if options.quick else (2_500, 3)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="kek-bench-") as scratch_name:
        scratch = Path(scratch_name)
        for backend in options.backends.split(","):
            table, cleanup = _table(backend, scratch)
            try:
                rows.extend(_measure(backend, table, scratch, clients, rounds))
            finally:
                table.close()
                cleanup()
    load = f"Load average (1 min) at start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f}"
    facts = [*machine_info().lines(), load]
    body = "\n".join(
        [
            f"Run {now_utc()}, {'quick' if options.quick else 'full'} run in "
            f"{time.monotonic() - started:.0f} s: `python -m bench.kek_rotation_bench`.",
            "",
            *(f"- {fact}" for fact in facts),
            "",
            f"{clients * 2:,} live data keys (2 versions of {clients:,} clients), each rotation "
            "to a new file KEK; median of the rounds (batch sizes in rotating order); the floor "
            "unwraps and wraps the same keys in-process, no table:",
            "",
            markdown_table(
                ["backend", "batch size", "keys/s", "vs batch 500", "per round (keys/s)"], rows
            ),
        ]
    )
    print(body)
    if not options.no_write:
        replace_section(HEADING, body)


def _table(backend: str, scratch: Path) -> tuple[DataKeyTable, Callable[[], None]]:
    if backend == "sqlite":
        return SqliteDataKeyTable(scratch / "keys.db"), lambda: None
    dsn = server_setting(PG_DSN)
    schema = f"bench_keys_{uuid.uuid4().hex[:10]}"

    def drop() -> None:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return PostgresDataKeyTable(dsn, schema=schema), drop


def _measure(
    backend: str, table: DataKeyTable, scratch: Path, clients: int, rounds: int
) -> list[list[str]]:
    keks: list[KeyEncryptionKey] = [FileKeyEncryptionKey(scratch / f"{backend}-kek-0.bin")]
    for client in range(clients):
        for version in (1, 2):
            owner = f"client-{client:06d}"
            data_key = AESGCM.generate_key(bit_length=256)
            wrapped = keks[0].wrap(data_key, wrap_context(owner, version))
            table.create(owner, version, wrapped, keks[0].key_id)
    rates: dict[str, list[float]] = {str(size): [] for size in BATCH_SIZES}
    rates["floor"] = []
    for round_number in range(rounds):
        for contender in rotations([*rates], round_number):
            keks.append(FileKeyEncryptionKey(scratch / f"{backend}-kek-{len(keks)}.bin"))
            ring = KeyEncryptionKeyRing(keks[-1], keks[:-1])
            floor = _wrapped_keys(keks[-2], clients) if contender == "floor" else []
            began = time.perf_counter()
            if contender == "floor":
                for context, wrapped in floor:
                    ring.wrap(keks[-2].unwrap(wrapped, context), context)
                keks.pop()  # nothing was re-wrapped: the table is still under the previous KEK
            else:
                result = rotate_kek(table, ring, batch_size=int(contender))
                assert result.done
            rates[contender].append(clients * 2 / (time.perf_counter() - began))
    name = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[backend]
    reference = median(rates["500"])
    return [
        [
            name,
            contender,
            f"{median(values):,.0f}",
            fmt_ratio(median(values) / reference),
            ", ".join(f"{value:,.0f}" for value in values),
        ]
        for contender, values in rates.items()
    ]


def _wrapped_keys(kek: KeyEncryptionKey, clients: int) -> list[tuple[bytes, bytes]]:
    """What the floor unwraps: the same number of keys, wrapped by ``kek``."""
    contexts = [
        wrap_context(f"client-{client:06d}", version)
        for client in range(clients)
        for version in (1, 2)
    ]
    return [
        (context, kek.wrap(AESGCM.generate_key(bit_length=256), context)) for context in contexts
    ]


if __name__ == "__main__":
    main()
