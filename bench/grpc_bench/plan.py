"""What a run measures: the plan (full or quick), the rows it is made of, what the load generator
is told, and the orchestrator's progress line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

TARGET = 2_000.0
"""Commands per second per service process (issue 4)."""


SERVICES = ("intake", "coordination", "planning", "audit")


REPO = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class Plan:
    warmup: float
    seconds: float
    """Measurement window of a closed-loop row, after ``warmup``."""
    rate: int
    rate_seconds: float
    register_seconds: float
    concurrency: int
    channels: int
    clients: int
    """Clients registered before the run; OpenCase opens cases for them in turn."""
    cases: int
    """Cases opened (and learnt by coordination) before the MakeReferral row."""
    profile_seconds: float
    settle_limit: float
    """Longest wait, before each row, for the servers to finish the previous row's backlog."""


FULL = Plan(
    warmup=3.0,
    seconds=15.0,
    rate=500,
    rate_seconds=10.0,
    register_seconds=8.0,
    concurrency=48,
    channels=4,
    clients=16,
    cases=1_000,
    profile_seconds=8.0,
    settle_limit=20.0,
)


QUICK = Plan(
    warmup=0.75,
    seconds=3.0,
    rate=500,
    rate_seconds=2.0,
    register_seconds=2.0,
    concurrency=48,
    channels=4,
    clients=8,
    cases=100,
    profile_seconds=2.0,
    settle_limit=5.0,
)


@dataclass(frozen=True)
class RowSpec:
    setup: str
    command: str
    """``open_case``, ``register_client`` or ``make_referral``."""
    mode: str
    """``closed`` (``concurrency`` calls in flight) or ``rate`` (``rate`` calls started per
    second)."""
    warmup: float
    seconds: float
    concurrency: int = 0
    rate: int = 0
    server: str = "intake"
    """The label (in ``LoadSpec.pids``) of the process that serves the command."""
    profile: bool = False
    """Send the server SIGUSR1/SIGUSR2 at the start/end of the window (profiled servers)."""

    def load(self) -> str:
        if self.mode == "rate":
            return f"{self.rate}/s offered"
        return f"{self.concurrency} in flight"


@dataclass(frozen=True)
class LoadSpec:
    run_id: str
    addresses: dict[str, str]
    pids: dict[str, int]
    rows: list[RowSpec]
    channels: int
    clients: int
    cases: int
    scratch: str
    """A directory on the servers' disk, for the fsync probe."""
    settle_limit: float
    """Longest wait for the servers to become idle before a row."""
    dsn: str = ""
    """The services' database (distributed): its transaction counters are read too."""
    tokens: dict[str, str] = field(default_factory=dict)
    """Bearer token of each benchmark user (minted by the run's issuer)."""


def rows(plan: Plan, setup: str, intake: str, coordination: str, register: bool) -> list[RowSpec]:
    """The rows of one setup; ``intake`` and ``coordination`` label the serving processes."""
    closed = RowSpec(setup, "open_case", "closed", plan.warmup, plan.seconds, plan.concurrency)
    specs = [
        closed,
        RowSpec(setup, "open_case", "rate", plan.warmup, plan.rate_seconds, rate=plan.rate),
    ]
    if register:
        specs.append(replace(closed, command="register_client", seconds=plan.register_seconds))
    specs.append(replace(closed, command="make_referral"))
    return [
        replace(spec, server=coordination if spec.command == "make_referral" else intake)
        for spec in specs
    ]


def profile_row(plan: Plan, setup: str, server: str) -> RowSpec:
    """OpenCase once more, with the server's profiler on for the window only."""
    return RowSpec(
        setup,
        "open_case",
        "closed",
        warmup=1.0,
        seconds=plan.profile_seconds,
        concurrency=plan.concurrency,
        server=server,
        profile=True,
    )


def progress(started: float, what: str) -> None:
    print(f"[{time.perf_counter() - started:5.1f}s] {what}", flush=True)
