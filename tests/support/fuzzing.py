"""Fuzzing every RPC of every casetrail service (issue 8): generated requests and the checks on
what comes back.

Requests are generated from the services' own descriptors, so a new RPC or field is fuzzed
without anyone listing it: plausible values (real ids, codes the services know, recent
moments) mixed with hostile ones (NUL and other control characters, huge strings and lists,
timestamps outside any calendar, unknown enum numbers) and, for some requests, bytes that are
not valid protobuf at all (invalid UTF-8 in a string). Every answer must be a documented
status (``DOCUMENTED``), arrive before the deadline, carry a bounded status, and a refusal
must leave the service's store as it was (audit records refused reads too, by design).

Used by ``tests/e2e/test_fuzz.py`` (CI, a few hundred requests on the embedded backend) and
``bench/fuzz_bench.py`` (ten thousand and more, with a report).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status
from hypothesis import strategies as st

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.grpc_platform.errors import MAX_STATUS_BYTES
from casetrail_platform.identity.grpc_auth import bearer_metadata
from cli.rpc import Person, TokenSource, command, query
from events.catalog.access import AccessPurpose
from events.catalog.base import Role

T = TypeVar("T")

DOCUMENTED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAVAILABLE,
    }
)
"""The statuses the README documents. UNKNOWN, INTERNAL, RESOURCE_EXHAUSTED and
DEADLINE_EXCEEDED are failures of the fuzz run."""

DEADLINE_SECONDS = 15.0
MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""gRPC's default receive limit (README, "Limits"): a bigger request is refused by gRPC itself
as RESOURCE_EXHAUSTED, the documented answer for it (a DraftPlan of many huge goals can be)."""
_ACCESS_RECORDS = frozenset({"casetrail.record.accessed", "casetrail.record.access_denied"})
"""What a refused call may still write: the record of the read, or of its refusal (every read
and every refusal is on the record), never case content."""
_MARK = "MARKMARK"
_NOT_UTF8 = b"MA\xff\xfeRKMA"  # as long as the mark, so every length prefix stays right


@dataclass(frozen=True)
class Rpc:
    service: str
    """intake, coordination, planning or audit (its address key and data directory)."""
    path: str
    """``/casetrail.intake.v1.IntakeService/GetCase``."""
    request_type: type[Message]
    streaming: bool


def every_rpc() -> list[Rpc]:
    """Every method of every casetrail service, from the generated descriptors."""
    found = []
    for module in (intake_pb2, coordination_pb2, planning_pb2, audit_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append(_rpc(service.full_name, method))
    return found


def _rpc(service_name: str, method: MethodDescriptor) -> Rpc:
    return Rpc(
        service=service_name.split(".")[1],
        path=f"/{service_name}/{method.name}",
        request_type=message_factory.GetMessageClass(method.input_type),
        streaming=method.server_streaming,
    )


# --- values ---------------------------------------------------------------------------------

_VOCABULARY = [
    "home_care", "counseling", "physical_therapy", "transportation", "socialisation", "housing",
    "self", "hospital", "phone_call", "home_visit", "routine", "soon", "urgent", "short",
    "medium", "long", "client_home", "provider_site", "provider", "client", "caseworker",
    "national_id", "EUR", "USD", "open", "closed", "achieved", "direct_care", "coordination",
    "supervision", "confidentiality_review", "1950-03-14", "2026-01-01", "9999-12-31",
    "0001-01-01", "home-care-medicaid-waiver", "home-care-fy2025", "eastside-pt",
]  # fmt: skip

_HOSTILE = [
    "\x00", "a\x00b", "\x00" * 50, "\x1b[31mred", "\x7f", "line\r\nbreak\ttab", "\u202etxet",
    "\ufeff", "\U0001f600" * 20, "' OR 1=1 --", "${jndi:ldap://x}", "../../etc/passwd", " ",
    "\u0085", "\u2028", "%s%s%n",
]  # fmt: skip


def _huge() -> st.SearchStrategy[str]:
    return st.tuples(
        st.sampled_from(["x", "é", "\U0001f600", "\x00"]), st.integers(65, 30_000)
    ).map(lambda pair: pair[0] * pair[1])


@dataclass
class Known:
    """Real ids learnt from the running services, and real requests (``seeds``: the demo
    walk's, by RPC path, with the metadata they were sent with), so that generated requests
    reach the business rules and not only the edge."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    seeds: dict[str, list[tuple[bytes, tuple[tuple[str, str], ...]]]] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        if value not in self.ids.setdefault(name, []):
            self.ids[name].append(value)


_PLAIN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-. ", min_size=1, max_size=30)


def _strings(name: str, known: Known, hostile: bool) -> st.SearchStrategy[str]:
    choices: list[st.SearchStrategy[str]] = [st.sampled_from(_VOCABULARY), _PLAIN]
    if hostile:
        choices += [st.text(max_size=30), st.sampled_from(_HOSTILE), _huge(), st.just(_MARK)]
    real = known.ids.get(name)
    if real:
        choices = [st.sampled_from(real), st.sampled_from(real), *choices]
    return st.one_of(choices)


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _ints(kind: int) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[kind]
    return st.one_of(
        st.integers(max(low, -3), 1000),
        st.sampled_from([low, high, 0, 1, -1 if low < 0 else 2]),
        st.integers(low, high),
    )


_RECENT_SECONDS = st.integers(
    int((datetime.now(UTC) - timedelta(days=60)).timestamp()),
    int((datetime.now(UTC) + timedelta(days=60)).timestamp()),
)
_SECONDS = st.one_of(
    _RECENT_SECONDS,
    st.sampled_from([253402300800, 253402300799, -62135596800, -62135596801, 0, -1, 2**62]),
    st.integers(-(2**63), 2**63 - 1),
)
_NANOS = st.one_of(st.just(0), st.sampled_from([-1, 999_999_999, 1_000_000_000, -(2**31)]))


@st.composite
def _timestamp(draw: st.DrawFn, message: Message, hostile: bool = True) -> None:
    message.seconds = draw(_SECONDS if hostile else _RECENT_SECONDS)  # type: ignore[attr-defined]
    message.nanos = draw(_NANOS if hostile else st.just(0))  # type: ignore[attr-defined]


@st.composite
def _filled(draw: st.DrawFn, message: Message, known: Known, depth: int, hostile: bool) -> Message:
    """``message`` with some of its fields set: plausible values, and hostile ones when
    ``hostile`` (a request is either, so that plausible ones reach the business rules)."""
    descriptor: Any = message.DESCRIPTOR  # the C (upb) or the Python class
    if descriptor.full_name == "google.protobuf.Timestamp":
        draw(_timestamp(message, hostile))
        return message
    if descriptor.full_name == "casetrail.common.v1.CommandContext":
        return draw(_command_context(message, known, hostile))
    if descriptor.full_name == "casetrail.common.v1.QueryContext":
        return draw(_query_context(message, hostile))
    for each in descriptor.fields:
        if draw(st.integers(0, 3)) == 0:
            continue
        if each.is_repeated:
            many = st.integers(99, 110) if hostile else st.integers(1, 3)
            count = draw(st.one_of(st.integers(0, 3), st.just(1), many))
            if each.type == FieldDescriptor.TYPE_MESSAGE:
                target = getattr(message, each.name)
                if depth >= 2:
                    continue
                for _ in range(min(count, 3)):
                    draw(_filled(target.add(), known, depth + 1, hostile))
                for _ in range(count - len(target)):  # many more, as copies of the last one
                    target.add().CopyFrom(target[-1])
            else:
                values = [draw(_scalar(each, known, hostile)) for _ in range(min(count, 3))]
                values += values[-1:] * (count - len(values)) if values else []
                getattr(message, each.name).extend(values)
        elif each.type == FieldDescriptor.TYPE_MESSAGE:
            if depth < 3:
                draw(_filled(getattr(message, each.name), known, depth + 1, hostile))
        else:
            setattr(message, each.name, draw(_scalar(each, known, hostile)))
    return message


def _scalar(each: FieldDescriptor, known: Known, hostile: bool) -> st.SearchStrategy[Any]:
    kind = each.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _strings(each.name, known, hostile)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM and each.enum_type is not None:
        numbers = [value.number for value in each.enum_type.values]
        if not hostile:
            return st.sampled_from(numbers)
        return st.one_of(st.sampled_from(numbers), st.integers(-5, 50))
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32)
    if not hostile:
        return st.integers(0, 10_000)
    return _ints(kind)


@st.composite
def _command_context(draw: st.DrawFn, message: Message, known: Known, hostile: bool) -> Message:
    recent = datetime.now(UTC) - timedelta(minutes=draw(st.integers(1, 60 * 24 * 30)))
    key = uuid.uuid4().hex
    context = command(draw(st.one_of(st.just(key), _strings("key", known, hostile))))
    if draw(st.booleans()):
        context.occurred_at.FromDatetime(recent)
    elif hostile and draw(st.booleans()):
        draw(_timestamp(context.occurred_at))
    if hostile and draw(st.integers(0, 4)) == 0:
        context.correlation_id = draw(st.one_of(st.just(str(uuid.uuid4())), st.text(max_size=5)))
    if draw(st.integers(0, 4)) == 0:
        context.expected_version = draw(
            _ints(FieldDescriptor.TYPE_INT64) if hostile else st.integers(0, 3)
        )
    message.CopyFrom(context)
    return message


@st.composite
def _query_context(draw: st.DrawFn, message: Message, hostile: bool) -> Message:
    purposes = st.sampled_from([purpose.value for purpose in AccessPurpose])
    message.CopyFrom(
        query(draw(st.one_of(purposes, st.sampled_from(_HOSTILE)) if hostile else purposes))
    )
    return message


_PEOPLE = [
    Person("lena.fischer", "receptionist"),
    Person("paolo.ricci", "intake_worker"),
    Person("maria.santos", "coordinator"),
    Person("sw-amara-okafor", "social_worker"),
    Person("helen.morris", "supervisor"),
    Person("james.liu", "auditor"),
    *(Person(f"fuzz-{role.value}", role.value) for role in Role),
]


@dataclass(frozen=True)
class Call:
    rpc: Rpc
    caller: Person
    payload: bytes
    """What goes on the wire: the serialized request, or bytes protobuf will not parse."""
    undecodable: bool
    metadata: tuple[tuple[str, str], ...] = ()
    """The seed's own bearer token when the call mutates a seed (else the caller's)."""


@st.composite
def calls(draw: st.DrawFn, rpc: Rpc, known: Known) -> Call:
    """One generated call of ``rpc``: half of them a real request (a seed) with one field
    changed, hostile or not; the others built from nothing, two in five hostile; one in five
    hostile ones not valid protobuf."""
    seeds = known.seeds.get(rpc.path)
    if seeds and draw(st.booleans()):
        return draw(_mutated(rpc, seeds, known))
    hostile = draw(st.integers(0, 4)) < 2
    request = draw(_filled(rpc.request_type(), known, 0, hostile))
    payload = request.SerializeToString()
    undecodable = False
    if hostile and draw(st.integers(0, 4)) == 0:
        undecodable = True
        if _MARK.encode() in payload:
            payload = payload.replace(_MARK.encode(), _NOT_UTF8, 1)
        else:
            payload = draw(st.binary(min_size=1, max_size=200))
    return Call(rpc, draw(st.sampled_from(_PEOPLE)), payload, undecodable)


@st.composite
def _mutated(
    draw: st.DrawFn,
    rpc: Rpc,
    seeds: list[tuple[bytes, tuple[tuple[str, str], ...]]],
    known: Known,
) -> Call:
    payload, metadata = draw(st.sampled_from(seeds))
    request = rpc.request_type.FromString(payload)
    places = list(_places(request))
    hostile = draw(st.booleans())
    if places and draw(st.integers(0, 5)) > 0:
        message, each = draw(st.sampled_from(places))
        if each.is_repeated:
            message.ClearField(each.name)
        if each.type == FieldDescriptor.TYPE_MESSAGE:
            target = getattr(message, each.name)
            draw(_filled(target.add() if each.is_repeated else target, known, 2, hostile))
        elif each.is_repeated:
            getattr(message, each.name).extend(
                [draw(_scalar(each, known, hostile))] * draw(st.sampled_from([1, 2, 101]))
            )
        else:
            setattr(message, each.name, draw(_scalar(each, known, hostile)))
    return Call(rpc, _PEOPLE[0], request.SerializeToString(), False, metadata)


def _places(message: Message) -> Iterator[tuple[Message, Any]]:
    """Every field of ``message`` and of the messages set in it (Timestamps as a whole)."""
    for each in message.DESCRIPTOR.fields:
        yield message, each
        if each.type != FieldDescriptor.TYPE_MESSAGE or each.message_type is None:
            continue
        if each.message_type.full_name == "google.protobuf.Timestamp":
            continue
        if each.is_repeated:
            for item in getattr(message, each.name):
                yield from _places(item)
        elif message.HasField(each.name):
            yield from _places(getattr(message, each.name))


class SeedRecorder(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Records every unary request a client sends (the demo walk's), as ``Known.seeds``."""

    def __init__(self, known: Known) -> None:
        self._known = known

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Message
    ) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        metadata = tuple((str(k), str(v)) for k, v in (details.metadata or ()))
        self._known.seeds.setdefault(method, []).append((request.SerializeToString(), metadata))
        return await continuation(details, request)


# --- calling and checking -------------------------------------------------------------------


@dataclass
class Outcomes:
    """What the fuzzed services answered, and every broken promise."""

    by_status: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    calls: int = 0
    undecodable: int = 0

    def summary(self) -> str:
        statuses = ", ".join(f"{name} {count}" for name, count in self.by_status.most_common())
        return f"{self.calls} calls ({self.undecodable} not valid protobuf): {statuses}"


def _identity(data: bytes) -> bytes:
    return data


async def perform(
    call: Call, addresses: dict[str, str], tokens: TokenSource, data_dir: Path, out: Outcomes
) -> None:
    """Send ``call``; record its status and any broken promise in ``out``."""
    before = last_position(data_dir, call.rpc.service)
    code, status_size, message = await _send(call, addresses, tokens)
    out.calls += 1
    out.undecodable += call.undecodable
    out.by_status[code.name] += 1
    where = f"{call.rpc.path} as {'a seed' if call.metadata else call.caller.role}"
    too_big = code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(call.payload) > MAX_REQUEST_BYTES
    if code not in DOCUMENTED and not too_big:
        out.failures.append(f"{where}: {code.name} {message[:200]!r}")
    if status_size > MAX_STATUS_BYTES:
        out.failures.append(f"{where}: a status of {status_size} bytes")
    if code != grpc.StatusCode.OK:
        written = _event_types_after(data_dir, call.rpc.service, before)
        if any(event_type not in _ACCESS_RECORDS for event_type in written):
            out.failures.append(f"{where}: refused {code.name} but wrote {written}")


async def _send(
    call: Call, addresses: dict[str, str], tokens: TokenSource
) -> tuple[grpc.StatusCode, int, str]:
    channel = _channel(addresses[call.rpc.service])
    metadata = call.metadata or bearer_metadata(tokens(call.caller))
    try:
        if call.rpc.streaming:
            stream = channel.unary_stream(
                call.rpc.path, request_serializer=_identity, response_deserializer=_identity
            )
            async for _ in stream(call.payload, metadata=metadata, timeout=DEADLINE_SECONDS):
                pass
        else:
            unary = channel.unary_unary(
                call.rpc.path, request_serializer=_identity, response_deserializer=_identity
            )
            await unary(call.payload, metadata=metadata, timeout=DEADLINE_SECONDS)
    except grpc.aio.AioRpcError as error:
        status = rpc_status.from_call(error)
        size = 0 if status is None else status.ByteSize()
        return error.code(), size, error.details() or ""
    return grpc.StatusCode.OK, 0, ""


_channels: dict[str, grpc.aio.Channel] = {}


def _channel(address: str) -> grpc.aio.Channel:
    channel = _channels.get(address)
    if channel is None:
        channel = _channels[address] = grpc.aio.insecure_channel(address)
    return channel


async def close_channels() -> None:
    for channel in _channels.values():
        await channel.close()
    _channels.clear()


def _database(data_dir: Path, service: str) -> sqlite3.Connection:
    uri = f"file:{data_dir / service / 'events.db'}?mode=ro"
    return sqlite3.connect(uri, uri=True)


def last_position(data_dir: Path, service: str) -> int:
    with _closing(_database(data_dir, service)) as database:
        row = database.execute("SELECT coalesce(max(position), 0) FROM stored_events").fetchone()
    return int(row[0])


def _event_types_after(data_dir: Path, service: str, position: int) -> list[str]:
    with _closing(_database(data_dir, service)) as database:
        rows = database.execute(
            "SELECT event_type FROM stored_events WHERE position > ? ORDER BY position",
            (position,),
        ).fetchall()
    return [str(row[0]) for row in rows]


@contextmanager
def _closing(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield connection
    finally:
        connection.close()


# --- the services on a loop of their own ----------------------------------------------------


class BackgroundLoop:
    """An event loop in a thread, so hypothesis (which calls test functions synchronously)
    can drive the asynchronous services and client through ``run``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(work, self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def learn(addresses: dict[str, str], tokens: TokenSource, known: Known) -> None:
    """Walk the demo's case through channels that record its requests (the seeds), and learn
    a few real ids besides."""
    from cli.rpc import Connection
    from services.demo import walk_case

    channels = {
        name: grpc.aio.insecure_channel(address, interceptors=[SeedRecorder(known)])
        for name, address in addresses.items()
    }
    try:
        connection = Connection(channels, tokens)
        await walk_case(connection, lambda line: None)
        await learn_ids(connection.as_, known)
    finally:
        for opened in channels.values():
            await opened.close()


async def learn_ids(stubs_as: Callable[[Person], Any], known: Known) -> None:
    """A real client and case (and the agency's workers and programs), for the generators."""
    receptionist = _PEOPLE[0]
    coordinator = _PEOPLE[2]
    intake = stubs_as(receptionist).intake
    client = await intake.RegisterClient(
        intake_pb2.RegisterClientRequest(
            context=command(uuid.uuid4().hex),
            name=intake_pb2.PersonName(given_names="Fuzz", family_name=uuid.uuid4().hex[:8]),
            date_of_birth="1950-03-14",
        )
    )
    opened = await intake.OpenCase(
        intake_pb2.OpenCaseRequest(
            context=command(uuid.uuid4().hex),
            client_id=client.client_id,
            referral_source=intake_pb2.ReferralSource(kind="self"),
            presenting_needs=[intake_pb2.PresentingNeed(category="home_care")],
        )
    )
    known.add("client_id", client.client_id)
    known.add("case_id", opened.result.case_id)
    coordination = stubs_as(coordinator).coordination
    workers = await coordination.ListWorkers(
        coordination_pb2.ListWorkersRequest(context=query("coordination"))
    )
    for worker in workers.workers:
        known.add("worker_id", worker.worker_id)
    programs = await coordination.ListPrograms(
        coordination_pb2.ListProgramsRequest(context=query("coordination"))
    )
    for program in programs.programs:
        known.add("program_id", program.program_id)
