"""The benchmarked commands: one call of each, as the benchmark users, and the clients and cases
prepared before the rows."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import grpc

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2, coordination_pb2_grpc
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc

BORN_FROM = date(1940, 1, 1).toordinal()


T = TypeVar("T")


NEEDS_CASES = frozenset({"make_referral", "get_case_view"})


def command_context(run_id: str, key: str) -> common_pb2.CommandContext:
    return common_pb2.CommandContext(idempotency_key=f"{run_id}-{key}")


BENCH_USERS = {
    "rcp-bench": "receptionist",
    "coord-bench": "coordinator",
}
"""Who calls: each benchmark user with their role (carried by their bearer token)."""


BENCH_AUDIENCE = "casetrail-bench"


class Commands:
    """One call of each benchmarked command; every call has a fresh idempotency key and its
    caller's bearer token."""

    def __init__(
        self,
        run_id: str,
        addresses: Mapping[str, str],
        channels: int,
        tokens: Mapping[str, str],
    ) -> None:
        self.run_id = run_id
        self._as = {user: (("authorization", f"Bearer {token}"),) for user, token in tokens.items()}
        # A local subchannel pool per channel: one TCP connection each, not one shared.
        options = [("grpc.use_local_subchannel_pool", 1)]
        self._channels = [
            grpc.aio.insecure_channel(addresses[name], options=options)
            for name in ("intake", "coordination")
            for _ in range(channels)
        ]
        self._intake = [
            intake_pb2_grpc.IntakeServiceStub(channel) for channel in self._channels[:channels]
        ]
        self._coordination = [
            coordination_pb2_grpc.CoordinationServiceStub(channel)
            for channel in self._channels[channels:]
        ]
        # Planning only when it is served (the reference serves intake alone).
        planning = [
            grpc.aio.insecure_channel(addresses["planning"], options=options)
            for _ in range(channels if "planning" in addresses else 0)
        ]
        self._channels += planning
        self._planning = [planning_pb2_grpc.PlanningServiceStub(channel) for channel in planning]
        self._numbers = itertools.count()
        self.clients: list[str] = []
        self.cases: list[str] = []

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def call(self, command: str) -> Callable[[], Awaitable[None]]:
        calls: dict[str, Callable[[], Awaitable[None]]] = {
            "open_case": self.open_case,
            "register_client": self.register_client,
            "make_referral": self.make_referral,
            "get_case_view": self.get_case_view,
        }
        return calls[command]

    async def get_case_view(self) -> None:
        number = next(self._numbers)
        stub = self._planning[number % len(self._planning)]
        await stub.GetCaseView(
            planning_pb2.GetCaseViewRequest(
                context=common_pb2.QueryContext(purpose="coordination"),
                case_id=self.cases[number % len(self.cases)],
            ),
            metadata=self._as["coord-bench"],
        )

    async def register_client(self) -> None:
        await self._register(next(self._numbers))

    async def _register(self, number: int) -> str:
        stub = self._intake[number % len(self._intake)]
        response = await stub.RegisterClient(
            intake_pb2.RegisterClientRequest(
                context=command_context(self.run_id, f"reg-{number}"),
                # Unique names: duplicate detection has nothing to refuse.
                name=intake_pb2.PersonName(
                    given_names=f"Person {number}", family_name=f"Bench {self.run_id}"
                ),
                date_of_birth=date.fromordinal(BORN_FROM + number % 20_000).isoformat(),
                preferred_language="en",
            ),
            metadata=self._as["rcp-bench"],
        )
        return str(response.client_id)

    async def open_case(self) -> None:
        await self._open(next(self._numbers))

    async def _open(self, number: int) -> str:
        stub = self._intake[number % len(self._intake)]
        response = await stub.OpenCase(
            intake_pb2.OpenCaseRequest(
                context=command_context(self.run_id, f"open-{number}"),
                client_id=self.clients[number % len(self.clients)],
                referral_source=intake_pb2.ReferralSource(kind="hospital", name="St Mary's"),
                presenting_needs=[
                    intake_pb2.PresentingNeed(category="home_care", description="Cannot wash alone")
                ],
            ),
            metadata=self._as["rcp-bench"],
        )
        return str(response.result.case_id)

    async def _consent(self, case_id: str) -> None:
        stub = self._intake[hash(case_id) % len(self._intake)]
        await stub.GrantConsent(
            intake_pb2.GrantConsentRequest(
                context=command_context(self.run_id, f"consent-{case_id}"),
                case_id=case_id,
                recipient=intake_pb2.ConsentRecipient(
                    kind="agency", recipient_id="pa-bench", name="Bench Care"
                ),
                purpose="coordination",
                scope=["identity", "referrals", "services"],
                expires_at=_in_days(30),
                document_reference="scan://consents/bench.pdf",
            ),
            # The cases are assigned to no one: a social worker records consents only on
            # their own.
            metadata=self._as["coord-bench"],
        )

    async def make_referral(self) -> None:
        number = next(self._numbers)
        stub = self._coordination[number % len(self._coordination)]
        await stub.MakeReferral(
            coordination_pb2.MakeReferralRequest(
                context=command_context(self.run_id, f"ref-{number}"),
                case_id=self.cases[number % len(self.cases)],
                provider=coordination_pb2.Provider(provider_id="pa-bench", name="Bench Care"),
                need_category="home_care",
                service="two visits a day",
                urgency="routine",
                reason="Cannot wash alone",
            ),
            # The cases are assigned to no one: a social worker refers only on their own.
            metadata=self._as["coord-bench"],
        )

    async def prepare(self, clients: int, cases: int, patience: float = 300.0) -> None:
        """Register the clients; open the cases and wait until coordination (and planning,
        when served) knows them all."""
        self.clients = [await self._register(next(self._numbers)) for _ in range(clients)]
        if not cases:
            return
        numbers = [next(self._numbers) for _ in range(cases)]
        self.cases = await _bounded(32, [partial(self._open, n) for n in numbers])
        # A referral discloses the case: the MakeReferral row needs each client's consent.
        await _bounded(32, [partial(self._consent, c) for c in self.cases])
        deadline = time.perf_counter() + patience
        await _bounded(16, [partial(self._await_case, c, deadline) for c in self.cases])
        if self._planning:
            await _bounded(16, [partial(self._await_view, c, deadline) for c in self.cases])

    async def _await_view(self, case_id: str, deadline: float) -> None:
        request = planning_pb2.GetCaseViewRequest(
            context=common_pb2.QueryContext(purpose="coordination"), case_id=case_id
        )
        stub = self._planning[0]
        await _until_known(
            lambda: stub.GetCaseView(request, metadata=self._as["coord-bench"]), deadline
        )

    async def _await_case(self, case_id: str, deadline: float) -> None:
        request = coordination_pb2.GetCaseCoordinationRequest(
            context=common_pb2.QueryContext(purpose="coordination"), case_id=case_id
        )
        stub = self._coordination[0]
        await _until_known(
            lambda: stub.GetCaseCoordination(request, metadata=self._as["coord-bench"]), deadline
        )


NOT_YET = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)
"""Answers of a service that has not learnt the case yet, or not yet fetched the issuer's keys
(a loaded machine: the first fetch may time out)."""


async def _until_known(call: Callable[[], Awaitable[object]], deadline: float) -> None:
    while True:
        try:
            await call()
            return
        except grpc.aio.AioRpcError as error:
            if error.code() not in NOT_YET or time.perf_counter() > deadline:
                raise
        await asyncio.sleep(0.2)


def _in_days(days: int) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    moment = Timestamp()
    moment.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return moment


async def _bounded(limit: int, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))
