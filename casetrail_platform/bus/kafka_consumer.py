"""One member of a Kafka consumer group: poll, handle, dead-letter, commit.

A poll is one batch for a ``BatchHandler``, every partition's records in offset order (a
per-record handler gets it one record at a time). Offsets are committed once per poll, for
every partition, and only up to records whose handler returned (or that were dead-lettered).
A rebalance waits for the poll in hand to be finished and committed (the revocation callback
takes the same lock), so a partition is never handled by two members at once.

A poll whose records the group only passes by (types it does not want: for most groups, the
access record every answered read appends) is committed later: with the next poll that hands
something over, once ``PASSED_COMMIT_EVERY`` has gone by, before its partitions are revoked,
and when the member stops. Its offsets are told at once (``AppliedOffsets``: a barrier in this
process does not wait for the commit); a commit of them that never happens (a crash) only means
they are passed by again.

A record aiokafka cannot parse (a header name that is not UTF-8, corrupt bytes) fails the whole
poll; the member then reads its partitions itself for one fetch (``kafka_raw_records``),
handles the records around the bad one, dead-letters that one as undecodable and seeks past.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from casetrail_platform.bus.deadletter import DeadLetter
from casetrail_platform.bus.delivery import Deliverer, decoder_for
from casetrail_platform.bus.fetch_pacing import FetchPacing
from casetrail_platform.bus.kafka_clients import close_quietly, describe, new_producer
from casetrail_platform.bus.kafka_raw_records import RECORD_PARSE_ERRORS, read_leniently
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.message import BusMessage, as_headers
from casetrail_platform.bus.ordering import SequenceGuard
from casetrail_platform.bus.port import AssignmentListener, BatchHandler, Handler
from casetrail_platform.bus.retry import RetryPolicy, Stopped, sleep_unless_stopped, until_stopped
from casetrail_platform.bus.topics import DEAD_LETTER_MAX_MESSAGE_BYTES
from casetrail_platform.telemetry.metrics import forget_consumer_lag, observe_consumer_lag
from events.cloudevents import UndecodableMessageError
from events.envelope import RecordedEvent
from events.errors import FieldProblem
from events.registry import EventRegistry
from events.topics import dead_letter_topic

log = logging.getLogger(__name__)

STALLED_LAG_PATIENCE = 2.0
"""Seconds a stalled member's lag report gives the broker to answer before it is given up (the
retry never waits for it; a later round's report starts only once this one is over)."""
PASSED_COMMIT_EVERY = 0.25
"""Seconds the commit of records a group only passed by may wait for company. Committing each
poll of them cost the members and the broker 2,389 µs of CPU per record, against 1,794 µs
this way (8 groups at 250 records/s; bench/RESULTS.md, "Commits of records a group passes
by"). Another process's barrier on the group (``GroupProgress``, asking the broker) may wait
this much longer for a partition whose last records are such."""
_LENIENT_FETCH_BYTES = 1_048_576
"""How much of a partition ``_read_past_unparsable`` fetches at a time (aiokafka's default per
partition; the broker returns a larger first batch whole)."""
TRUNCATED_VALUE_BYTES = 64 * 1024
"""How much of a record's value its dead letter keeps when the dead-letter topic refuses the
whole record: a foreign record that fits the case-event topic may not fit with the letter's
headers, or a dead-letter topic created before it was given room for them."""


class KafkaGroupMember:
    def __init__(
        self,
        *,
        settings: KafkaSettings,
        topic: str,
        group: str,
        handler: Handler | BatchHandler,
        registry: EventRegistry,
        retry: RetryPolicy,
        stop: asyncio.Event,
        on_assignment: AssignmentListener | None,
        event_types: frozenset[str] | None = None,
        ordering: SequenceGuard | None = None,
        on_applied: Callable[[Mapping[int, int]], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_applied = on_applied
        """Told the offsets a poll is done with before they are committed (``AppliedOffsets``)."""
        self._topic = topic
        self._group = group
        self._dead_letter_topic = dead_letter_topic(group)
        self._decode_event = decoder_for(registry)
        self._unparsable: dict[tuple[int, int], str] = {}
        """Records read by ``_read_past_unparsable`` that cannot be parsed, by partition and
        offset, and why: decoded as undecodable, so dead-lettered."""
        self._fetched_to: dict[TopicPartition, int] = {}
        """Per partition, past the last record ``getmany`` handed over (or read past)."""
        self._deliverer = Deliverer(
            group,
            handler,
            registry,
            retry,
            self._send,
            decode=self._decode,
            event_types=event_types,
            ordering=ordering,
            on_stalled=self._observe_lag_while_stalled,
        )
        if ordering is not None:
            ordering.forget()  # a new member reads from the committed offsets again
        self._stop = stop
        self._batch_lock = asyncio.Lock()
        self._consumer: Any = None
        self._dead_letters: Any = None
        self._passed: dict[TopicPartition, int] = {}
        """Offsets past records only passed by, not committed yet."""
        self._passed_since = 0.0
        self._listener = _Rebalance(
            group, self._batch_lock, on_assignment, ordering, self._commit_passed
        )

    async def start(self) -> None:
        settings = self._settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.client_id}-{self._group}",
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            fetch_min_bytes=settings.fetch_min_bytes,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            request_timeout_ms=settings.request_timeout_ms,
            **settings.security.client_options(),
        )
        self._consumer.subscribe([self._topic], listener=self._listener)
        self._dead_letters = new_producer(
            settings,
            f"{settings.client_id}-{self._group}-dlq",
            max_request_size=DEAD_LETTER_MAX_MESSAGE_BYTES,
        )
        await self._consumer.start()
        await self._dead_letters.start()

    async def close(self) -> None:
        timeout = self._settings.request_timeout_ms / 1000
        for client in (self._consumer, self._dead_letters):
            if client is not None:
                await close_quietly(client, timeout)
        self._consumer = self._dead_letters = None

    async def consume(self) -> None:
        consumer = self._consumer
        pacing = FetchPacing(consumer, self._settings)
        while not self._stop.is_set():
            wait_ms = self._poll_timeout_ms()
            try:
                polled = await consumer.getmany(
                    timeout_ms=wait_ms, max_records=self._settings.max_batch
                )
            except RECORD_PARSE_ERRORS as error:
                async with self._batch_lock:
                    carry_on = await self._read_past_unparsable(error)
                if not carry_on:
                    break
                continue
            pacing.polled(sum(len(records) for records in polled.values()), wait_ms)
            for tp, records in polled.items():
                if records:
                    self._fetched_to[tp] = records[-1].offset + 1
            async with self._batch_lock:
                carry_on = await self._handle(polled) if polled else True
                if self._passed and self._passed_waited() >= PASSED_COMMIT_EVERY:
                    await self._commit_passed()
            if not carry_on:
                break
        async with self._batch_lock:
            await self._commit_passed()

    def _poll_timeout_ms(self) -> int:
        """The poll's wait, cut short when records passed by are due to be committed."""
        wait = self._settings.poll_timeout_ms
        if self._passed:
            left = PASSED_COMMIT_EVERY - self._passed_waited()
            wait = max(1, min(wait, math.ceil(left * 1000)))
        return wait

    def _passed_waited(self) -> float:
        return time.monotonic() - self._passed_since

    async def _read_past_unparsable(self, error: Exception) -> bool:
        """After ``getmany`` failed on a record it cannot parse: read one fetch of every
        partition held from where this member got to, handle what it brings (the records that
        cannot be parsed dead-lettered as undecodable) and seek past it. Return whether to
        carry on, as ``_handle`` does."""
        consumer = self._consumer
        log.warning(
            "group %s: a fetched record cannot be parsed (%s); reading its partition record"
            " by record",
            self._group,
            describe(error),
        )
        messages: list[BusMessage] = []
        past: dict[TopicPartition, int] = {}
        for tp in sorted(consumer.assignment()):
            start = await self._fetched_from(tp)
            read = await read_leniently(consumer, tp, start, _LENIENT_FETCH_BYTES)
            messages.extend(read.messages)
            self._unparsable.update(((tp.partition, o), why) for o, why in read.unreadable.items())
            past[tp] = start if read.next_offset is None else read.next_offset
        try:
            carry_on = await self._handle_messages(messages) if messages else True
        finally:
            self._unparsable.clear()
        if not carry_on:
            return False
        for tp, offset in past.items():
            if tp in consumer.assignment():
                consumer.seek(tp, offset)
                self._fetched_to[tp] = offset
        if not messages:
            # Nothing to read past (the record is not there any more): try again, unhurried.
            return not await sleep_unless_stopped(
                self._settings.reconnect_backoff.initial, self._stop
            )
        return True

    async def _fetched_from(self, tp: TopicPartition) -> int:
        """Where this member's reading of ``tp`` got to: past the last record ``getmany`` gave
        it (a poll that failed may have moved the consumer's position past records it never
        handed over), else the group's committed offset, else the partition's start."""
        committed: int | None = await self._consumer.committed(tp)
        if committed is None:
            starts: dict[TopicPartition, int] = await self._consumer.beginning_offsets([tp])
            committed = starts[tp]
        return max(committed, self._fetched_to.get(tp, 0))

    def _decode(self, message: BusMessage) -> RecordedEvent | Exception:
        why = self._unparsable.get((message.partition, message.offset))
        if why is not None:
            return UndecodableMessageError([FieldProblem("record", why)])
        return self._decode_event(message)

    async def _handle(self, polled: dict[TopicPartition, list[Any]]) -> bool:
        """Handle a poll, commit what was done with; return whether to carry on (``False``
        once stopping)."""
        return await self._handle_messages(_messages(polled))

    async def _handle_messages(self, messages: list[BusMessage]) -> bool:
        partitions = {tp.partition: tp for tp in self._consumer.assignment()} | {
            m.partition: TopicPartition(m.topic, m.partition) for m in messages
        }
        offsets: dict[int, int] = {}
        carry_on = True
        handed_over = False
        for polled_batch in self._deliverer.batches(messages):
            if self._stop.is_set():
                carry_on = False
                break
            # A partition handed to another member meanwhile is theirs to handle.
            assigned = self._consumer.assignment()
            batch = self._deliverer.prepare(
                [m for m in polled_batch if partitions[m.partition] in assigned]
            )
            if not batch:
                continue
            handed_over = handed_over or not self._deliverer.passes_by(batch)
            done = await self._deliverer.deliver(batch, self._stop)
            offsets.update(self._deliverer.commit_offsets(batch, done))
            if done < len(batch):
                carry_on = False
                break
        if offsets and self._on_applied is not None:
            self._on_applied(offsets)
        if offsets:
            done_with = {partitions[p]: offset for p, offset in offsets.items()}
            if handed_over:
                await self._commit(self._with_passed(done_with))
            else:
                if not self._passed:
                    self._passed_since = time.monotonic()
                self._passed = self._with_passed(done_with)
            ends = {p: self._consumer.highwater(partitions[p]) for p in offsets}
            observe_consumer_lag(self._group, ends, offsets)
        return carry_on

    async def _observe_lag_while_stalled(self) -> None:
        """The lag of every partition held, asked of the broker: while the handler keeps
        failing nothing is fetched or committed, and the gauge would stay as it last was while
        the topic grows (no lag alert). One ListOffsets and one OffsetFetch a retry round."""
        consumer = self._consumer
        held = list(consumer.assignment())
        if not held:
            return
        # Bounded well below a request's timeout: the next round's look waits for this one.
        async with asyncio.timeout(STALLED_LAG_PATIENCE):
            ends = await consumer.end_offsets(held)
            committed: dict[int, int] = {}
            for tp in held:
                # A partition the group never committed on is read from its start.
                committed[tp.partition] = await consumer.committed(tp) or 0
        observe_consumer_lag(self._group, {tp.partition: ends.get(tp) for tp in held}, committed)

    async def _send(self, letter: DeadLetter) -> bool:
        """Put ``letter`` on the dead-letter topic, retrying until it is acknowledged;
        ``False`` if stop was requested first (the message then stays uncommitted)."""
        failures = 0
        while True:
            try:
                # An idempotent send waits out a broker outage; stop must not wait with it.
                await until_stopped(
                    self._dead_letters.send_and_wait(
                        self._dead_letter_topic,
                        value=letter.message.value,
                        key=letter.message.key,
                        headers=list(letter.headers()),
                    ),
                    self._stop,
                )
                return True
            except Stopped:
                return False
            except Exception as error:
                cut = (
                    letter.cut(TRUNCATED_VALUE_BYTES)
                    if isinstance(error, MessageSizeTooLargeError)
                    else None
                )
                if cut is not None:
                    # Too large now is too large for good: retrying would hold the
                    # partition for ever. The cut letter still says what failed and where.
                    log.error(
                        "group %s: %s refuses the dead letter of %s/%d@%d (%s); writing it"
                        " with the first %d of its value's %d bytes",
                        self._group,
                        self._dead_letter_topic,
                        letter.message.topic,
                        letter.message.partition,
                        letter.message.offset,
                        describe(error),
                        TRUNCATED_VALUE_BYTES,
                        cut.truncated_from,
                    )
                    letter = cut
                    continue
                # Skipping would lose the message, so even odd errors are retried; nothing
                # is committed meanwhile, so the member is held back as by a failing handler.
                failures += 1
                self._deliverer.stalled()
                delay = self._settings.reconnect_backoff.delay(failures)
                log.error(
                    "group %s: cannot write to %s (%s), retrying in %.1fs",
                    self._group,
                    self._dead_letter_topic,
                    describe(error),
                    delay,
                )
                if await sleep_unless_stopped(delay, self._stop):
                    return False

    def _with_passed(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """``offsets`` and those passed by that wait, of partitions still held (a commit of a
        partition another member holds now would move its offset back); none wait after."""
        held = self._consumer.assignment()
        merged = {tp: offset for tp, offset in self._passed.items() if tp in held}
        self._passed = {}
        for tp, offset in offsets.items():
            merged[tp] = max(merged.get(tp, 0), offset)
        return merged

    async def _commit_passed(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit what was passed by (of ``partitions`` only, if given: those being revoked),
        and forget it whatever the outcome."""
        if self._consumer is None or not self._passed:
            return
        if partitions is None:
            due = self._with_passed({})
        else:
            due = {tp: self._passed.pop(tp) for tp in partitions if tp in self._passed}
        if due:
            await self._commit(due)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        # A failed commit only means those records may be delivered again (to this member
        # or, after a rebalance, another); the next successful commit covers them.
        try:
            await asyncio.wait_for(
                self._consumer.commit(offsets), self._settings.request_timeout_ms / 1000
            )
        except (KafkaError, TimeoutError) as error:
            log.warning(
                "group %s: commit of %s failed (%s); the records will be delivered again",
                self._group,
                ", ".join(f"{p.topic}:{p.partition} up to {o}" for p, o in offsets.items()),
                describe(error),
            )


def _messages(polled: dict[TopicPartition, list[Any]]) -> list[BusMessage]:
    return [
        BusMessage(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=as_headers(record.headers),
        )
        for records in polled.values()
        for record in records
    ]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        group: str,
        batch_lock: asyncio.Lock,
        on_assignment: AssignmentListener | None,
        ordering: SequenceGuard | None,
        commit_passed: Callable[[set[TopicPartition]], Awaitable[None]] | None = None,
    ):
        self._group = group
        self._batch_lock = batch_lock
        self._on_assignment = on_assignment
        self._ordering = ordering
        self._commit_passed = commit_passed

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Wait for the batch in hand: it commits before the partitions move on, and so does
        # what was passed by.
        async with self._batch_lock:
            if self._commit_passed is not None:
                await self._commit_passed(revoked)
            if self._ordering is not None:
                self._ordering.forget(tp.partition for tp in revoked)
            forget_consumer_lag(self._group, (tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._on_assignment is not None:
            self._on_assignment(frozenset(tp.partition for tp in assigned))
