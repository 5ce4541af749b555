"""Talking to the casetrail services as an API client: addresses, stubs, contexts, refusals and
waiting for facts to travel between services (they only learn of each other through the bus)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from casetrail.audit.v1 import audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2_grpc
from casetrail.intake.v1 import intake_pb2_grpc
from casetrail.planning.v1 import planning_pb2_grpc
from cli.main import SERVICES

T = TypeVar("T")
M = TypeVar("M", bound=Message)


def load_addresses(data_dir: Path) -> dict[str, str]:
    """The addresses `make run` wrote for the services it started."""
    path = data_dir / "addresses.json"
    try:
        addresses = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(
            f"{path} not found: start the services with `make run` (or pass their addresses)"
        ) from None
    if not isinstance(addresses, dict):
        raise SystemExit(f"{path} must hold an object of service name to address")
    return {str(name): str(address) for name, address in addresses.items()}


@dataclass(frozen=True)
class Stubs:
    intake: intake_pb2_grpc.IntakeStub
    coordination: coordination_pb2_grpc.CoordinationStub
    planning: planning_pb2_grpc.PlanningStub
    audit: audit_pb2_grpc.AuditStub


@asynccontextmanager
async def connect(addresses: Mapping[str, str]) -> AsyncIterator[Stubs]:
    missing = [name for name in SERVICES if not addresses.get(name)]
    if missing:
        raise ValueError(f"no address for {', '.join(missing)}")
    channels = {name: grpc.aio.insecure_channel(addresses[name]) for name in SERVICES}
    try:
        yield Stubs(
            intake_pb2_grpc.IntakeStub(channels["intake"]),
            coordination_pb2_grpc.CoordinationStub(channels["coordination"]),
            planning_pb2_grpc.PlanningStub(channels["planning"]),
            audit_pb2_grpc.AuditStub(channels["audit"]),
        )
    finally:
        for channel in channels.values():
            await channel.close()


@dataclass(frozen=True)
class Person:
    """Someone acting on a case, in one role."""

    user_id: str
    role: str

    def actor(self) -> common_pb2.Actor:
        return common_pb2.Actor(user_id=self.user_id, role=self.role)

    def command(
        self, idempotency_key: str, at: datetime | None = None, correlation_id: str = ""
    ) -> common_pb2.CommandContext:
        context = common_pb2.CommandContext(
            actor=self.actor(), idempotency_key=idempotency_key, correlation_id=correlation_id
        )
        if at is not None:
            context.occurred_at.CopyFrom(timestamp(at))
        return context

    def query(self, purpose: str) -> common_pb2.QueryContext:
        return common_pb2.QueryContext(actor=self.actor(), purpose=purpose)


def timestamp(moment: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(moment)
    return message


@dataclass(frozen=True)
class Refusal:
    """A refused call, with the google.rpc details the services attach."""

    code: grpc.StatusCode
    message: str
    status: status_pb2.Status = field(repr=False)

    def details(self, kind: type[M]) -> list[M]:
        found: list[M] = []
        for packed in self.status.details:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found.append(message)
        return found

    @property
    def reason(self) -> str:
        """The rule (FAILED_PRECONDITION) or ROLE_NOT_ALLOWED (PERMISSION_DENIED), if given."""
        infos = self.details(error_details_pb2.ErrorInfo)
        return infos[0].reason if infos else ""

    @property
    def metadata(self) -> dict[str, str]:
        infos = self.details(error_details_pb2.ErrorInfo)
        return dict(infos[0].metadata) if infos else {}

    @property
    def field_violations(self) -> dict[str, str]:
        return {
            violation.field: violation.description
            for bad in self.details(error_details_pb2.BadRequest)
            for violation in bad.field_violations
        }

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"


class UnexpectedSuccess(AssertionError):
    """A call that should have been refused was accepted."""


def refusal_of(error: grpc.aio.AioRpcError) -> Refusal:
    status: status_pb2.Status | None = rpc_status.from_call(error)
    if status is None:
        status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
    return Refusal(error.code(), status.message, status)


async def refused(call: Awaitable[object]) -> Refusal:
    """The refusal of a call expected to be refused."""
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        return refusal_of(error)
    raise UnexpectedSuccess(f"the call was accepted: {response}")


def not_known_yet(refusal: Refusal) -> bool:
    """The service has not heard of the case yet (or is not up yet): worth asking again."""
    return refusal.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)


async def eventually(
    fetch: Callable[[], Awaitable[T]],
    ready: Callable[[T], bool] = lambda _: True,
    *,
    what: str,
    patience: float = 30.0,
    retry: Callable[[Refusal], bool] = not_known_yet,
) -> T:
    """Call ``fetch`` until ``ready`` holds of its answer.

    A case travels between services over the bus, so a service may not know it yet (NOT_FOUND)
    or show an older state for a moment. Commands are idempotent under their key, so resending
    the very same request after a refusal that ``retry`` accepts is safe: nothing was written.
    """
    deadline = time.monotonic() + patience
    pause = 0.02
    last = "nothing yet"
    while True:
        try:
            answer = await fetch()
            if ready(answer):
                return answer
            last = "not ready"
        except grpc.aio.AioRpcError as error:
            refusal = refusal_of(error)
            if not retry(refusal):
                raise
            last = str(refusal)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {patience:.0f}s waiting for {what} ({last})")
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.5)
