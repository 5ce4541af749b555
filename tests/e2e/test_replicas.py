"""Three replicas of every service on PostgreSQL + Kafka keep every invariant (issue 11).

Each service runs as three processes sharing one database and one topic. Conflicting commands
are sent at once, spread over the replicas, so no rule can lean on an in-process lock or on
being the only process: one registration per person, no caseload over capacity, no budget line
overspent, no double booking, one result per idempotency key, and every stored event published
(once in effect), even when the process leading a relay is killed mid-run.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
import pytest_asyncio

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from cli.rpc import (
    Connection,
    Person,
    TokenSource,
    command,
    connect,
    eventually,
    query,
    refusal_of,
)
from cli.walk.story import AUDITOR, COORDINATOR, RECEPTIONIST
from services.coordination.adapters.example_agency import EXAMPLE
from tests.e2e.conftest import Casetrail
from tests.e2e.support import Case, new_case, next_week, schedule
from tests.support.cases import key, registration
from tests.support.distributed import SERVICES, Replicas, replicated_services
from tests.support.identity import TestIssuer
from tests.support.servers import kafka_bootstrap

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.postgres,
    pytest.mark.kafka,
]

T = TypeVar("T")

REPLICAS = 3
WORKER = "cm-sam-patel"
CAPACITY = 3
FLEX_FUND = "flex-fund-fy2025"
ERASER = Person("dpo-erin-walsh", "supervisor")
"""Erases clients (a supervisor)."""
FUND = 10_000
"""Minor units on the flexible fund: ten reservations of 1,000 fit, the eleventh does not."""


class Cluster:
    def __init__(
        self, replicas: Replicas, connections: list[Connection], tokens: TokenSource
    ) -> None:
        self.replicas = replicas
        self.connections = connections
        self.tokens = tokens

    def at(self, index: int) -> Connection:
        """The replicas of every service, taken in turn."""
        return self.connections[index % len(self.connections)]

    def casetrail(self, index: int = 0) -> Casetrail:
        """The replicas ``index`` of every service, as the e2e helpers take them."""
        one = {name: addresses[index] for name, addresses in self.replicas.addresses.items()}
        return Casetrail("replicated", one, self.connections[index], self.tokens, 90.0)


def small_agency() -> dict[str, Any]:
    agency: dict[str, Any] = json.loads(json.dumps(EXAMPLE))
    for worker in agency["workers"]:
        if worker["worker_id"] == WORKER:
            worker["caseload_capacity"] = CAPACITY
    for line in agency["budget_lines"]:
        if line["budget_line"] == FLEX_FUND:
            line["amount"]["amount_minor_units"] = FUND
    return agency


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory, issuer: TestIssuer
) -> AsyncIterator[Cluster]:
    data_dir: Path = tmp_path_factory.mktemp("replicas")
    (data_dir / "coordination").mkdir()
    (data_dir / "coordination" / "agency.json").write_text(json.dumps(small_agency()))
    async with (
        replicated_services(data_dir, REPLICAS, issuer.env()) as replicas,
        AsyncExitStack() as stack,
    ):
        connections = [
            await stack.enter_async_context(
                connect({name: replicas.addresses[name][index] for name in SERVICES}, issuer.tokens)
            )
            for index in range(REPLICAS)
        ]
        yield Cluster(replicas, connections, issuer.tokens)


async def retrying(method: Callable[[Any], Awaitable[T]], request: Any) -> T:
    """``method(request)``, sent again while a replica answers UNAVAILABLE (a process that has
    not fetched the token issuer's keys yet, on a loaded machine): what any client does, and
    safe, since the idempotency key stays the same."""
    for _ in range(30):
        try:
            return await method(request)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        await asyncio.sleep(1.0)
    return await method(request)


async def outcomes(calls: list[Awaitable[Any]]) -> Counter[str]:
    """How many calls were answered OK, and how many with each refusal (code and reason)."""
    answered = await asyncio.gather(*calls, return_exceptions=True)
    counted: Counter[str] = Counter()
    for answer in answered:
        if isinstance(answer, grpc.aio.AioRpcError):
            counted[answer.code().name] += 1
        elif isinstance(answer, BaseException):
            raise answer
        else:
            counted["OK"] += 1
    return counted


async def test_racing_registrations_of_one_person_register_them_once(cluster: Cluster) -> None:
    people = [registration() for _ in range(4)]
    attempts = []
    for person in people:
        for attempt in range(3 * REPLICAS):
            again = intake_pb2.RegisterClientRequest()
            again.CopyFrom(person)
            again.context.idempotency_key = key()
            # An identifier that differs each time: only the name and birth date match.
            del again.identifiers[:]
            attempts.append((attempt, again))

    counted = await outcomes(
        [
            retrying(cluster.at(attempt).as_(RECEPTIONIST).intake.RegisterClient, request)
            for attempt, request in attempts
        ]
    )

    assert counted == {"OK": len(people), "ALREADY_EXISTS": len(attempts) - len(people)}


async def test_cases_opened_on_every_replica_as_the_client_is_erased_are_named_by_it(
    cluster: Cluster,
) -> None:
    """Openings of cases of one client sent at once to every replica, with its erasure: each
    opening comes before the erasure and is among the cases it names (whose read models the
    other services erase), or after it and is refused CLIENT_ERASED. Without the client's
    lock, shared by the replicas, an opening could commit between the erasure's look at the
    client's cases and its append, and be left out."""
    client = await retrying(cluster.at(0).as_(RECEPTIONIST).intake.RegisterClient, registration())

    def opening() -> intake_pb2.OpenCaseRequest:
        return intake_pb2.OpenCaseRequest(
            context=command(key()),
            client_id=client.client_id,
            referral_source=intake_pb2.ReferralSource(kind="self"),
            presenting_needs=[intake_pb2.PresentingNeed(category="housing")],
        )

    erase = intake_pb2.EraseClientRequest(
        context=command(key()), client_id=client.client_id, request_reference="dms://dsr/77"
    )
    openings = [
        retrying(cluster.at(n).as_(RECEPTIONIST).intake.OpenCase, opening())
        for n in range(6 * REPLICAS)
    ]
    erasing = retrying(cluster.at(1).as_(ERASER).intake.EraseClient, erase)
    *answers, erased = await asyncio.gather(*openings, erasing, return_exceptions=True)

    assert isinstance(erased, intake_pb2.EraseClientResponse), erased
    opened = set()
    for answer in answers:
        if isinstance(answer, grpc.aio.AioRpcError):
            assert answer.code() == grpc.StatusCode.FAILED_PRECONDITION, answer
            assert "erased" in (answer.details() or ""), answer
        else:
            assert isinstance(answer, intake_pb2.OpenCaseResponse), answer
            opened.add(answer.result.case_id)
    assert set(erased.erased_case_ids) == opened


async def test_racing_assignments_never_overfill_a_caseload(cluster: Cluster) -> None:
    cases = [await new_case(cluster.casetrail(), "physical_therapy") for _ in range(CAPACITY + 5)]
    await asyncio.gather(*(known_everywhere(cluster, case) for case in cases))

    counted = await outcomes(
        [
            retrying(
                cluster.at(index).as_(COORDINATOR).coordination.AssignCase,
                co.AssignCaseRequest(
                    context=command(key()), case_id=case.case_id, worker_id=WORKER
                ),
            )
            for index, case in enumerate(cases)
        ]
    )

    assert counted == {"OK": CAPACITY, "FAILED_PRECONDITION": 5}
    workers = (
        await cluster.at(0)
        .as_(COORDINATOR)
        .coordination.ListWorkers(co.ListWorkersRequest(context=query("coordination")))
    )
    (worker,) = [w for w in workers.workers if w.worker_id == WORKER]
    assert worker.caseload <= CAPACITY


async def test_racing_reservations_never_overspend_a_budget_line(cluster: Cluster) -> None:
    case = await new_case(cluster.casetrail(), "physical_therapy")
    await known_everywhere(cluster, case)

    counted = await outcomes(
        [
            retrying(
                cluster.at(attempt).as_(COORDINATOR).coordination.ReserveBudget,
                co.ReserveBudgetRequest(
                    context=command(key()),
                    case_id=case.case_id,
                    budget_line=FLEX_FUND,
                    amount=co.Money(amount_minor_units=1_000, currency="USD"),
                ),
            )
            for attempt in range(FUND // 1_000 + 5)
        ]
    )

    assert counted == {"OK": FUND // 1_000, "FAILED_PRECONDITION": 5}
    line = (
        await cluster.at(1)
        .as_(COORDINATOR)
        .coordination.GetBudgetLine(
            co.GetBudgetLineRequest(context=query("coordination"), budget_line=FLEX_FUND)
        )
    )
    assert line.available.amount_minor_units == 0
    assert line.reserved.amount_minor_units == FUND


async def test_racing_bookings_of_one_slot_book_it_once(cluster: Cluster) -> None:
    case = await new_case(cluster.casetrail(), "physical_therapy")
    await known_everywhere(cluster, case)
    slot = next_week(9)

    counted = await outcomes(
        [
            retrying(
                cluster.at(attempt).as_(COORDINATOR).coordination.ScheduleService,
                schedule(case, "physical_therapy", slot + timedelta(minutes=attempt)),
            )
            for attempt in range(3 * REPLICAS)
        ]
    )

    assert counted == {"OK": 1, "FAILED_PRECONDITION": 3 * REPLICAS - 1}


async def test_one_command_sent_to_every_replica_at_once_is_recorded_once(
    cluster: Cluster,
) -> None:
    case = await new_case(cluster.casetrail(), "physical_therapy")
    await known_everywhere(cluster, case)
    request = schedule(case, "physical_therapy", next_week(15))

    answers = await asyncio.gather(
        *(
            retrying(cluster.at(n).as_(COORDINATOR).coordination.ScheduleService, request)
            for n in range(3 * REPLICAS)
        )
    )

    assert len({answer.SerializeToString(deterministic=True) for answer in answers}) == 1
    listed = (
        await cluster.at(2)
        .as_(COORDINATOR)
        .coordination.GetClientSchedule(
            co.GetClientScheduleRequest(context=query("coordination"), client_id=case.client_id)
        )
    )
    assert [service.service_id for service in listed.services] == [answers[0].service_id]


async def test_one_key_sent_with_different_requests_to_every_replica_records_one(
    cluster: Cluster,
) -> None:
    """Three requests under one key, each for another client's schedule (three streams), each
    sent to every replica at once: one request is recorded and answered alike everywhere; the
    others are refused IDEMPOTENCY_KEY_REUSED, as a later retry of them would be. A few
    rounds (a key and an hour each), so the replicas race more than once."""
    cases = [await new_case(cluster.casetrail(), "physical_therapy") for _ in range(REPLICAS)]
    await asyncio.gather(*(known_everywhere(cluster, case) for case in cases))
    recorded: list[str] = []
    for hour in range(1, 7):
        requests = [schedule(case, "physical_therapy", next_week(hour)) for case in cases]
        for request in requests[1:]:
            request.context.CopyFrom(requests[0].context)

        answers = await asyncio.gather(
            *(
                retrying(cluster.at(n).as_(COORDINATOR).coordination.ScheduleService, request)
                for request in requests
                for n in range(REPLICAS)
            ),
            return_exceptions=True,
        )

        accepted = [a for a in answers if isinstance(a, co.ScheduleServiceResponse)]
        refusals = [refusal_of(a) for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert len(accepted) + len(refusals) == len(answers)
        assert len({a.SerializeToString(deterministic=True) for a in accepted}) == 1
        assert len(accepted) == REPLICAS
        assert {(r.code, r.reason) for r in refusals} == {
            (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
        }
        recorded.append(accepted[0].service_id)
    scheduled = []
    for case in cases:
        listed = (
            await cluster.at(2)
            .as_(COORDINATOR)
            .coordination.GetClientSchedule(
                co.GetClientScheduleRequest(context=query("coordination"), client_id=case.client_id)
            )
        )
        scheduled += [service.service_id for service in listed.services]
    assert sorted(scheduled) == sorted(recorded)


async def test_every_event_is_published_even_when_a_relay_leader_dies(cluster: Cluster) -> None:
    """Kill -9 the intake process that started first (it took the relay's lead), keep
    registering through the others: every stored event reaches the topic, and audit's
    timeline of a case holds each of its events once."""
    first = cluster.replicas.processes["intake"][0]
    first.kill()
    await first.wait()
    survivors = [cluster.connections[n].as_(RECEPTIONIST) for n in range(1, REPLICAS)]
    registered = await asyncio.gather(
        *(
            retrying(survivors[n % len(survivors)].intake.RegisterClient, registration())
            for n in range(12)
        )
    )
    assert len(registered) == 12

    stored = await stored_event_ids(cluster.replicas.dsn)
    published = await published_event_ids(cluster.replicas.topic, set(stored), patience=90.0)
    missing = set(stored) - set(published)
    assert missing == set()

    case = await new_case(cluster.casetrail(1), "physical_therapy")
    request = audit_pb2.GetTimelineRequest(
        context=query("confidentiality_review"), case_id=case.case_id
    )
    page = await eventually(
        lambda: cluster.at(1).as_(AUDITOR).audit.GetTimeline(request),
        lambda page: len(page.entries) >= 1,
        what="audit to learn the case",
        patience=90.0,
    )
    ids = [entry.event_id for entry in page.entries]
    assert len(ids) == len(set(ids))


async def known_everywhere(cluster: Cluster, case: Case) -> None:
    """Wait until every coordination replica can see the case (they share read models, but
    each asks its own connection)."""
    request = co.GetCaseCoordinationRequest(context=query("coordination"), case_id=case.case_id)
    for connection in cluster.connections:
        stubs = connection.as_(COORDINATOR)
        await eventually(
            lambda stubs=stubs: stubs.coordination.GetCaseCoordination(request),  # type: ignore[misc]
            what="coordination to learn the case",
            patience=90.0,
        )


async def stored_event_ids(dsn: str) -> list[str]:
    ids: list[str] = []
    async with await psycopg.AsyncConnection.connect(dsn) as connection:
        for service in SERVICES:
            cursor = await connection.execute(
                f'SELECT event_id::text FROM "{service}_events".stored_events'
            )
            ids += [row[0] for row in await cursor.fetchall()]
    return ids


async def published_event_ids(topic: str, wanted: set[str], *, patience: float) -> list[str]:
    """Every event id on the topic (``ce_id``), read from the start until ``wanted`` are all
    there or ``patience`` runs out; repeats included."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap(), auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: list[str] = []
    try:
        async with asyncio.timeout(patience):
            while not wanted <= set(seen):
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        headers = dict(record.headers)
                        seen.append(headers["ce_id"].decode())
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return seen
