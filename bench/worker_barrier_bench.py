"""What the barriers cost an assigned worker: planning's ``LogContact`` (a command, at the case
view's barrier) and ``GetCaseView`` (a read, at the policy facts' barrier) by the case's
worker, calls per second and p50/p99 latency, the barriers on and off.

    python -m bench.worker_barrier_bench [--quick] [--no-write]
                                         [--backends embedded,distributed]

A worker's planning command first waits until the case view's group has applied the case's
last assignment or transfer on the bus (``services/planning/app/handlers.py``
``_assignment_caught_up``; README, "A transfer not delivered yet"); a worker's read first
waits until the policy facts' group has applied the case's last event of a type the facts are
made of (``AccessControl.reader_facts``). Off is this benchmark's own doing, in its own
process: planning's servicer is built with ``Dependencies`` whose ``views_caught_up`` is
``None`` (a view not fed from a bus) and an ``AccessControl`` whose ``case_facts_caught_up``
is ``None``, swapped in and out between windows; the product has no such switch.

Intake, coordination and planning run in this process (``services.runner.start_services``),
as does the load: a closed loop of ``LogContact``, then of ``GetCaseView``, calls by each
case's worker, 1 and 16 in flight (one case per caller, 16 cases assigned to two workers of
two teams beforehand).
Rounds alternate which of on and off goes first; each window is timed on its own, and the
table gives the medians over the rounds, the ratio of the medians and each round's ratio.
Embedded: SQLite files and the in-process bus. Distributed: a fresh PostgreSQL database and
Kafka topic of the run's own (``CASETRAIL_PG_DSN``, ``CASETRAIL_KAFKA_BOOTSTRAP``, from
``make servers-start``), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from unittest import mock

import grpc

from bench.common import (
    fmt_ratio,
    machine_info,
    markdown_table,
    median,
    now_utc,
    percentile,
    replace_section,
    rotations,
)
from bench.grpc_bench.storage import delete_topic, fresh_database
from bench.grpc_bench.switches import verifier
from casetrail.coordination.v1 import coordination_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.hosting import Infrastructure
from casetrail_platform.identity.development import DevelopmentIssuer
from casetrail_platform.policy.guard import AccessControl
from cli.rpc import (
    Connection,
    Person,
    Refusal,
    command,
    connect,
    eventually,
    minted_by,
    query,
    refusal_of,
)
from infra.servers import KAFKA_BOOTSTRAP, PG_DSN, server_setting, servers_environment
from services.planning.app.handlers import Dependencies
from services.planning.entrypoints.grpc_server import PlanningServicer

HEADING = "## A worker's command at the case-view barrier (h-wbench)"
SERVICES = ("intake", "coordination", "planning")
RECEPTIONIST = Person("rcp-bench", "receptionist")
COORDINATOR = Person("coord-bench", "coordinator")
WORKERS = (
    # Staff of the built-in example agency (coordination assigns only its known workers).
    Person("cm-dana-reyes", "case_manager", team="team-east"),
    Person("sw-tom-becker", "social_worker", team="team-west"),
)
IN_FLIGHT = (1, 16)
MODES = ("off", "on")
CALLS = ("LogContact", "GetCaseView")


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: float
    """Each window's length: one mode, one in-flight count, one round."""


FULL = Plan(rounds=5, seconds=6.0)
QUICK = Plan(rounds=3, seconds=3.0)


_Parts = tuple[Dependencies, AccessControl]


class _Switchable:
    """Planning's servicers built in this process, each with its ``Dependencies`` and
    ``AccessControl`` as built (the barriers) and the same with ``views_caught_up=None`` and
    ``case_facts_caught_up=None`` (no barrier)."""

    def __init__(self) -> None:
        self._built: list[tuple[PlanningServicer, _Parts, _Parts]] = []

    def built(self, servicer: PlanningServicer) -> None:
        deps, access = servicer._deps, servicer._access
        without = (
            replace(deps, views_caught_up=None),
            replace(access, case_facts_caught_up=None),
        )
        self._built.append((servicer, (deps, access), without))

    def barrier(self, on: bool) -> None:
        for servicer, with_barrier, without in self._built:
            servicer._deps, servicer._access = with_barrier if on else without


@contextmanager
def switchable() -> Iterator[_Switchable]:
    """Planning's bootstrap builds servicers this benchmark can take the barrier out of."""
    from services.planning import bootstrap

    switch = _Switchable()

    def build(*args: Any, **kwargs: Any) -> PlanningServicer:
        servicer = PlanningServicer(*args, **kwargs)
        switch.built(servicer)
        return servicer

    with mock.patch.object(bootstrap, "PlanningServicer", build):
        yield switch


@dataclass
class Window:
    calls_per_second: float
    latencies: list[float]
    failed: Counter[str]
    """Calls answered with an error, by code and reason (``cli.rpc.Refusal``)."""


@dataclass
class Measured:
    """One backend, one in-flight count: each mode's windows, in round order."""

    windows: dict[str, list[Window]] = field(default_factory=lambda: {m: [] for m in MODES})


def key() -> str:
    return uuid.uuid4().hex


async def _assigned_cases(stubs: Connection, count: int) -> list[tuple[Person, str]]:
    """``count`` open cases, each assigned to one of ``WORKERS`` in turn, every worker's
    ``LogContact`` answered once (the case view holds the assignment)."""
    cases: list[tuple[Person, str]] = []
    for number in range(count):
        worker = WORKERS[number % len(WORKERS)]
        client = await stubs.as_(RECEPTIONIST).intake.RegisterClient(
            intake_pb2.RegisterClientRequest(
                context=command(key()),
                name=intake_pb2.PersonName(given_names="Ada", family_name=f"Bench-{key()[:8]}"),
                date_of_birth="1950-03-14",
                identifiers=[intake_pb2.PersonalIdentifier(scheme="national_id", value=key())],
            )
        )
        opened = await stubs.as_(RECEPTIONIST).intake.OpenCase(
            intake_pb2.OpenCaseRequest(
                context=command(key()),
                client_id=client.client_id,
                referral_source=intake_pb2.ReferralSource(kind="self"),
                presenting_needs=[intake_pb2.PresentingNeed(category="socialisation")],
            )
        )
        case_id = opened.result.case_id
        assign = coordination_pb2.AssignCaseRequest(
            context=command(key()), case_id=case_id, worker_id=worker.user_id
        )
        # Coordination learns of the case over the bus: the same request until it does.
        await eventually(
            lambda assign=assign: stubs.as_(COORDINATOR).coordination.AssignCase(assign),  # type: ignore[misc]
            what="the assignment",
            patience=60,
        )
        cases.append((worker, case_id))
    for worker, case_id in cases:
        await eventually(
            lambda worker=worker, case_id=case_id: _log(stubs, worker, case_id),  # type: ignore[misc]
            what="the worker's first contact",
            patience=60,
            retry=_not_invalid,
        )
    return cases


def _not_invalid(refusal: Refusal) -> bool:
    # Until planning's view holds the assignment the worker is refused or told to retry.
    return refusal.code is not grpc.StatusCode.INVALID_ARGUMENT


async def _log(stubs: Connection, worker: Person, case_id: str) -> object:
    return await stubs.as_(worker).planning.LogContact(
        planning_pb2.LogContactRequest(
            context=command(key()), case_id=case_id, kind="phone_call", summary="Phoned"
        )
    )


async def _read(stubs: Connection, worker: Person, case_id: str) -> object:
    return await stubs.as_(worker).planning.GetCaseView(
        planning_pb2.GetCaseViewRequest(context=query("direct_care"), case_id=case_id)
    )


CALLED = {"LogContact": _log, "GetCaseView": _read}


async def _window(
    stubs: Connection,
    call: str,
    cases: list[tuple[Person, str]],
    in_flight: int,
    seconds: float,
) -> Window:
    latencies: list[float] = []
    failed: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    calling = CALLED[call]

    async def caller(worker: Person, case_id: str) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await calling(stubs, worker, case_id)
            except grpc.aio.AioRpcError as error:
                refusal = refusal_of(error)
                failed[f"{refusal.code.name} {refusal.reason}".strip()] += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller(w, c) for w, c in cases[:in_flight]))
    return Window(len(latencies) / (time.perf_counter() - started), latencies, failed)


@asynccontextmanager
async def _infrastructure(backend: str, work: Path) -> AsyncIterator[Infrastructure]:
    if backend == "embedded":
        yield Infrastructure.embedded(work, verifier=verifier())
        return
    from casetrail_platform.bus.kafka_settings import KafkaSettings
    from casetrail_platform.bus.topics import TopicSettings, ensure_topics

    run = uuid.uuid4().hex[:8]
    topic = f"casetrail.bench-barrier-{run}"
    kafka = KafkaSettings.from_env(servers_environment(KAFKA_BOOTSTRAP))
    with fresh_database(server_setting(PG_DSN), f"casetrail_bench_barrier_{run}") as dsn:
        await ensure_topics(kafka, TopicSettings(case_events_topic=topic))
        try:
            yield Infrastructure.distributed(work, dsn, kafka, topic=topic, verifier=verifier())
        finally:
            await delete_topic(server_setting(KAFKA_BOOTSTRAP), topic)


async def run_backend(
    backend: str, plan: Plan, issuer: DevelopmentIssuer, work: Path
) -> dict[tuple[str, int], Measured]:
    from services.runner import start_services, stop_services

    found = {(call, n): Measured() for call in CALLS for n in IN_FLIGHT}
    async with _infrastructure(backend, work / backend) as infra:
        with switchable() as switch:
            running = await start_services(infra, SERVICES, "127.0.0.1", dict.fromkeys(SERVICES, 0))
        try:
            addresses = {s.name: f"127.0.0.1:{s.port}" for s in running}
            # The CLI's connection wants all four; audit is never called here.
            addresses["audit"] = "127.0.0.1:9"
            async with connect(addresses, minted_by(issuer.signer)) as stubs:
                cases = await _assigned_cases(stubs, max(IN_FLIGHT))
                for call, in_flight in found:
                    switch.barrier(True)
                    await _window(stubs, call, cases, in_flight, 1.0)  # warm-up, not counted
                    for round_number in range(plan.rounds):
                        for mode in rotations(MODES, round_number):
                            switch.barrier(mode == "on")
                            window = await _window(stubs, call, cases, in_flight, plan.seconds)
                            found[call, in_flight].windows[mode].append(window)
                            print(
                                f"{backend} {call} {in_flight} in flight, barrier {mode}: "
                                f"{window.calls_per_second:.1f} calls/s, "
                                f"p50 {1000 * median(window.latencies):.2f} ms",
                                flush=True,
                            )
        finally:
            switch.barrier(True)
            await stop_services(running)
    return found


def rows(backend: str, found: dict[tuple[str, int], Measured]) -> list[list[str]]:
    table: list[list[str]] = []
    for (call, in_flight), measured in found.items():
        off, on = measured.windows["off"], measured.windows["on"]

        def rate(windows: list[Window]) -> float:
            return median([w.calls_per_second for w in windows])

        def ms(windows: list[Window], q: float) -> str:
            pooled = [latency for w in windows for latency in w.latencies]
            return f"{1000 * percentile(pooled, q):.1f}" if pooled else "n/a"

        each = [a.calls_per_second / b.calls_per_second for a, b in zip(on, off, strict=True)]
        table.append(
            [
                backend,
                call,
                str(in_flight),
                f"{rate(off):.1f}",
                f"{rate(on):.1f}",
                fmt_ratio(rate(on) / rate(off)),
                ", ".join(f"{r:.2f}" for r in each),
                f"{ms(off, 50)} / {ms(on, 50)}",
                f"{ms(off, 99)} / {ms(on, 99)}",
                f"{_failed(off)} / {_failed(on)}",
            ]
        )
    return table


def _failed(windows: list[Window]) -> str:
    """How many calls failed, and why: each code and reason with its count."""
    failed = sum((w.failed for w in windows), Counter[str]())
    reasons = ", ".join(f"{count} {why}" for why, count in failed.most_common())
    return f"{failed.total()} ({reasons})" if failed else "0"


HEADERS = [
    "backend",
    "call",
    "in flight",
    "off: calls/s",
    "on: calls/s",
    "on/off",
    "on/off each round",
    "p50 ms off / on",
    "p99 ms off / on",
    "failed off / on",
]


async def main(args: argparse.Namespace) -> None:
    plan = QUICK if args.quick else FULL
    load_before = os.getloadavg()[0]
    table: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="casetrail-barrier-") as directory:
        work = Path(directory)
        issuer = DevelopmentIssuer(work / "issuer", port=0)
        # The services trust it as they would any issuer: named by the environment.
        os.environ["CASETRAIL_OIDC_ISSUER"] = issuer.url
        os.environ["CASETRAIL_OIDC_AUDIENCE"] = issuer.signer.audience
        try:
            for backend in args.backends:
                table.extend(rows(backend, await run_backend(backend, plan, issuer, work)))
        finally:
            issuer.stop()
    text = markdown_table(HEADERS, table)
    print(text)
    if not args.write:
        return
    command_line = "python -m bench.worker_barrier_bench" + (" --quick" if args.quick else "")
    body = "\n".join(
        [
            f"Run: {now_utc()}, `{command_line} --backends {','.join(args.backends)}` "
            f"({plan.rounds} rounds of {plan.seconds:g} s windows per mode and in-flight count, "
            "on and off alternating which goes first).",
            "",
            *[f"- {line}" for line in machine_info().lines()],
            f"- Load average (1 min) at the start / end: {load_before:.1f} / "
            f"{os.getloadavg()[0]:.1f} (other work on the machine)",
            "",
            "`LogContact`, then `GetCaseView` (purpose direct_care), by the case's assigned "
            "worker, closed loop, one case per call in flight; intake, coordination, planning "
            "and the load in one process. On = the product (the worker's command waits for "
            "the case view to hold the case's last CaseAssigned/CaseReassigned on the bus, "
            "the worker's read for the policy facts to hold the case's last fact on the bus); "
            "off = planning's `Dependencies` with `views_caught_up=None` and `AccessControl` "
            "with `case_facts_caught_up=None`, swapped in by the benchmark only. Calls/s: "
            "medians over "
            "the rounds; on/off: the ratio of the medians, then each round's; p50/p99: over "
            "every answered call of the mode's windows. Failed calls are counted apart, with "
            "their code and reason, and left out of the latencies: a worker's command refused "
            "FACTS_NOT_CAUGHT_UP waited the barrier's whole patience (FACTS_WAIT_SECONDS) first.",
            "",
            text,
        ]
    )
    replace_section(HEADING, body)


def _backends(text: str) -> list[str]:
    backends = text.split(",")
    unknown = [b for b in backends if b not in ("embedded", "distributed")]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"not embedded or distributed: {', '.join(unknown)} (in {text!r})"
        )
    return backends


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    quick = f"{QUICK.rounds} rounds of {QUICK.seconds:g} s ({FULL.rounds} of {FULL.seconds:g} s)"
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--backends", type=_backends, default="embedded,distributed")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(parse()))
