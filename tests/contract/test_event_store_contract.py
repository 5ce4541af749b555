"""The event store contract: every adapter (SQLite, PostgreSQL) must pass all of it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any
from uuid import UUID, uuid4

import pytest
from google.rpc import code_pb2, error_details_pb2
from pydantic import Field

from casetrail_platform.commands import CommandContext, IdempotencyKeyReused, LockHeld
from casetrail_platform.decide import execute
from casetrail_platform.errors import (
    CommandAlreadyRecorded,
    ConcurrencyError,
    DuplicateEventIdError,
    GuardLockHeld,
)
from casetrail_platform.grpc_platform.errors import REFUSALS, status_for
from casetrail_platform.limits import MAX_EVENT_BYTES
from casetrail_platform.locking.port import Locks
from casetrail_platform.store.port import (
    ANY_VERSION,
    NO_STREAM,
    EventStore,
    StreamVersion,
    drain,
)
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import CaseEvent, Role
from events.cloudevents import MAX_IDENTIFIER_CHARS, MAX_STREAM_CHARS
from events.envelope import Actor, NewEvent, RecordedEvent
from events.errors import InvalidEventError, UnknownEventTypeError, UnreadableStoredEventError
from events.registry import EventRegistry
from tests.contract.conftest import StoreOpener
from tests.support.sample_events import WORKER, NoteWritten, note
from tests.support.servers import postgres_dsn


class NotInCatalog(CaseEvent):
    event_type = "casetrail.test.not-in-catalog"
    case_id: str


async def test_append_assigns_sequences_positions_and_recorded_at(event_store: EventStore) -> None:
    before = datetime.now(UTC)
    recorded = await event_store.append("case-1", [note("1", "a b"), note("1", "c")], NO_STREAM)

    assert [r.sequence for r in recorded] == [1, 2]
    assert recorded[0].position < recorded[1].position
    assert all(r.recorded_at >= before - timedelta(seconds=1) for r in recorded)
    assert recorded[0].metadata.actor == WORKER
    assert await event_store.stream_version("case-1") == 2
    assert await event_store.read_stream("case-1") == recorded


async def test_empty_append_writes_nothing(event_store: EventStore) -> None:
    assert await event_store.append("case-1", [], NO_STREAM) == []
    assert await event_store.last_position() == 0


async def test_wrong_expected_version_is_a_concurrency_error_and_writes_nothing(
    event_store: EventStore,
) -> None:
    await event_store.append("case-1", [note("1")], NO_STREAM)
    position = await event_store.last_position()

    with pytest.raises(ConcurrencyError) as raised:
        await event_store.append("case-1", [note("1"), note("1")], NO_STREAM)

    assert (raised.value.expected_version, raised.value.actual_version) == (0, 1)
    assert await event_store.stream_version("case-1") == 1
    assert await event_store.last_position() == position


async def test_racing_writers_on_one_stream_exactly_one_wins(open_store: StoreOpener) -> None:
    stores = [await open_store() for _ in range(4)]
    await stores[0].append("case-1", [note("1")], NO_STREAM)

    outcomes = await asyncio.gather(
        *(store.append("case-1", [note("1", f"writer {i}")], 1) for i, store in enumerate(stores)),
        return_exceptions=True,
    )

    winners = [o for o in outcomes if isinstance(o, list)]
    assert len(winners) == 1
    assert all(isinstance(o, ConcurrencyError) for o in outcomes if not isinstance(o, list))
    assert await stores[0].stream_version("case-1") == 2


async def test_a_guarded_append_is_written_while_the_guarded_stream_is_at_its_version(
    event_store: EventStore,
) -> None:
    await event_store.append("client-1", [note("client-1")], NO_STREAM)

    recorded = await event_store.append(
        "case-1", [note("1")], NO_STREAM, guard=StreamVersion("client-1", 1)
    )
    unread = await event_store.append(
        "case-2", [note("2")], NO_STREAM, guard=StreamVersion("client-2", NO_STREAM)
    )

    assert await event_store.read_stream("case-1") == recorded
    assert await event_store.read_stream("case-2") == unread
    assert await event_store.stream_version("client-1") == 1


async def test_a_guarded_append_after_the_guarded_stream_moved_is_a_concurrency_error(
    event_store: EventStore,
) -> None:
    """A decision on case-1 that read client-1 at version 1: the client's erasure, say,
    appended since, refuses it as a wrong expected version would, naming the guarded stream."""
    await event_store.append("client-1", [note("client-1")], NO_STREAM)
    await event_store.append("case-1", [note("1")], NO_STREAM)
    await event_store.append("client-1", [note("client-1", "erased")], 1)
    position = await event_store.last_position()

    with pytest.raises(ConcurrencyError) as raised:
        await event_store.append(
            "case-1", [note("1"), note("1")], 1, guard=StreamVersion("client-1", 1)
        )
    with pytest.raises(ConcurrencyError):
        await event_store.append(
            "case-2", [note("2")], NO_STREAM, guard=StreamVersion("client-1", NO_STREAM)
        )

    error = raised.value
    assert (error.stream, error.expected_version, error.actual_version) == ("client-1", 1, 2)
    assert await event_store.stream_version("case-1") == 1
    assert await event_store.stream_version("case-2") == NO_STREAM
    assert await event_store.last_position() == position


async def test_a_guarded_batch_resent_after_the_guarded_stream_moved_returns_the_stored_ones(
    event_store: EventStore,
) -> None:
    batch = [note("1", "decided")]
    first = await event_store.append(
        "case-1", batch, NO_STREAM, guard=StreamVersion("client-1", NO_STREAM)
    )
    await event_store.append("client-1", [note("client-1", "erased")], NO_STREAM)

    again = await event_store.append(
        "case-1", batch, NO_STREAM, guard=StreamVersion("client-1", NO_STREAM)
    )

    assert again == first


async def test_a_guard_on_the_stream_appended_to_is_refused(event_store: EventStore) -> None:
    with pytest.raises(ValueError, match="expected_version"):
        await event_store.append(
            "case-1", [note("1")], NO_STREAM, guard=StreamVersion("case-1", NO_STREAM)
        )
    with pytest.raises(ValueError, match="version"):
        StreamVersion("client-1", ANY_VERSION)
    assert await event_store.last_position() == 0


async def test_a_guarded_append_racing_an_append_to_the_guarded_stream_never_follows_it(
    open_store: StoreOpener,
) -> None:
    """Decisions on twenty cases, each guarded on its client's stream as read (version 1),
    race the clients' erasures through other store objects (other connections, replicas):
    a decision is written only if it commits before its client's erasure, never after it."""
    stores = [await open_store() for _ in range(4)]
    clients = [f"client-{i}" for i in range(20)]
    for client in clients:
        await stores[0].append(client, [note(client)], NO_STREAM)

    async def decide(i: int) -> list[RecordedEvent] | BaseException:
        try:
            return await stores[i % 2].append(
                f"case-{i}", [note(str(i))], NO_STREAM, guard=StreamVersion(clients[i], 1)
            )
        except ConcurrencyError as error:
            return error

    async def erase(i: int) -> list[RecordedEvent]:
        return await stores[2 + i % 2].append(clients[i], [note(clients[i], "erased")], 1)

    # Five clients are erased before their decisions are sent: those decisions must lose.
    early = [await erase(i) for i in range(5)]
    outcomes = await asyncio.gather(
        *(decide(i) for i in range(20)), *(erase(i) for i in range(5, 20))
    )
    decisions, erasures = outcomes[:20], [*early, *outcomes[20:]]

    assert all(isinstance(decided, ConcurrencyError) for decided in decisions[:5])
    for decided, erased in zip(decisions, erasures, strict=True):
        assert isinstance(erased, list)
        if isinstance(decided, list):
            assert decided[0].position < erased[0].position
        else:
            assert isinstance(decided, ConcurrencyError)
            assert (decided.stream, decided.actual_version) == (erased[0].stream, 2)
    written = {r.stream for r in await stores[0].read_all(0, 1000) if r.stream.startswith("case-")}
    assert written == {
        f"case-{i}" for i, decided in enumerate(decisions) if isinstance(decided, list)
    }


async def test_any_version_appends_after_the_newest_event(event_store: EventStore) -> None:
    await event_store.append("access-1", [note("1", "a"), note("1", "b")], NO_STREAM)

    recorded = await event_store.append("access-1", [note("1", "c"), note("1", "d")], ANY_VERSION)

    assert [r.sequence for r in recorded] == [3, 4]
    assert [r.sequence for r in await event_store.read_stream("access-1")] == [1, 2, 3, 4]
    assert await event_store.read_stream("access-1", from_version=3) == recorded


async def test_any_version_appends_from_racing_writers_never_conflict(
    open_store: StoreOpener,
) -> None:
    """Sixty readers of one case each record an access at once, through four store objects
    (four processes, as far as the database can tell): every append succeeds, at once."""
    stores = [await open_store() for _ in range(4)]

    outcomes = await asyncio.gather(
        *(
            stores[i % len(stores)].append("access-1", [note("1", f"reader {i}")], ANY_VERSION)
            for i in range(60)
        ),
        return_exceptions=True,
    )

    assert [o for o in outcomes if not isinstance(o, list)] == []
    sequences = sorted(r.sequence for o in outcomes if isinstance(o, list) for r in o)
    assert sequences == list(range(1, 61))
    assert len(await stores[0].read_stream("access-1")) == 60


async def test_any_version_resent_is_a_no_op_that_returns_the_stored_ones(
    event_store: EventStore,
) -> None:
    batch = [note("1", "seen")]
    first = await event_store.append("access-1", batch, ANY_VERSION)
    await event_store.append("access-1", [note("1", "seen again")], ANY_VERSION)

    again = await event_store.append("access-1", batch, ANY_VERSION)

    assert again == first
    assert await event_store.stream_version("access-1") == 2


async def test_resending_the_same_events_is_a_no_op_that_returns_the_stored_ones(
    event_store: EventStore,
) -> None:
    batch = [note("1", "first"), note("1", "second")]
    first = await event_store.append("case-1", batch, NO_STREAM)
    position = await event_store.last_position()

    again = await event_store.append("case-1", batch, NO_STREAM)

    assert again == first
    assert await event_store.last_position() == position


async def test_reusing_an_event_id_for_other_content_is_refused_and_writes_nothing(
    event_store: EventStore,
) -> None:
    original = note("1", "original")
    await event_store.append("case-1", [original], NO_STREAM)
    impostor = note("2", "something else", event_id=original.event_id)

    with pytest.raises((DuplicateEventIdError, ConcurrencyError)):
        await event_store.append("case-2", [note("2"), impostor], NO_STREAM)

    assert await event_store.stream_version("case-2") == NO_STREAM
    assert len([e async for e in drain(event_store)]) == 1


async def test_an_event_type_outside_the_catalog_is_refused_before_writing(
    event_store: EventStore,
) -> None:
    stranger = NewEvent(event=NotInCatalog(case_id="1"), metadata=note("1").metadata)

    with pytest.raises(UnknownEventTypeError):
        await event_store.append("case-1", [note("1"), stranger], NO_STREAM)

    assert await event_store.last_position() == 0


@pytest.mark.parametrize(
    ("stream", "event", "field"),
    [
        ("case-1", note("1", "before\x00after"), "text"),
        ("case-1", note("1\x00"), "subject"),
        ("case\x001", note("1"), "stream"),
        (
            "case-1",
            replace(note("1"), metadata=replace(note("1").metadata, source="a\x00")),
            "source",
        ),
    ],
)
async def test_nul_anywhere_is_refused_naming_it_and_nothing_is_written(
    event_store: EventStore, stream: str, event: NewEvent, field: str
) -> None:
    """PostgreSQL text and jsonb cannot hold NUL: no store accepts it (README, "Limits")."""
    with pytest.raises(InvalidEventError) as raised:
        await event_store.append(stream, [note("1"), event], NO_STREAM)

    assert any(field in problem.field for problem in raised.value.problems)
    assert await event_store.last_position() == 0


def _with_metadata(**changes: Any) -> NewEvent:
    event = note("1")
    return replace(event, metadata=replace(event.metadata, **changes))


_TOO_LONG_STREAM = "case-" + uuid4().hex * 6  # 197 characters that do not compress


@pytest.mark.parametrize(
    ("stream", "event", "guard", "field"),
    [
        ("", note("1"), None, "stream"),
        ("case-\ud800", note("1"), None, "stream"),
        (_TOO_LONG_STREAM, note("1"), None, "stream"),
        ("case-1", _with_metadata(source=""), None, "metadata.source"),
        ("case-1", _with_metadata(source="casetrail/\udc80"), None, "metadata.source"),
        ("case-1", _with_metadata(actor=Actor("", Role.CASE_MANAGER)), None, "actor.user_id"),
        ("case-1", _with_metadata(actor=Actor("w\ud800", Role.CASE_MANAGER)), None, "actor"),
        ("case-1", note("1"), StreamVersion("", NO_STREAM), "guard.stream"),
        ("case-1", note("1"), StreamVersion("client-\x00", NO_STREAM), "guard.stream"),
        ("case-1", note("1"), StreamVersion("client-\ud800", NO_STREAM), "guard.stream"),
        ("case-1", _with_metadata(occurred_at=datetime(2026, 1, 1)), None, "occurred_at"),
        # Within Python's range, but not once in UTC: stored, no read could return it.
        (
            "case-1",
            _with_metadata(
                occurred_at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
            ),
            None,
            "occurred_at",
        ),
        (
            "case-1",
            _with_metadata(occurred_at=datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
            None,
            "occurred_at",
        ),
        (
            "case-1",
            _with_metadata(occurred_at=datetime(2200, 1, 1, tzinfo=UTC)),
            None,
            "occurred_at",
        ),
    ],
)
async def test_an_envelope_not_stored_and_read_back_alike_everywhere_is_refused_naming_it(
    event_store: EventStore,
    stream: str,
    event: NewEvent,
    guard: StreamVersion | None,
    field: str,
) -> None:
    """Both stores refuse the same envelopes, with the same error (README, "Limits"): an empty
    or unencodable text, a stream name no index takes, a moment no read can return."""
    with pytest.raises(InvalidEventError) as raised:
        await event_store.append(stream, [event], NO_STREAM, guard=guard)

    assert any(field in problem.field for problem in raised.value.problems)
    assert await event_store.last_position() == 0
    assert await event_store.read_all() == []


async def test_the_longest_stream_name_and_moments_at_the_bounds_are_stored(
    event_store: EventStore,
) -> None:
    longest = "case-" + "é" * (MAX_STREAM_CHARS - 5)
    earliest = note("1", occurred_at=datetime(1900, 1, 1, 5, tzinfo=timezone(timedelta(hours=5))))
    latest = note("1", occurred_at=datetime(2199, 12, 31, 23, 59, tzinfo=UTC))

    await event_store.append(longest, [earliest, latest], NO_STREAM)

    read = await event_store.read_stream(longest)
    assert [r.metadata.occurred_at for r in read] == [
        earliest.metadata.occurred_at,
        latest.metadata.occurred_at,
    ]


@pytest.mark.parametrize(
    ("expected_version", "guard", "argument"),
    [
        (2**40, None, "expected_version"),
        (-5, None, "expected_version"),
        (NO_STREAM, StreamVersion("client-1", 2**40), "guard.version"),
    ],
)
async def test_a_version_past_what_a_stream_can_reach_is_refused_as_an_argument(
    event_store: EventStore, expected_version: int, guard: StreamVersion | None, argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        await event_store.append("case-1", [note("1")], expected_version, guard=guard)

    assert await event_store.last_position() == 0


async def test_one_event_id_twice_in_a_batch_is_refused_as_an_argument(
    event_store: EventStore,
) -> None:
    twice = note("1")

    with pytest.raises(ValueError, match="event_id"):
        await event_store.append("case-1", [twice, twice], NO_STREAM)

    assert await event_store.last_position() == 0


async def test_a_request_that_cannot_be_stored_fails_alone_among_appends_at_once(
    event_store: EventStore,
) -> None:
    """PostgreSQL commits appends arriving together in one statement: one that could not be
    encoded there failed every request of its group."""
    await event_store.append("warm", [note("w")], NO_STREAM)

    outcomes = await asyncio.gather(
        event_store.append("case-1", [note("1")], NO_STREAM),
        event_store.append("case-\ud800", [note("2")], NO_STREAM),
        *(event_store.append(f"case-{n}", [note(str(n))], NO_STREAM) for n in range(3, 6)),
        return_exceptions=True,
    )

    assert isinstance(outcomes[1], InvalidEventError)
    assert [type(outcome) for outcome in outcomes if not isinstance(outcome, list)] == [
        type(outcomes[1])
    ]
    assert await event_store.last_position() == 5


@pytest.mark.parametrize(
    ("read", "argument"),
    [
        (lambda store: store.read_stream("case-\x001"), "stream"),
        (lambda store: store.stream_version("case-\x001"), "stream"),
        (lambda store: store.read_stream("case-1", from_version=2**70), "from_version"),
        (lambda store: store.read_all(0, -1), "limit"),
        (lambda store: store.read_all(2**70), "after_position"),
    ],
)
async def test_a_read_the_backends_would_answer_differently_is_refused_as_an_argument(
    event_store: EventStore, read: Callable[[EventStore], Awaitable[object]], argument: str
) -> None:
    await event_store.append("case-1", [note("1")], NO_STREAM)

    with pytest.raises(ValueError, match=argument):
        await read(event_store)


def _by(user_id: str) -> NewEvent:
    return _with_metadata(actor=Actor(user_id, Role.CLIENT))


@pytest.mark.parametrize(
    ("stream", "event", "field", "problem"),
    [
        ("case-1\n", note("1"), "stream", "control characters"),
        ("s" * (MAX_STREAM_CHARS + 1), note("1"), "stream", f"at most {MAX_STREAM_CHARS}"),
        ("case-1", _by("kim\r\nX-Injected: 1"), "metadata.actor.user_id", "control characters"),
        ("case-1", _by("k" * (MAX_IDENTIFIER_CHARS + 1)), "metadata.actor.user_id", "at most"),
    ],
)
async def test_an_envelope_text_no_subscriber_would_decode_is_refused(
    event_store: EventStore, stream: str, event: NewEvent, field: str, problem: str
) -> None:
    """Every bus decodes an event by the envelope schema's rules (``events.cloudevents``): one
    stored outside them would be dead-lettered by every subscriber, on both backends."""
    with pytest.raises(InvalidEventError) as raised:
        await event_store.append(stream, [event], NO_STREAM)

    assert [(p.field, problem in p.problem) for p in raised.value.problems] == [(field, True)]
    assert await event_store.last_position() == 0


async def test_envelope_texts_at_their_bounds_are_stored(event_store: EventStore) -> None:
    longest = "s" * MAX_STREAM_CHARS
    await event_store.append(longest, [_by("k" * MAX_IDENTIFIER_CHARS)], NO_STREAM)

    assert len(await event_store.read_stream(longest)) == 1


async def test_a_literal_backslash_u0000_in_text_is_stored(event_store: EventStore) -> None:
    recorded = await event_store.append("case-1", [note("1", "C:\\u0000 path")], NO_STREAM)

    assert (await event_store.read_stream("case-1"))[0].event == recorded[0].event


async def test_an_event_over_the_size_bound_is_refused_and_nothing_is_written(
    event_store: EventStore,
) -> None:
    """Kafka refuses records over 1 MiB for good, so the store never takes one near that."""
    fits = note("1", "x" * (MAX_EVENT_BYTES - 2000))  # the headers published beside it count
    too_big = note("1", "é" * (MAX_EVENT_BYTES // 2))

    with pytest.raises(InvalidEventError) as raised:
        await event_store.append("case-1", [fits, too_big], NO_STREAM)

    assert [problem.field for problem in raised.value.problems] == ["request"]
    assert await event_store.last_position() == 0
    assert len(await event_store.append("case-1", [fits], NO_STREAM)) == 1


async def test_read_stream_between_versions(event_store: EventStore) -> None:
    await event_store.append("case-1", [note("1", str(i)) for i in range(5)], NO_STREAM)

    middle = await event_store.read_stream("case-1", from_version=2, to_version=4)

    assert [r.sequence for r in middle] == [2, 3, 4]
    assert await event_store.read_stream("unknown") == []


async def test_read_stream_as_of_occurred_and_recorded_time(event_store: EventStore) -> None:
    visit = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    # Written up a day late: it occurred before the phone call recorded before it.
    await event_store.append("case-1", [note("1", "phone call", occurred_at=visit)], NO_STREAM)
    first_recorded = (await event_store.read_stream("case-1"))[0].recorded_at
    await asyncio.sleep(0.01)
    late = note("1", "home visit", occurred_at=visit - timedelta(days=1))
    await event_store.append("case-1", [late], 1)

    known_then = await event_store.read_stream("case-1", recorded_until=first_recorded)
    happened_by = await event_store.read_stream("case-1", occurred_until=visit - timedelta(hours=1))

    assert [r.event for r in known_then] == [note("1", "phone call").event]
    assert [r.event for r in happened_by] == [late.event]


async def test_times_keep_microseconds_and_zone(event_store: EventStore) -> None:
    moment = datetime(2026, 5, 17, 8, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    [recorded] = await event_store.append("case-1", [note("1", occurred_at=moment)], NO_STREAM)

    [read] = await event_store.read_stream("case-1")

    assert read.metadata.occurred_at == moment
    assert read.metadata.occurred_at.tzinfo is not None
    assert read == recorded


async def test_read_all_is_ordered_by_position_across_streams(event_store: EventStore) -> None:
    await event_store.append("case-1", [note("1", "a")], NO_STREAM)
    await event_store.append("case-2", [note("2", "b"), note("2", "c")], NO_STREAM)
    await event_store.append("case-1", [note("1", "d")], 1)

    everything = await event_store.read_all()
    positions = [r.position for r in everything]

    assert [r.event.text for r in everything if isinstance(r.event, NoteWritten)] == list("abcd")
    assert positions == sorted(positions)
    assert await event_store.last_position() == positions[-1]
    assert await event_store.read_all(positions[1], limit=1) == [everything[2]]


async def test_a_concurrent_reader_never_skips_an_event(open_store: StoreOpener) -> None:
    writers = [await open_store() for _ in range(4)]
    reader = await open_store()
    per_writer = 40
    done = asyncio.Event()
    seen: list[int] = []
    seen_ids: set[str] = set()

    async def write(store: EventStore, number: int) -> None:
        for i in range(per_writer):
            await store.append(f"case-{number}-{i}", [note(str(number))], NO_STREAM)

    async def read() -> None:
        position = 0
        while True:
            finished = done.is_set()
            batch = await reader.read_all(position, 50)
            for recorded in batch:
                seen.append(recorded.position)
                seen_ids.add(str(recorded.event_id))
                position = recorded.position
            if finished and not batch:
                return
            await asyncio.sleep(0)

    reading = asyncio.create_task(read())
    await asyncio.gather(*(write(store, n) for n, store in enumerate(writers)))
    done.set()
    await reading

    assert len(seen) == len(seen_ids) == 4 * per_writer
    assert seen == sorted(seen)


async def test_follow_yields_existing_then_new_events(event_store: EventStore) -> None:
    await event_store.append("case-1", [note("1", "before")], NO_STREAM)
    received: list[str] = []

    async def follow() -> None:
        async for recorded in event_store.follow(0, idle_timeout=0.05):
            assert isinstance(recorded.event, NoteWritten)
            received.append(recorded.event.text)
            if len(received) == 2:
                return

    following = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await event_store.append("case-1", [note("1", "after")], 1)
    await asyncio.wait_for(following, 10)

    assert received == ["before", "after"]


async def test_wait_for_append_returns_when_something_was_appended(
    event_store: EventStore,
) -> None:
    waiting = asyncio.create_task(event_store.wait_for_append(0, max_wait=30))
    await asyncio.sleep(0.05)
    await event_store.append("case-1", [note("1")], NO_STREAM)

    await asyncio.wait_for(waiting, 10)


async def test_events_stored_under_an_older_schema_are_upcast_on_read(
    open_store: StoreOpener,
) -> None:
    old_writer = await open_store(EventRegistry([NoteWrittenV1]))
    old_note = NewEvent(
        event=NoteWrittenV1(case_id="1", text="three short words"), metadata=note("1").metadata
    )
    await old_writer.append("case-1", [old_note], NO_STREAM)
    current_reader = await open_store()

    [read] = await current_reader.read_stream("case-1")

    assert read.event == NoteWritten(case_id="1", text="three short words", words=3)


class NoteWrittenV1(CaseEvent):
    """How ``NoteWritten`` looked before it counted words."""

    event_type = NoteWritten.event_type
    schema_version = 1
    case_id: str
    text: str


def caused_by(new: NewEvent, command_id: UUID) -> NewEvent:
    return replace(new, metadata=replace(new.metadata, causation_id=command_id))


async def test_read_by_causation_finds_what_one_command_recorded_in_order(
    event_store: EventStore,
) -> None:
    command, other = uuid4(), uuid4()
    first = await event_store.append(
        "case-1", [caused_by(note("1", "a"), command), caused_by(note("1", "b"), command)], 0
    )
    await event_store.append("case-2", [caused_by(note("2"), other)], NO_STREAM)

    assert await event_store.read_by_causation(command) == first
    assert await event_store.read_by_causation(uuid4()) == []


async def test_read_for_command_gives_the_stream_to_a_new_command_and_a_retry_its_events(
    event_store: EventStore,
) -> None:
    command = uuid4()
    history = await event_store.append("case-1", [note("1", "a"), note("1", "b")], NO_STREAM)

    assert await event_store.read_for_command(command, "case-1") == ([], history)
    assert await event_store.read_for_command(command, "case-9") == ([], [])

    recorded = await event_store.append("case-1", [caused_by(note("1", "c"), command)], 2)

    earlier, _ = await event_store.read_for_command(command, "case-1")
    assert earlier == recorded


async def test_a_command_is_recorded_once_by_racing_replicas_on_two_streams(
    open_store: StoreOpener,
) -> None:
    """Two replicas (two store objects, two connections) given two different requests under
    one key at the same moment, each for another stream: one is recorded, the other gets
    CommandAlreadyRecorded and writes nothing. Raced a few times so the order varies."""
    replicas = [await open_store(), await open_store()]
    for round_ in range(10):
        command = uuid4()
        batches = [
            (f"case-{round_}-a", [caused_by(note("a", "first request"), command)]),
            (f"case-{round_}-b", [caused_by(note("b", "other request"), command)]),
        ]
        outcomes = await asyncio.gather(
            *(
                replica.append(stream, batch, NO_STREAM, command_id=command)
                for replica, (stream, batch) in zip(replicas, batches, strict=True)
            ),
            return_exceptions=True,
        )

        winners = [o for o in outcomes if isinstance(o, list)]
        assert len(winners) == 1, outcomes
        assert [type(o) for o in outcomes if not isinstance(o, list)] == [CommandAlreadyRecorded]
        assert await replicas[0].read_by_causation(command) == winners[0]
        versions = [await replicas[1].stream_version(stream) for stream, _ in batches]
        assert sorted(versions) == [0, 1]


async def test_a_command_resent_with_its_events_returns_them_on_any_replica(
    open_store: StoreOpener,
) -> None:
    first, second = await open_store(), await open_store()
    command = uuid4()
    batch = [caused_by(note("1", "a"), command), caused_by(note("1", "b"), command)]
    recorded = await first.append("case-1", batch, NO_STREAM, command_id=command)

    assert await second.append("case-1", batch, NO_STREAM, command_id=command) == recorded
    assert await first.append("case-1", batch, 2, command_id=command) == recorded
    with pytest.raises(CommandAlreadyRecorded):
        await second.append(
            "case-2", [caused_by(note("2"), command)], NO_STREAM, command_id=command
        )
    assert await first.stream_version("case-2") == 0
    assert await first.last_position() == recorded[-1].position


async def test_appends_that_are_not_commands_share_a_causation_id_freely(
    event_store: EventStore,
) -> None:
    """Follow-ups of one event on several streams carry its id as their causation id."""
    cause = uuid4()
    await event_store.append("budget-1", [caused_by(note("1"), cause)], NO_STREAM)
    await event_store.append("budget-2", [caused_by(note("2"), cause)], NO_STREAM)

    assert len(await event_store.read_by_causation(cause)) == 2


async def test_two_requests_under_one_key_on_two_replicas_record_one(
    open_store: StoreOpener,
) -> None:
    """Through decide.execute, as services run commands: the loser is answered as a later
    retry would be, IDEMPOTENCY_KEY_REUSED for another request and the first result for the
    same one, and nothing of its own is written."""
    replicas = [await open_store(), await open_store()]
    actor = Actor("maria.lopez", Role.SOCIAL_WORKER)

    async def run(replica: EventStore, key: str, stream: str, fingerprint: str) -> object:
        context = CommandContext(actor, key, request_fingerprint=fingerprint)
        try:
            return await execute(
                replica,
                "svc",
                context,
                stream,
                lambda _: [NoteWritten(case_id=stream, text=fingerprint[:3], words=1)],
            )
        except IdempotencyKeyReused as refused:
            return refused

    for round_ in range(5):
        key = f"k-{round_}"
        different = await asyncio.gather(
            run(replicas[0], key, f"case-{round_}-a", "a" * 64),
            run(replicas[1], key, f"case-{round_}-b", "b" * 64),
        )
        assert sum(isinstance(r, IdempotencyKeyReused) for r in different) == 1
        streams = [f"case-{round_}-a", f"case-{round_}-b"]
        assert sum([await replicas[0].stream_version(s) for s in streams]) == 1

        same_key = f"same-{round_}"
        same = await asyncio.gather(
            run(replicas[0], same_key, f"case-{round_}-c", "c" * 64),
            run(replicas[1], same_key, f"case-{round_}-c", "c" * 64),
        )
        assert same[0] == same[1]
        assert await replicas[1].stream_version(f"case-{round_}-c") == 1


class _StricterNote(NoteWritten):
    """NoteWritten as a release with a stricter rule reads it (a note of at least 100 words)."""

    event_type = NoteWritten.event_type
    words: Annotated[int, Field(ge=100)]


async def test_a_stored_event_no_reader_accepts_is_the_servers_fault(
    open_store: StoreOpener,
) -> None:
    """Both backends alike: reading it fails UnreadableStoredEventError (answered INTERNAL),
    not InvalidEventError (a refusal of the caller's input, INVALID_ARGUMENT)."""
    await (await open_store()).append("case-1", [note("1", "short")], NO_STREAM)
    stricter = EventRegistry([_StricterNote])
    [stored] = await (await open_store(stricter)).read_stream("case-1")
    with pytest.raises(UnreadableStoredEventError) as failed:
        _ = stored.event
    assert not isinstance(failed.value, InvalidEventError)
    assert [problem.field for problem in failed.value.problems] == ["words"]


async def test_a_stored_event_of_a_type_no_longer_in_the_catalog_is_the_servers_fault(
    open_store: StoreOpener,
) -> None:
    """Its version, data and stored form (what publishing, exporting and audit's answers read)
    fail as its event does: UnreadableStoredEventError, not UnknownEventTypeError (a refusal,
    INVALID_ARGUMENT "type: not in the event catalog")."""
    await (await open_store()).append("case-1", [note("1", "short")], NO_STREAM)
    [stored] = await (await open_store(EventRegistry([NotInCatalog]))).read_stream("case-1")
    reads: dict[str, Callable[[RecordedEvent], object]] = {
        "event": lambda r: r.event,
        "schema_version": lambda r: r.schema_version,
        "data": lambda r: r.data,
        "stored_form": lambda r: r.stored_form,
    }
    for name, read in reads.items():
        with pytest.raises(UnreadableStoredEventError) as failed:
            read(stored)
        # Not a refusal: the gRPC edge answers it INTERNAL with a reference to the log.
        assert not isinstance(failed.value, REFUSALS), name
        assert [problem.field for problem in failed.value.problems] == ["type"], name


def host_locks(store: EventStore) -> Locks:
    """The locks a host of ``store`` decides with (``infrastructure.open_locks``)."""
    if isinstance(store, SqliteEventStore):
        return store.locks
    from casetrail_platform.locking.postgres import PostgresLocks

    return PostgresLocks(postgres_dsn())


async def test_an_append_whose_guard_lock_is_held_waits_for_the_holder_then_sees_its_append(
    open_store: StoreOpener,
) -> None:
    """An opening of a case (guarded on its client's stream, holding the client's lock shared)
    while the client's erasure holds that lock from its look at the client's cases to its
    append, through another store object (another replica): the opening is not written while
    the erasure holds the lock, sees the erasure once it is released and is refused, and the
    appends of others are not held up meanwhile."""
    opening, erasing = await open_store(), await open_store()
    locks = host_locks(opening)
    name = f"intake.client.cases:{uuid4()}"
    await erasing.append("client-1", [note("client-1")], NO_STREAM)

    async def open_case() -> ConcurrencyError:
        # Refused while the lock is held (PostgreSQL at once, SQLite after GUARD_LOCK_WAIT),
        # it tries again, as decide.execute would, until refused for good.
        while True:
            try:
                await opening.append(
                    "case-1", [note("1")], NO_STREAM, guard=StreamVersion("client-1", 1, name)
                )
            except GuardLockHeld:
                await asyncio.sleep(0.01)
            except ConcurrencyError as error:
                return error
            else:
                raise AssertionError("opened while the client's erasure held their lock")

    try:
        async with locks.holding([name]):
            racing = asyncio.create_task(open_case())
            await asyncio.sleep(0.3)
            other = await opening.append("case-2", [note("2")], NO_STREAM)
            assert not racing.done()
            assert await opening.stream_version("case-1") == NO_STREAM
            await erasing.append("client-1", [note("client-1", "erased")], 1)
        refused = await asyncio.wait_for(racing, 10)
    finally:
        if locks is not getattr(opening, "locks", None):
            await locks.close()

    assert (refused.stream, refused.expected_version, refused.actual_version) == ("client-1", 1, 2)
    assert await opening.stream_version("case-1") == NO_STREAM
    assert await opening.read_stream("case-2") == other
    # Released with the refused append: the next one, on the version read, is written.
    written = await opening.append(
        "case-1", [note("1")], NO_STREAM, guard=StreamVersion("client-1", 2, name)
    )
    assert await opening.read_stream("case-1") == written


async def test_a_command_kept_out_by_its_guard_lock_for_its_whole_budget_is_told_which_lock(
    open_store: StoreOpener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An opening retried while the client's erasure holds the lock (a stuck erasure) is
    answered, once its retry budget is spent, ABORTED LOCK_HELD naming the lock, the same on
    both backends (SQLite waits at most GUARD_LOCK_WAIT per try), with nothing written; the
    appends sent with it, in its group on PostgreSQL, are written."""
    monkeypatch.setattr("casetrail_platform.decide.RETRY_BUDGET", 0.3)
    opening, erasing = await open_store(), await open_store()
    locks = host_locks(opening)
    name = f"intake.client.cases:{uuid4()}"
    await erasing.append("client-1", [note("client-1")], NO_STREAM)
    context = CommandContext(WORKER, "open-1", request_fingerprint="f" * 64)

    async def open_case() -> list[RecordedEvent]:
        return await execute(
            opening,
            "svc",
            context,
            "case-1",
            lambda _: [NoteWritten(case_id="case-1", text="opened", words=1)],
            guard=lambda: _as_read(opening, "client-1", name),
        )

    try:
        async with locks.holding([name]):
            outcomes = await asyncio.wait_for(
                asyncio.gather(
                    open_case(),
                    *(opening.append(f"case-{n}", [note(str(n))], NO_STREAM) for n in (2, 3)),
                    return_exceptions=True,
                ),
                10,
            )
    finally:
        if locks is not getattr(opening, "locks", None):
            await locks.close()

    refused, *others = outcomes
    assert isinstance(refused, LockHeld), refused
    assert (refused.stream, refused.lock) == ("case-1", name)
    status = status_for(refused)
    assert status.code == code_pb2.ABORTED
    assert name in status.message
    [info] = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    unpacked = error_details_pb2.ErrorInfo()
    info.Unpack(unpacked)
    assert (unpacked.reason, unpacked.metadata["lock"]) == ("LOCK_HELD", name)
    assert await opening.stream_version("case-1") == NO_STREAM
    assert await opening.read_by_causation(context.command_id("svc")) == []
    assert [len(o) for o in others if isinstance(o, list)] == [1, 1]
    # Once the lock is free, the same request is written.
    assert [r.stream for r in await open_case()] == ["case-1"]


async def _as_read(store: EventStore, stream: str, lock: str) -> StreamVersion:
    read = StreamVersion.as_read(stream, await store.read_stream(stream))
    return StreamVersion(read.stream, read.version, lock)
