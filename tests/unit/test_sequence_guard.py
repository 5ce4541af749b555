"""SequenceGuard: a case's events in sequence order, early ones withheld (bounded, reported),
streams spanning cases untouched, and nothing committed past a withheld record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

import pytest

from casetrail_platform.bus.delivery import Deliverer
from casetrail_platform.bus.inprocess import InProcessBus
from casetrail_platform.bus.message import BusMessage
from casetrail_platform.bus.ordering import (
    SequenceGuard,
    travels_under_one_key,
    untracked_stream_prefixes,
)
from casetrail_platform.bus.retry import RetryPolicy
from casetrail_platform.policy.guard import access_stream
from events.catalog.access import ConsentGranted, RecordAccessDenied, RecordAccessed
from events.cloudevents import to_kafka_binary
from events.dead_letters import REPLAYED, DeadLetterReason
from events.envelope import RecordedEvent
from events.ordering_contract import STREAM_KIND_EVENT_TYPES
from events.topics import DEFAULT_CASE_EVENTS_TOPIC
from tests.contract.bus_conftest import Recorder, eventually, recorded
from tests.support.sample_events import sample_registry


def message(
    stream: str, sequence: int, offset: int, subject: str = "", partition: int = 0
) -> BusMessage:
    subject = subject or stream.partition("-")[2]
    return BusMessage(
        topic="t",
        partition=partition,
        offset=offset,
        key=subject.encode(),
        value=b"{}",
        headers=(
            ("ce_source", b"casetrail/planning"),
            ("ce_stream", stream.encode()),
            ("ce_sequence", str(sequence).zfill(19).encode()),
            ("ce_subject", subject.encode()),
        ),
    )


def sequences(messages: list[BusMessage]) -> list[int]:
    return [int(m.header("ce_sequence") or b"0") for m in messages]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_key_streams_are_a_cases_own() -> None:
    assert travels_under_one_key("case-42", "42")
    assert travels_under_one_key("client-7", "7")
    assert travels_under_one_key("access-42", "42")
    assert not travels_under_one_key("schedule-7", "42")
    assert not travels_under_one_key("budget-home-care", "42")
    assert not travels_under_one_key("schedule-42", "42")  # spans cases whatever its name
    assert not travels_under_one_key("case-42", "43")


def test_early_events_wait_for_the_missing_one_and_repeats_pass() -> None:
    guard = SequenceGuard()
    assert sequences(guard.sort([message("case-1", 1, 0), message("case-1", 2, 1)])) == [1, 2]
    assert guard.sort([message("case-1", 5, 2), message("case-1", 6, 3)]) == []
    assert guard.commit_limit(0) == 2
    assert sequences(guard.sort([message("case-1", 3, 4), message("case-1", 4, 5)])) == [
        3,
        4,
        5,
        6,
    ]
    assert guard.commit_limit(0) is None
    assert sequences(guard.sort([message("case-1", 5, 6)])) == [5]  # a repeat: as it comes
    assert guard.status().held == 0


def test_streams_of_types_a_consumer_skips_pass_untracked() -> None:
    guard = SequenceGuard()
    untracked = untracked_stream_prefixes(frozenset({ConsentGranted.event_type}))
    assert untracked == (b"access-",)
    accesses = [message("access-1", 1, 0), message("access-1", 5, 1), message("access-1", 3, 2)]
    assert guard.sort(accesses, untracked) == accesses
    assert guard.status().held == 0
    assert guard.commit_limit(0) is None
    # The case's own stream is still kept in order.
    assert guard.sort([message("case-1", 1, 3), message("case-1", 3, 4)], untracked) == [
        message("case-1", 1, 3)
    ]


def test_a_consumer_wanting_access_records_keeps_their_streams_in_order() -> None:
    assert untracked_stream_prefixes(None) == ()
    assert untracked_stream_prefixes(frozenset({RecordAccessDenied.event_type})) == ()
    guard = SequenceGuard()
    untracked = untracked_stream_prefixes(frozenset({RecordAccessed.event_type}))
    assert guard.sort([message("access-1", 1, 0), message("access-1", 3, 1)], untracked) == [
        message("access-1", 1, 0)
    ]


def test_access_streams_hold_only_access_records() -> None:
    # What the policy guard appends to a case's access stream (``AccessControl._append``).
    assert access_stream("42").startswith("access-")
    assert STREAM_KIND_EVENT_TYPES["access"] == {
        RecordAccessed.event_type,
        RecordAccessDenied.event_type,
    }


def test_streams_spanning_cases_are_not_held() -> None:
    guard = SequenceGuard()
    spanning = [message("schedule-7", n, n, subject=f"case-{n}") for n in (1, 3, 2)]
    assert guard.sort(spanning) == spanning


def test_a_gap_that_does_not_fill_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    guard = SequenceGuard("g", report_after=30, clock=clock)
    guard.sort([message("case-1", 1, 0), message("case-1", 3, 1)])
    assert guard.status().overdue_gaps == 0
    clock.now = 31
    with caplog.at_level(logging.ERROR):
        status = guard.status()
        guard.check()
    assert (status.open_gaps, status.overdue_gaps, status.gaps_reported) == (1, 1, 1)
    assert not status.healthy
    assert len([r for r in caplog.records if "misses event 2" in r.message]) == 1
    guard.sort([message("case-1", 2, 2)])
    assert guard.status().healthy


def test_past_the_bound_the_oldest_gap_is_given_up_in_sequence_order() -> None:
    guard = SequenceGuard(max_held=2)
    guard.sort([message("case-1", 1, 0), message("case-2", 1, 1, partition=1)])
    assert guard.sort([message("case-1", 4, 2), message("case-1", 3, 3)]) == []
    released = guard.sort([message("case-2", 3, 4, partition=1)])
    assert sequences(released) == [3, 4]  # case-1's, given up
    assert guard.status().gaps_given_up == 1
    assert guard.status().held == 1


def test_forgetting_a_partition_drops_what_it_held() -> None:
    guard = SequenceGuard()
    guard.sort([message("case-1", 1, 0), message("case-1", 3, 1)])
    guard.forget([0])
    assert guard.status().held == 0
    assert guard.commit_limit(0) is None
    # Its streams start afresh: the next record read is taken as it comes.
    assert sequences(guard.sort([message("case-1", 3, 1)])) == [3]


def test_nothing_is_committed_past_a_withheld_or_unfinished_record() -> None:
    async def store(letter: object) -> bool:
        return True

    guard = SequenceGuard()
    deliverer = Deliverer(
        "g",
        _Handler(),
        sample_registry(),
        RetryPolicy(),
        store,
        ordering=guard,
        decode=lambda _: recorded("c1", 1, 1),  # every record an event's: early ones wait
    )
    handed = deliverer.prepare(
        [message("case-1", 1, 10), message("case-1", 3, 11), message("case-2", 1, 12)]
    )
    assert sequences(list(handed)) == [1, 1]
    assert deliverer.commit_offsets(handed, len(handed)) == {0: 11}
    released = deliverer.prepare([message("case-1", 2, 13)])
    assert sequences(list(released)) == [2, 3]
    assert deliverer.commit_offsets(released, 1) == {0: 11}  # 3 handed, not done
    assert deliverer.commit_offsets(released, 2) == {0: 14}


class _Handler:
    async def handle_batch(self, records: object) -> None:
        return None


def test_it_remembers_a_bounded_number_of_streams_the_quiet_ones_go_first() -> None:
    guard = SequenceGuard(max_streams=2)
    guard.sort([message("case-1", 1, 0), message("case-2", 1, 1), message("case-1", 2, 2)])
    guard.sort([message("case-3", 1, 3)])  # case-2 is the quietest: forgotten
    assert sequences(guard.sort([message("case-2", 5, 4)])) == [5]  # starts afresh
    assert guard.sort([message("case-3", 3, 5)]) == []  # still known: a gap


async def test_the_embedded_bus_commits_nothing_past_a_poll_that_was_all_withheld() -> None:
    """A poll whose only record of a partition is withheld hands nothing over for it: the
    group's committed offset stays before that record, so the next member (after a restart or
    a rebalance, whose guard knows nothing) reads it again instead of never seeing it."""
    registry = sample_registry()
    first, third = recorded("c1", 1, 1), recorded("c1", 3, 3)
    bus = InProcessBus()
    publisher = bus.publisher()
    seen: list[int] = []

    class Handler:
        async def handle_batch(self, records: Sequence[RecordedEvent]) -> None:
            seen.extend(record.sequence for record in records)

    stop = asyncio.Event()
    member = asyncio.create_task(
        bus.subscriber(registry).run("g", Handler(), stop, ordering=SequenceGuard("g"))
    )
    await publisher.publish([first])
    await asyncio.sleep(0.1)  # handled and committed: the next poll holds the third alone
    await publisher.publish([third])  # before the second: withheld
    await asyncio.sleep(0.1)
    stop.set()
    await member
    assert seen == [1]
    (partition,) = {m.partition for m in bus.messages(DEFAULT_CASE_EVENTS_TOPIC)}
    assert bus.committed(DEFAULT_CASE_EVENTS_TOPIC, "g")[partition] == 1  # the third's offset


def test_a_replayed_dead_letter_passes_as_a_repeat_and_does_not_start_its_stream() -> None:
    # Read first by a guard started afresh, a replayed event 2 (after 3 on the log) was taken
    # as where the stream starts, and event 4 was withheld waiting for 3, applied long ago.
    guard = SequenceGuard()
    replayed = message("case-c1", 2, 10)
    replayed = replace(replayed, headers=(*replayed.headers, (REPLAYED, b"1")))
    ordered = guard.sort([replayed, message("case-c1", 4, 11)])
    assert sequences(ordered) == [2, 4]
    assert guard.status().held == 0


def with_sequence(message: BusMessage, raw: bytes) -> BusMessage:
    headers = tuple((n, raw if n == "ce_sequence" else v) for n, v in message.headers)
    return replace(message, headers=headers)


@pytest.mark.parametrize("digits", [20, 4_301, 5_000])
def test_a_sequence_no_event_has_passes_untracked(digits: int) -> None:
    # More than 4,300 digits made int() raise ValueError: the consumer's task died, and the
    # rest of its partition was never handled. Over 19 digits no event has such a sequence.
    guard = SequenceGuard()
    odd = with_sequence(message("case-1", 1, 0), b"1" * digits)
    ordered = guard.sort([odd, message("case-1", 1, 1), message("case-1", 2, 2)])
    assert ordered[0] is odd
    assert sequences(ordered[1:]) == [1, 2]  # the stream starts at its first real sequence
    assert guard.sort([message("case-1", 4, 3)]) == []  # so a gap after it is still seen


def test_ordering_headers_it_cannot_read_pass_untracked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unreadable(message: BusMessage) -> None:
        raise ValueError("a header no event has")

    monkeypatch.setattr("casetrail_platform.bus.ordering._one_key_stream", unreadable)
    guard = SequenceGuard("g")
    messages = [message("case-1", 1, 0), message("case-1", 3, 1)]
    assert guard.sort(messages) == messages
    assert "ordering headers of t/0@0 unreadable (ValueError); passed untracked" in caplog.text


async def test_a_sequence_no_event_has_is_dead_lettered_and_its_partition_flows_on() -> None:
    registry = sample_registry()
    first, odd, second = recorded("c1", 1, 1), recorded("c2", 1, 2), recorded("c1", 2, 3)
    bus = InProcessBus(partitions=1)
    await bus.publisher("t").publish([first])
    key, headers, value = to_kafka_binary(odd)
    bus.append(
        "t", key, value, [(n, b"1" * 5_000 if n == "ce_sequence" else v) for n, v in headers]
    )
    await bus.publisher("t").publish([second])
    recorder = Recorder()
    stop = asyncio.Event()
    member = asyncio.create_task(
        bus.subscriber(registry, "t").run("g", recorder, stop, ordering=SequenceGuard("g"))
    )
    try:
        await eventually(lambda: recorder.has_all([first, second]) or member.done(), "both")
    finally:
        stop.set()
        await member  # raised ValueError before: the member died at the odd record
    assert [e.sequence for e in recorder.deliveries] == [1, 2]
    [letter] = bus.dead_letters("g")
    assert letter.message.offset == 1
    assert letter.reason is DeadLetterReason.UNDECODABLE
    assert bus.committed("t", "g") == {0: 3}


def test_without_a_decoder_an_early_record_that_is_no_json_object_is_handed_over() -> None:
    guard = SequenceGuard("g")
    assert sequences(guard.sort([with_value(message("case-1", 1, 0), b"{}")])) == [1]
    assert sequences(guard.sort([with_value(message("case-1", 3, 1), b"[]")])) == [3]


@pytest.mark.parametrize(
    "value",
    [b"\x00junk", b"{}", b'{"a": 1}', b"[" * 100_000],
    ids=["no JSON", "empty object", "an object of no event", "nested beyond the parser"],
)
async def test_an_early_record_the_decoder_refuses_is_dead_lettered_not_withheld(
    value: bytes,
) -> None:
    """A record with a real case's headers (its sequence one past the next) and a value that
    is no event's data was withheld as early: nothing of its partition was committed past it
    again, and no case of it was caught up, until that case wrote again. A JSON object was
    withheld even once JSON that was no object was not; and one nested deeper than the JSON
    parser goes raised RecursionError out of the guard, which ended the subscriber for good."""
    registry = sample_registry()
    first, forged = recorded("c1", 1, 1), recorded("c1", 3, 2)
    others = [recorded("c2", 1, 3)]
    bus = InProcessBus(partitions=1)
    await bus.publisher("t").publish([first])
    key, headers, _ = to_kafka_binary(forged)
    bus.append("t", key, value, headers)
    await bus.publisher("t").publish(others)
    assert sequences(SequenceGuard("g").sort([with_value(message("case-1", 3, 1), value)])) == [3]
    recorder = Recorder()
    stop = asyncio.Event()
    member = asyncio.create_task(
        bus.subscriber(registry, "t").run("g", recorder, stop, ordering=SequenceGuard("g"))
    )
    try:
        await eventually(lambda: bus.committed("t", "g") == {0: 3} or member.done(), "all")
    finally:
        stop.set()
        await member
    assert [e.event_id for e in recorder.deliveries] == [e.event_id for e in [first, *others]]
    [letter] = bus.dead_letters("g")
    assert letter.message.offset == 1


def with_value(message: BusMessage, value: bytes) -> BusMessage:
    return replace(message, value=value)
