"""Mixed command load that rides out faults, and the exact reconciliation afterwards (issue 8).

``Load`` sends commands to the service processes of a ``ServiceProcesses`` run as a careful
client would: an ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` answer (or a service process that is
down) is retried with the same idempotency key until the command is acknowledged; any other
answer is a refusal, which the fault suite expects none of. Commands: RegisterClient (intake),
LogContact (planning) and MakeReferral (coordination) on cases opened beforehand, so each
service stores events that every other one consumes.

``reconcile`` then checks, exactly: every acknowledged command's events are in the producing
service's store and nothing else is; every stored event is on Kafka; audit's timeline of each
case holds each of the case's events once; planning's case view and coordination's case
record count every contact and referral once; no consumer group dead-lettered anything of
this run's topic.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
from psycopg import sql

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2, coordination_pb2_grpc
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc
from casetrail_platform.bus.kafka_dead_letters import dead_letter_topics, list_dead_letters
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.identity.grpc_auth import bearer_metadata
from cli.rpc import Person, TokenSource, timestamp
from tests.support.distributed import ServiceProcesses
from tests.support.kafka_reading import read_topic

RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""The only answers a client retries (same idempotency key): the command may go through."""
CALL_TIMEOUT = 10.0
COMMAND_PATIENCE = 120.0
"""Longest a command is retried before the load gives up on it (a failure of the suite)."""
RECEPTIONIST = Person("rcp-faults", "receptionist")
COORDINATOR = Person("coord-faults", "coordinator")
"""Acts on and views any case (a social worker only those assigned to them)."""
AUDITOR = Person("aud-faults", "auditor")
_STUBS = {
    "intake": intake_pb2_grpc.IntakeServiceStub,
    "coordination": coordination_pb2_grpc.CoordinationServiceStub,
    "planning": planning_pb2_grpc.PlanningServiceStub,
    "audit": audit_pb2_grpc.AuditServiceStub,
}


class CommandGaveUp(Exception):
    """A command was neither acknowledged nor refused within ``COMMAND_PATIENCE``."""


@dataclass(frozen=True)
class Ack:
    service: str
    kind: str
    case_id: str
    client_id: str
    event_ids: tuple[str, ...]
    at: float
    """``time.monotonic()`` of the acknowledgement."""


@dataclass
class Load:
    processes: ServiceProcesses
    run_id: str
    tokens: TokenSource
    """Bearer tokens of an issuer the service processes trust."""
    acks: list[Ack] = field(default_factory=list)
    retried: Counter[str] = field(default_factory=Counter)
    """Answers that were retried, by status (and ``PROCESS_DOWN`` while a process restarts)."""
    refused: Counter[str] = field(default_factory=Counter)
    """Answers that were not retried, by status and message: must stay empty."""
    cases: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def stub(self, service: str) -> Any | None:
        address = self.processes.addresses.get(service)
        if address is None:
            return None
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return _STUBS[service](channel)

    async def call(self, service: str, rpc: str, request: Any, caller: Person) -> Any:
        """The answer to ``request`` from ``caller``, retried (same request, same key) while
        unavailable."""
        metadata = bearer_metadata(self.tokens(caller))
        deadline = time.monotonic() + COMMAND_PATIENCE
        while True:
            stub = self.stub(service)
            if stub is None:
                self.retried["PROCESS_DOWN"] += 1
            else:
                try:
                    return await getattr(stub, rpc)(
                        request, timeout=CALL_TIMEOUT, metadata=metadata
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() not in RETRIED:
                        self.refused[f"{error.code().name}: {error.details()}"] += 1
                        raise
                    self.retried[error.code().name] += 1
            if time.monotonic() > deadline:
                raise CommandGaveUp(f"{service}.{rpc} never acknowledged")
            await asyncio.sleep(0.2)

    def _command(self, kind: str) -> common_pb2.CommandContext:
        key = f"{self.run_id}-{kind}-{next(self._numbers)}"
        return common_pb2.CommandContext(idempotency_key=key)

    # --- commands ---------------------------------------------------------------------------

    async def register_client(self) -> str:
        number = next(self._numbers)
        response = await self.call(
            "intake",
            "RegisterClient",
            intake_pb2.RegisterClientRequest(
                context=self._command("register"),
                name=intake_pb2.PersonName(
                    given_names=f"Person {number}", family_name=f"Faults {self.run_id}"
                ),
                date_of_birth=f"19{40 + number % 50:02d}-0{1 + number % 9}-1{number % 10}",
                preferred_language="en",
            ),
            RECEPTIONIST,
        )
        self._ack("intake", "register", "", response.client_id, response.event_ids)
        self.clients.append(response.client_id)
        return str(response.client_id)

    async def open_case(self, client_id: str) -> str:
        response = await self.call(
            "intake",
            "OpenCase",
            intake_pb2.OpenCaseRequest(
                context=self._command("open"),
                client_id=client_id,
                referral_source=intake_pb2.ReferralSource(kind="hospital", name="St Mary's"),
                presenting_needs=[
                    intake_pb2.PresentingNeed(category="home_care", description="Cannot wash alone")
                ],
            ),
            RECEPTIONIST,
        )
        result = response.result
        self._ack("intake", "open", result.case_id, client_id, result.event_ids)
        self.cases.append(result.case_id)
        await self.consent(result.case_id)
        return str(result.case_id)

    async def consent(self, case_id: str) -> None:
        """The client's consent to the referrals the load makes (a referral discloses)."""
        response = await self.call(
            "intake",
            "GrantConsent",
            intake_pb2.GrantConsentRequest(
                context=self._command("consent"),
                case_id=case_id,
                recipient=intake_pb2.ConsentRecipient(
                    kind="agency", recipient_id="pa-faults", name="Faults Care"
                ),
                purpose="coordination",
                scope=["identity", "referrals", "services"],
                expires_at=timestamp(datetime.now(UTC) + timedelta(days=30)),
                document_reference="scan://consents/faults.pdf",
            ),
            # Not the social worker: the case is assigned to no one, and a case-carrying
            # worker records consents only on the case they carry.
            COORDINATOR,
        )
        self._ack("intake", "consent", case_id, "", response.result.event_ids)

    async def log_contact(self, case_id: str) -> None:
        response = await self.call(
            "planning",
            "LogContact",
            planning_pb2.LogContactRequest(
                context=self._command("contact"),
                case_id=case_id,
                kind="phone_call",
                summary="Checked in; managing with the aide",
            ),
            COORDINATOR,
        )
        self._ack("planning", "contact", case_id, "", response.result.event_ids)

    async def make_referral(self, case_id: str) -> None:
        response = await self.call(
            "coordination",
            "MakeReferral",
            coordination_pb2.MakeReferralRequest(
                context=self._command("referral"),
                case_id=case_id,
                provider=coordination_pb2.Provider(provider_id="pa-faults", name="Faults Care"),
                need_category="home_care",
                service="two visits a day",
                urgency="routine",
                reason="Cannot wash alone",
            ),
            # Not the social worker: the case is assigned to no one, and a case-carrying
            # worker refers only on the case they carry.
            COORDINATOR,
        )
        self._ack("coordination", "referral", case_id, "", response.result.event_ids)

    def _ack(self, service: str, kind: str, case_id: str, client_id: str, event_ids: Any) -> None:
        self.acks.append(Ack(service, kind, case_id, client_id, tuple(event_ids), time.monotonic()))

    # --- load -------------------------------------------------------------------------------

    async def prepare(self, cases: int, patience: float = 120.0) -> None:
        """Open ``cases`` cases and wait until planning and coordination know them all."""
        for _ in range(cases):
            await self.open_case(await self.register_client())
        for case_id in self.cases:
            await self.until_known(case_id, patience)

    async def until_known(self, case_id: str, patience: float) -> None:
        query = common_pb2.QueryContext(purpose="coordination")
        coordination = common_pb2.QueryContext(purpose="coordination")
        checks: list[tuple[str, str, Any]] = [
            (
                "planning",
                "GetCaseView",
                planning_pb2.GetCaseViewRequest(context=query, case_id=case_id),
            ),
            (
                "coordination",
                "GetCaseCoordination",
                coordination_pb2.GetCaseCoordinationRequest(context=coordination, case_id=case_id),
            ),
        ]
        metadata = bearer_metadata(self.tokens(COORDINATOR))
        deadline = time.monotonic() + patience
        for service, rpc, request in checks:
            while True:
                stub = self.stub(service)
                try:
                    await getattr(stub, rpc)(request, timeout=CALL_TIMEOUT, metadata=metadata)
                    break
                except grpc.aio.AioRpcError as error:
                    if error.code() not in RETRIED | {grpc.StatusCode.NOT_FOUND}:
                        raise
                if time.monotonic() > deadline:
                    raise AssertionError(f"{service} never learnt of case {case_id}")
                await asyncio.sleep(0.2)

    async def run(self, stop: asyncio.Event, workers: int = 4) -> None:
        """Commands from ``workers`` concurrent clients until ``stop`` is set."""
        await asyncio.gather(*(self._worker(n, stop) for n in range(workers)))

    async def _worker(self, number: int, stop: asyncio.Event) -> None:
        steps: list[Callable[[], Awaitable[Any]]] = [
            lambda: self.log_contact(self.cases[next(self._numbers) % len(self.cases)]),
            lambda: self.make_referral(self.cases[next(self._numbers) % len(self.cases)]),
            self.register_client,
        ]
        for step in itertools.cycle(steps[number % 3 :] + steps[: number % 3]):
            if stop.is_set():
                return
            await step()

    def first_ack_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first acknowledgement after it."""
        later = [ack.at for ack in self.acks if ack.at >= moment]
        return min(later) - moment if later else None


@dataclass
class Reconciliation:
    acknowledged_commands: int
    acknowledged_events: int
    stored_events: int
    problems: list[str]
    kafka_copies: int
    """Records of the run on Kafka (more than the events after a relay re-published)."""

    def summary(self) -> str:
        return (
            f"{self.acknowledged_commands} commands acknowledged, {self.acknowledged_events}"
            f" events acknowledged, {self.stored_events} stored, {self.kafka_copies} records on"
            f" Kafka; problems: {self.problems or 'none'}"
        )


async def reconcile(load: Load, kafka: KafkaSettings, patience: float = 120.0) -> Reconciliation:
    """The reconciliation, retried until it holds or ``patience`` runs out (consumers may
    still be catching up after the last fault)."""
    deadline = time.monotonic() + patience
    while True:
        result = await _reconcile_once(load, kafka)
        if not result.problems or time.monotonic() > deadline:
            return result
        await asyncio.sleep(2.0)


async def _reconcile_once(load: Load, kafka: KafkaSettings) -> Reconciliation:
    problems: list[str] = []
    processes = load.processes
    acked: dict[str, set[str]] = {}
    for ack in load.acks:
        acked.setdefault(ack.service, set()).update(ack.event_ids)
    stored: dict[str, dict[str, str]] = {}  # service -> event id -> subject
    async with await psycopg.AsyncConnection.connect(processes.dsn) as connection:
        for service in ("intake", "planning", "coordination"):
            cursor = await connection.execute(
                # Accesses are recorded by every read (the reconciliation's own among them);
                # they are the access policy's trail, not the load's commands.
                sql.SQL(
                    "SELECT event_id::text, subject FROM {}.stored_events"
                    " WHERE event_type NOT LIKE 'casetrail.record.access%'"
                ).format(sql.Identifier(f"{service}_events"))
            )
            stored[service] = {event_id: subject for event_id, subject in await cursor.fetchall()}
            expected = acked.get(service, set())
            missing = expected - stored[service].keys()
            extra = stored[service].keys() - expected
            if missing:
                problems.append(f"{service}: {len(missing)} acknowledged events not stored")
            if extra:
                problems.append(f"{service}: {len(extra)} stored events never acknowledged")
    everything = {event_id for events in stored.values() for event_id in events}

    on_kafka = [
        dict(message.headers).get("ce_id", b"").decode()
        for message in await read_topic(kafka, processes.topic, 6)
    ]
    if missing_on_kafka := everything - set(on_kafka):
        problems.append(f"kafka: {len(missing_on_kafka)} stored events not on the topic")

    by_case: dict[str, set[str]] = {}
    for events in stored.values():
        for event_id, subject in events.items():
            by_case.setdefault(subject, set()).add(event_id)
    # A case's timeline holds its client's own events too (the registration).
    client_of = {ack.case_id: ack.client_id for ack in load.acks if ack.kind == "open"}
    for case_id in load.cases:
        expected = by_case.get(case_id, set()) | by_case.get(client_of.get(case_id, ""), set())
        timeline = await _timeline(load, case_id)
        trail = [
            entry for entry in timeline if not entry.event_type.startswith("casetrail.record.")
        ]
        ids = [entry.event_id for entry in trail]
        if len(ids) != len(set(ids)):
            problems.append(f"audit: case {case_id} has duplicated timeline entries")
        if set(ids) != expected:
            problems.append(
                f"audit: case {case_id} timeline has {len(set(ids))} events, the stores"
                f" {len(expected)}"
            )
    problems += await _read_models(load)
    for topic in await dead_letter_topics(kafka):  # every group's, whoever consumes
        group = topic.removesuffix(".dlq")
        letters = await list_dead_letters(kafka, group)
        ours = [s for s in letters if s.letter and s.letter.message.topic == processes.topic]
        if ours:
            problems.append(f"{group}: {len(ours)} dead letters")
    return Reconciliation(
        acknowledged_commands=len(load.acks),
        acknowledged_events=sum(len(ids) for ids in acked.values()),
        stored_events=len(everything),
        problems=problems,
        kafka_copies=len(on_kafka),
    )


async def _timeline(load: Load, case_id: str) -> list[Any]:
    context = common_pb2.QueryContext(purpose="confidentiality_review")
    entries: list[Any] = []
    token = ""
    while True:
        response = await load.call(
            "audit",
            "GetTimeline",
            audit_pb2.GetTimelineRequest(
                context=context, case_id=case_id, page_size=1000, page_token=token
            ),
            AUDITOR,
        )
        entries.extend(response.entries)
        token = response.next_page_token
        if not token:
            return entries


async def _read_models(load: Load) -> list[str]:
    problems: list[str] = []
    contacts = Counter(a.case_id for a in load.acks if a.kind == "contact")
    referrals = Counter(a.case_id for a in load.acks if a.kind == "referral")
    for case_id in load.cases:
        view = await load.call(
            "planning",
            "GetCaseView",
            planning_pb2.GetCaseViewRequest(
                context=common_pb2.QueryContext(purpose="coordination"),
                case_id=case_id,
            ),
            COORDINATOR,
        )
        if view.contacts_logged != contacts[case_id]:
            problems.append(
                f"planning: case {case_id} shows {view.contacts_logged} contacts of"
                f" {contacts[case_id]}"
            )
        # Counted by its total: the view lists the latest 100 (and says so).
        if view.referrals_total != referrals[case_id]:
            problems.append(
                f"planning: case {case_id} counts {view.referrals_total} referrals of"
                f" {referrals[case_id]}"
            )
        record = await load.call(
            "coordination",
            "GetCaseCoordination",
            coordination_pb2.GetCaseCoordinationRequest(
                context=common_pb2.QueryContext(purpose="coordination"),
                case_id=case_id,
            ),
            COORDINATOR,
        )
        # Counted by its total: the answer lists the latest 100 (and says so).
        if record.referrals_total != referrals[case_id]:
            problems.append(
                f"coordination: case {case_id} counts {record.referrals_total} referrals of"
                f" {referrals[case_id]}"
            )
    return problems
