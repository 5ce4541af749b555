"""What the barriers cost a worker: planning's ``LogContact`` (a command, at the case view's
barrier) and ``GetCaseView`` (a read, at the policy facts' barrier) by the case's worker, and
intake's ``GrantConsent`` and ``RevokeConsent`` (answered once the bus has acknowledged them),
calls per second and p50/p99 latency, the barriers on and off.

    python -m bench.worker_barrier_bench [--quick] [--no-write]
                                         [--backends embedded,distributed]

A worker's planning command first waits until the case view's group has applied the case's
last assignment or transfer on the bus (``services/planning/app/handlers.py``
``_assignment_caught_up``; README, "A transfer not delivered yet"); a worker's read first
waits until the policy facts' group has applied the case's last event of a type the facts are
made of (``AccessControl.reader_facts``); a consent and its revocation are answered once intake's
outbox relay has the bus's acknowledgement of them (``decide.once_published``), as every
command that opens or ends a right to a case is. Off is this benchmark's own doing, in its own
process: planning's servicer is built with ``Dependencies`` whose ``views_caught_up`` is
``None`` (a view not fed from a bus) and an ``AccessControl`` whose ``case_facts_caught_up``
is ``None``, intake's with ``IntakeDeps`` whose ``published`` is ``published_at_once``,
swapped in and out between windows; the product has no such switch.

Intake, coordination and planning run in this process (``services.runner.start_services``),
as does the load: a closed loop of ``LogContact``, then of ``GetCaseView``, calls by each
case's worker, 1 and 16 in flight (one case per caller, 16 cases assigned to two workers of
two teams beforehand), then of a consent granted and revoked in turn by an intake worker on
fresh cases (``CONSENT_CASES`` opened for each window and shared out among the callers: a
case's stream read whole by each command stays short; assigned to no one, so the case is
intake's, and a case-carrying worker records consents only on the case they carry).
Rounds alternate which of on and off goes first; each window is timed on its own, and the
table gives the medians over the rounds, the ratio of the medians and each round's ratio.
Embedded: SQLite files and the in-process bus. Distributed: a fresh PostgreSQL database and
Kafka topic of the run's own (``CASETRAIL_PG_DSN``, ``CASETRAIL_KAFKA_BOOTSTRAP``, from
``make servers-start``), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
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
from casetrail_platform.decide import published_at_once
from casetrail_platform.identity.development import DevelopmentIssuer
from casetrail_platform.infrastructure import Infrastructure
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
    timestamp,
)
from infra.servers import KAFKA_BOOTSTRAP, PG_DSN, server_setting, servers_environment
from services.intake.entrypoints.grpc_server import IntakeDeps, IntakeServicer
from services.planning.app.handlers import Dependencies
from services.planning.entrypoints.grpc_server import PlanningServicer
from tests.support.cases import key, opened_case

HEADING = "## What a worker's calls wait for: the barriers and the bus's acknowledgement (h-wbench)"
SERVICES = ("intake", "coordination", "planning")
RECEPTIONIST = Person("rcp-bench", "receptionist")
COORDINATOR = Person("coord-bench", "coordinator")
WORKERS = (
    # Staff of the built-in example agency (coordination assigns only its known workers).
    Person("cm-dana-reyes", "case_manager", team="team-east"),
    Person("sw-tom-becker", "social_worker", team="team-west"),
)
INTAKE_WORKER = Person("iw-bench", "intake_worker")
"""Records the consents: the consent cases are assigned to no one (``_consent_callers``)."""
IN_FLIGHT = (1, 16)
MODES = ("off", "on")
CALLS = ("LogContact", "GetCaseView", "Grant/RevokeConsent")
CONSENT_CASES = 64
"""Cases opened for each window of consents: up to a few dozen consents each per window."""

T = TypeVar("T")


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
    ``case_facts_caught_up=None`` (no barrier); intake's, with its ``IntakeDeps`` as built and
    the same with ``published=published_at_once`` (answered without the bus's
    acknowledgement)."""

    def __init__(self) -> None:
        self._built: list[tuple[PlanningServicer, _Parts, _Parts]] = []
        self._intake: list[tuple[IntakeServicer, IntakeDeps, IntakeDeps]] = []

    def intake_built(self, servicer: IntakeServicer) -> None:
        deps = servicer._deps
        self._intake.append((servicer, deps, replace(deps, published=published_at_once)))

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
        for intake, waiting, answering_at_once in self._intake:
            intake._deps = waiting if on else answering_at_once


@contextmanager
def switchable() -> Iterator[_Switchable]:
    """Planning's and intake's bootstraps build servicers this benchmark can take the
    barriers out of."""
    from services.intake import bootstrap as intake_bootstrap
    from services.planning import bootstrap

    switch = _Switchable()

    def build(*args: Any, **kwargs: Any) -> PlanningServicer:
        servicer = PlanningServicer(*args, **kwargs)
        switch.built(servicer)
        return servicer

    def build_intake(deps: IntakeDeps) -> IntakeServicer:
        servicer = IntakeServicer(deps)
        switch.intake_built(servicer)
        return servicer

    with (
        mock.patch.object(bootstrap, "PlanningServicer", build),
        mock.patch.object(intake_bootstrap, "IntakeServicer", build_intake),
    ):
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


async def _assigned_cases(stubs: Connection, count: int) -> list[tuple[Person, str]]:
    """``count`` open cases, each assigned to one of ``WORKERS`` in turn, every worker's
    ``LogContact`` answered once (the case view holds the assignment)."""
    cases: list[tuple[Person, str]] = []
    for number in range(count):
        worker = WORKERS[number % len(WORKERS)]
        case_id = await opened_case(stubs, RECEPTIONIST)
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


async def _consent_callers(stubs: Connection, in_flight: int) -> list[list[tuple[Person, str]]]:
    """``CONSENT_CASES`` fresh cases shared out among ``in_flight`` callers, each case
    the intake worker's to record consents on (assigned to no one yet)."""
    cases: list[str] = []
    while len(cases) < CONSENT_CASES:
        batch = min(16, CONSENT_CASES - len(cases))
        cases.extend(
            await asyncio.gather(*(opened_case(stubs, RECEPTIONIST) for _ in range(batch)))
        )
    # What the openings set going elsewhere (other services learning of the cases) settles
    # before the window is timed.
    await asyncio.sleep(1.0)
    return [[(INTAKE_WORKER, c) for c in cases[i::in_flight]] for i in range(in_flight)]


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


async def _grant(
    stubs: Connection, worker: Person, case_id: str
) -> intake_pb2.GrantConsentResponse:
    granted: intake_pb2.GrantConsentResponse = await stubs.as_(worker).intake.GrantConsent(
        intake_pb2.GrantConsentRequest(
            context=command(key()),
            case_id=case_id,
            recipient=intake_pb2.ConsentRecipient(
                kind="agency", recipient_id="agency-partner", name="Partner agency"
            ),
            purpose="coordination",
            scope=["identity", "referrals"],
            expires_at=timestamp(datetime.now(UTC) + timedelta(days=90)),
            document_reference=f"scan://consents/{case_id}.pdf",
        )
    )
    return granted


async def _revoke(stubs: Connection, worker: Person, case_id: str, consent_id: str) -> object:
    return await stubs.as_(worker).intake.RevokeConsent(
        intake_pb2.RevokeConsentRequest(
            context=command(key()), case_id=case_id, consent_id=consent_id
        )
    )


CALLED = {"LogContact": _log, "GetCaseView": _read}
CONSENTS = CALLS[2]


async def _window(
    stubs: Connection,
    call: str,
    callers: list[list[tuple[Person, str]]],
    seconds: float,
) -> Window:
    """Each caller calls on its cases in turn until the window ends; a consent's revocation
    follows its grant on the same case, each timed as one call."""
    latencies: list[float] = []
    failed: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    async def timed(rpc: Awaitable[T]) -> T | None:
        started = time.perf_counter()
        try:
            answer = await rpc
        except grpc.aio.AioRpcError as error:
            refusal = refusal_of(error)
            failed[f"{refusal.code.name} {refusal.reason}".strip()] += 1
            return None
        latencies.append(time.perf_counter() - started)
        return answer

    async def caller(cases: list[tuple[Person, str]]) -> None:
        for worker, case_id in itertools.cycle(cases):
            if time.perf_counter() >= deadline:
                return
            if call != CONSENTS:
                await timed(CALLED[call](stubs, worker, case_id))
                continue
            granted = await timed(_grant(stubs, worker, case_id))
            if granted is not None and time.perf_counter() < deadline:
                await timed(_revoke(stubs, worker, case_id, granted.consent_id))

    started = time.perf_counter()
    await asyncio.gather(*(caller(cases) for cases in callers))
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

                async def callers(call: str, in_flight: int) -> list[list[tuple[Person, str]]]:
                    if call == CONSENTS:
                        return await _consent_callers(stubs, in_flight)
                    return [[case] for case in cases[:in_flight]]

                for call, in_flight in found:
                    switch.barrier(True)
                    # A warm-up, not counted.
                    await _window(stubs, call, await callers(call, in_flight), 1.0)
                    for round_number in range(plan.rounds):
                        for mode in rotations(MODES, round_number):
                            calling = await callers(call, in_flight)
                            switch.barrier(mode == "on")
                            window = await _window(stubs, call, calling, plan.seconds)
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
            "worker, closed loop, one case per call in flight, then `GrantConsent` and "
            "`RevokeConsent` in turn by an intake worker on "
            f"{CONSENT_CASES} cases opened for each window and shared out among the callers; "
            "intake, coordination, planning "
            "and the load in one process. On = the product (the worker's command waits for "
            "the case view to hold the case's last CaseAssigned/CaseReassigned on the bus, "
            "the worker's read for the policy facts to hold the case's last fact on the bus, "
            "a consent and its revocation are answered once intake's relay has the bus's "
            "acknowledgement); off = planning's `Dependencies` with `views_caught_up=None` and "
            "`AccessControl` with `case_facts_caught_up=None`, intake's `IntakeDeps` with "
            "`published=published_at_once`, swapped in by the benchmark only. Calls/s: "
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
