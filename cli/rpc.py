"""Talking to the casetrail services as an API client: addresses, stubs, contexts, refusals and
waiting for facts to travel between services (they only learn of each other through the bus)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from casetrail.audit.v1 import audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2_grpc
from casetrail.intake.v1 import intake_pb2_grpc
from casetrail.planning.v1 import planning_pb2_grpc
from casetrail_platform.addresses import addresses_file, port_problem
from casetrail_platform.identity.development import DEFAULT_AGENCY, DevelopmentSigner
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.identity.tls import (
    ClientTls,
    allow_plaintext,
    channel,
    require_tls_beyond_loopback_target,
)
from casetrail_platform.private_files import small_text
from cli.main import SERVICES
from cli.present import shown

T = TypeVar("T")
M = TypeVar("M", bound=Message)


MAX_ADDRESSES_BYTES = 64 * 1024
"""Far above four services' and the console's addresses: a larger file (a device, a wrong
file put in its place) is not one, and is not read whole."""


def load_addresses(data_dir: Path) -> dict[str, str]:
    """The addresses `make run` wrote for the services it started."""
    path = addresses_file(data_dir)
    try:
        addresses = json.loads(small_text(path, MAX_ADDRESSES_BYTES))
    except FileNotFoundError:
        raise SystemExit(
            f"{path} not found: start the services with `make run` (or pass their addresses)"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        # A directory, no permission, a file cut short or too large: named, never a traceback.
        problem = error.strerror if isinstance(error, OSError) else _not_addresses(error)
        raise SystemExit(f"{path}: cannot read the services' addresses: {problem}") from None
    if not isinstance(addresses, dict):
        raise SystemExit(f"{path} must hold an object of service name to address")
    return {str(name): str(address) for name, address in addresses.items()}


def _not_addresses(error: ValueError) -> str:
    if isinstance(error, UnicodeDecodeError | json.JSONDecodeError):
        return "not JSON"
    return str(error)  # small_text's bound: it quotes no content


def client_tls() -> ClientTls | None:
    """The ``CASETRAIL_TLS_*`` client settings, or exit naming the one that is wrong."""
    try:
        return ClientTls.from_env()
    except ValueError as error:
        raise SystemExit(f"TLS: {error}") from None


class UnaryDeadline(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # untyped
    """Gives each unary call without a deadline of its own ``seconds`` (streams keep none:
    an export lasts as long as the case is large): the CLI's ``--timeout``, the audit
    console's calls to audit."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        if details.timeout is None:
            details = details._replace(timeout=self._seconds)
        return await continuation(details, request)


def plaintext_allowed() -> bool:
    """``CASETRAIL_GRPC_ALLOW_PLAINTEXT``, or exit naming it when it is neither 1 nor 0."""
    try:
        return allow_plaintext(os.environ)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def command_channel(address: str, timeout: float) -> grpc.aio.Channel:
    """A channel for a command: the ``CASETRAIL_TLS_*`` settings, and ``timeout`` seconds
    for each unary call's answer (``--timeout``). Without ``CASETRAIL_TLS_CA`` to an address
    beyond loopback, the command exits (a usage error, 2) before anything is sent, unless
    ``CASETRAIL_GRPC_ALLOW_PLAINTEXT=1``: its bearer token would travel in plain text. So
    does an address whose port is none (``--audit``, ``addresses.json``): 70000 dialled 4464."""
    problem = port_problem(address)
    if problem is not None:
        raise SystemExit(problem)
    try:
        return channel(
            address,
            client_tls(),
            [UnaryDeadline(timeout)],
            plaintext_allowed=plaintext_allowed(),
        )
    except ValueError as refused:  # PlaintextRefused
        raise SystemExit(str(refused)) from None


@asynccontextmanager
async def intake_stub(
    address: str | None, data_dir: Path, answer_within: float
) -> AsyncIterator[intake_pb2_grpc.IntakeServiceStub]:
    """Intake's stub at ``address`` (``None``: the one ``addresses.json`` in ``data_dir``
    names), for the CLI's commands on intake's API; each answer within ``answer_within``
    seconds (``--timeout``)."""
    address = address or load_addresses(data_dir).get("intake")
    if not address:
        raise SystemExit("no address for intake: pass --intake HOST:PORT")
    async with command_channel(address, answer_within) as opened:
        yield intake_pb2_grpc.IntakeServiceStub(opened)


@dataclass(frozen=True)
class Stubs:
    """The four services' stubs, every call carrying one caller's bearer token."""

    intake: intake_pb2_grpc.IntakeServiceStub
    coordination: coordination_pb2_grpc.CoordinationServiceStub
    planning: planning_pb2_grpc.PlanningServiceStub
    audit: audit_pb2_grpc.AuditServiceStub


@dataclass(frozen=True)
class Person:
    """Someone acting on a case, in one role; who they are travels in their bearer token."""

    user_id: str
    role: str
    agency: str = DEFAULT_AGENCY
    team: str | None = None
    entitlements: tuple[str, ...] = ()
    """Extra grants the issuer names in the token (e.g. ``break_glass``)."""


TokenSource = Callable[[Person], str]
"""A bearer token for a person (minted by an issuer the services trust)."""


def minted_by(signer: DevelopmentSigner) -> TokenSource:
    """Tokens from a development (or test) issuer's signer, one per person, reused."""
    tokens: dict[Person, str] = {}

    def token_for(person: Person) -> str:
        if person not in tokens:
            tokens[person] = signer.mint(
                person.user_id,
                person.role,
                agency=person.agency,
                team=person.team,
                entitlements=person.entitlements,
            )
        return tokens[person]

    return token_for


class Connection:
    """Channels to the four services; ``as_(person)`` gives stubs whose every call carries
    ``person``'s bearer token (the services take the caller from it, never from a request)."""

    def __init__(self, channels: Mapping[str, grpc.aio.Channel], tokens: TokenSource) -> None:
        self._channels = channels
        self._tokens = tokens
        self._stubs: dict[Person, Stubs] = {}

    def as_(self, person: Person) -> Stubs:
        stubs = self._stubs.get(person)
        if stubs is None:
            metadata = _Bearer(self._tokens, person)
            channels = {
                name: _WithMetadata(channel, metadata) for name, channel in self._channels.items()
            }
            stubs = Stubs(
                intake_pb2_grpc.IntakeServiceStub(channels["intake"]),
                coordination_pb2_grpc.CoordinationServiceStub(channels["coordination"]),
                planning_pb2_grpc.PlanningServiceStub(channels["planning"]),
                audit_pb2_grpc.AuditServiceStub(channels["audit"]),
            )
            self._stubs[person] = stubs
        return stubs


@asynccontextmanager
async def connect(
    addresses: Mapping[str, str],
    tokens: TokenSource,
    tls: ClientTls | None = None,
    *,
    plaintext_allowed: bool | None = None,
) -> AsyncIterator[Connection]:
    """Channels to the four services at ``addresses``; without ``tls`` each must be a loopback
    one unless ``plaintext_allowed`` (``None``: ``CASETRAIL_GRPC_ALLOW_PLAINTEXT``), else
    ``PlaintextRefused`` before any is opened."""
    missing = [name for name in SERVICES if not addresses.get(name)]
    if missing:
        raise ValueError(f"no address for {', '.join(missing)}")
    allowed = allow_plaintext(os.environ) if plaintext_allowed is None else plaintext_allowed
    for name in SERVICES:
        require_tls_beyond_loopback_target(addresses[name], tls, plaintext_allowed=allowed)
    channels = {name: channel(addresses[name], tls, plaintext_allowed=allowed) for name in SERVICES}
    try:
        yield Connection(channels, tokens)
    finally:
        for opened in channels.values():
            await opened.close()


class _Bearer:
    def __init__(self, tokens: TokenSource, person: Person) -> None:
        self._tokens = tokens
        self._person = person

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self._tokens(self._person))


class _WithMetadata:
    """A channel whose calls carry the bearer metadata first (what the generated stubs need
    of a channel: its four ways of making a method callable)."""

    def __init__(self, inner: grpc.aio.Channel, bearer: _Bearer) -> None:
        self._inner = inner
        self._bearer = bearer

    def __getattr__(self, name: str) -> Callable[..., _Call]:
        make = getattr(self._inner, name)

        def method(*args: Any, **kwargs: Any) -> _Call:
            return _Call(make(*args, **kwargs), self._bearer)

        return method


class _Call:
    def __init__(self, inner: Any, bearer: _Bearer) -> None:
        self._inner = inner
        self._bearer = bearer

    def __call__(self, request: Any, *, metadata: Any = None, **kwargs: Any) -> Any:
        sent = self._bearer.metadata() + tuple(metadata or ())
        return self._inner(request, metadata=sent, **kwargs)


def command(
    idempotency_key: str, at: datetime | None = None, correlation_id: str = ""
) -> common_pb2.CommandContext:
    context = common_pb2.CommandContext(
        idempotency_key=idempotency_key, correlation_id=correlation_id
    )
    if at is not None:
        context.occurred_at.CopyFrom(timestamp(at))
    return context


def query(purpose: str) -> common_pb2.QueryContext:
    return common_pb2.QueryContext(purpose=purpose)


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
                try:
                    packed.Unpack(message)
                except DecodeError:
                    continue  # a detail that is not what it says it is: told without it
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
    """The refusal ``error`` carries; its code and message alone when its details cannot be
    read (not a google.rpc Status, or one whose code or message is not the call's: a proxy's
    answer, or a misbehaving server's), rather than a traceback in their place."""
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)
    except (ValueError, DecodeError):
        status = None
    if status is None:
        status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
    return Refusal(error.code(), status.message, status)


def answered(service: str, timeout: float, ask: Callable[[], int | None]) -> int:
    """A command's calls to ``service`` (``ask``, its exit status or ``None`` for 0) to its
    exit status: a refusal told by
    ``print_refusal``; an answer this CLI cannot read (a moment out of range, an enum or JSON
    it does not know: a newer service, or one misbehaving) told in one line, exit 1 as a
    refusal, never a traceback."""
    try:
        return ask() or 0
    except grpc.aio.AioRpcError as error:
        return print_refusal(error, timeout)
    except (ValueError, OverflowError) as error:
        print(
            f"{service} answered something this CLI cannot read: {shown(str(error))}",
            file=sys.stderr,
        )
        return 1


def print_refusal(error: grpc.aio.AioRpcError, timeout: float | None = None) -> int:
    """Tell a command-line caller why the call was refused (each field's problem on a line of
    its own); the exit status to return. ``timeout``: the command's ``--timeout``, named when
    the answer did not come within it."""
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
        print(
            f"refused: DEADLINE_EXCEEDED: no answer within {timeout:g} seconds (--timeout);"
            " the service may be overloaded or stuck: try again, or allow longer",
            file=sys.stderr,
        )
        return 1
    refusal = refusal_of(error)
    violations = refusal.field_violations
    # INVALID_ARGUMENT's message lists the fields' problems printed below: not twice.
    headline = f"{refusal.code.name}{' ' + refusal.reason if refusal.reason else ''}"
    print(shown(f"refused: {headline if violations else refusal}"), file=sys.stderr)
    for field_name, problem in violations.items():
        print(shown(f"  {field_name}: {problem}"), file=sys.stderr)
    return 1


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
