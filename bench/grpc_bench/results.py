"""What a run found: each row's result, the profiles taken, and the whole run (issue 4)."""

from __future__ import annotations

import pstats
from dataclasses import dataclass, field
from pathlib import Path

from bench.grpc_bench.plan import Plan, RowSpec


@dataclass
class RowResult:
    spec: RowSpec
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    cpu: dict[str, float]
    """CPU seconds in the window: one entry per server label, ``<label>/main`` for its main
    (event-loop) thread, ``postgres``, ``kafka``, ``loadgen`` and ``machine`` (every busy
    CPU second of the machine, whoever spent it)."""
    database: dict[str, float] = field(default_factory=dict)
    """Counters of the services' PostgreSQL database in the window (``pg_stat_database``)."""
    samples: dict[str, float] = field(default_factory=dict)
    """Latencies of an fsync and of a PostgreSQL round trip during the window."""
    settled: float = 0.0
    """Seconds the servers needed to become idle before the row began."""

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def cores(self, label: str) -> float:
        return self.cpu.get(label, 0.0) / self.seconds if self.seconds > 0 else 0.0

    def per_cpu_second(self, label: str) -> float | None:
        spent = self.cpu.get(label, 0.0)
        return self.ok / spent if spent > 0 else None


@dataclass
class Profile:
    row: RowResult
    stats: pstats.Stats
    what: str


def read_profile(results: list[RowResult], path: Path, what: str) -> Profile | None:
    """Take the profiled row out of ``results`` and pair it with its statistics."""
    profiled = [r for r in results if r.spec.profile]
    for row in profiled:
        results.remove(row)
    if not profiled or not path.exists():
        return None
    return Profile(profiled[0], pstats.Stats(str(path)), what)


@dataclass
class BenchRun:
    plan: Plan
    quick: bool
    reference: list[RowResult]
    """The empty OpenCase handler (one row)."""
    embedded: list[RowResult]
    distributed: list[RowResult]
    profiles: list[Profile]
    elapsed: float
    facts: dict[str, str] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    """Source files of the services that changed while the benchmark ran."""
