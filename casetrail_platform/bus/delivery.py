"""What a consumer does with the messages it polled, the same for every bus adapter: skip the
event types its handler does not want (before decoding), decode the rest, hand them to the
handler in batches (retrying transient failures with backoff), and turn what cannot be handled
into dead letters.

A per-record ``Handler`` is the batch path with batches of one. A batch that fails for good is
handed over again one record at a time, so that only the record at fault is dead-lettered.

A batch may hold several partitions' records (as a Kafka poll does): one handler call, so one
read-model transaction, covers all of them. Each partition's records stay in offset order, and
``commit_offsets`` turns a delivered prefix into the offset to commit per partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

from casetrail_platform.bus.deadletter import DeadLetter, failure_text
from casetrail_platform.bus.errors import BarrierNotReachedError, is_outage, is_retriable
from casetrail_platform.bus.message import BusMessage
from casetrail_platform.bus.ordering import SequenceGuard, untracked_stream_prefixes
from casetrail_platform.bus.port import BatchHandler, Handler
from casetrail_platform.bus.retry import RetryPolicy, sleep_unless_stopped
from casetrail_platform.keys.off_loop import fetch_keys
from casetrail_platform.telemetry.metrics import process_metrics
from events.cloudevents import KAFKA_HEADER_PREFIX, UndecodableMessageError, from_kafka_binary
from events.dead_letters import DeadLetterReason
from events.envelope import RecordedEvent
from events.errors import InvalidEventError
from events.registry import EventRegistry

log = logging.getLogger(__name__)

DeadLetterSink = Callable[[DeadLetter], Awaitable[bool]]
"""Stores a dead letter; returns ``False`` if stop was requested before it was stored. One
that retries tells ``Deliverer.stalled`` at each failed attempt."""

StallListener = Callable[[], Awaitable[None]]
"""Told at each failed round of processing, beside the wait for the next (one at a time, never
waited for): a consumer then updates what it reports of its lag, which no commit updates while
it is stuck."""

Decoder = Callable[[BusMessage], RecordedEvent | Exception]
"""Decodes a message, returning (not raising) what went wrong, so a result can be shared."""

BARRIER_LOG_EVERY = 10
"""A handler waiting for a group to catch up is logged at its first wait and every tenth: at
the backoff's ceiling, one line every few minutes for as long as it waits."""

_Decoded = tuple[BusMessage, RecordedEvent]
_TYPE_HEADER = f"{KAFKA_HEADER_PREFIX}type"


def decoder_for(registry: EventRegistry) -> Decoder:
    def decode(message: BusMessage) -> RecordedEvent | Exception:
        try:
            return from_kafka_binary(message.key, message.headers, message.value, registry)
        except Exception as error:  # the message's fault, or an outage of the keys' storage
            return error

    return decode


class _OneAtATime:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def handle_batch(self, records: Sequence[RecordedEvent]) -> None:
        for record in records:
            await self._handler(record)


class Deliverer:
    def __init__(
        self,
        group: str,
        handler: Handler | BatchHandler,
        registry: EventRegistry,
        policy: RetryPolicy,
        dead_letters: DeadLetterSink,
        *,
        event_types: frozenset[str] | None = None,
        decode: Decoder | None = None,
        ordering: SequenceGuard | None = None,
        on_stalled: StallListener | None = None,
    ) -> None:
        """``event_types``: the ``ce_type`` values the handler wants (``None``: all); other
        records are committed past undecoded. ``decode``: shared decoding (see ``Decoder``).
        ``ordering``: withholds a case's records that arrive before an earlier one of their
        stream (see ``casetrail_platform.bus.ordering``); callers pass what they polled through
        ``prepare`` and commit with ``commit_offsets``. ``on_stalled``: see ``StallListener``;
        how long the member has been failing is the ``casetrail_consumer_stalled_seconds``
        gauge."""
        self.group = group
        self._on_stalled = on_stalled
        self._telling: asyncio.Future[None] | None = None
        """``on_stalled`` running, if it is."""
        self._stalled_since: float | None = None
        self.ordering = ordering
        self.registry = registry
        self.policy = policy
        self._dead_letters = dead_letters
        self._decoder = decode or decoder_for(registry)
        self._wanted = None if event_types is None else frozenset(t.encode() for t in event_types)
        self._untracked = untracked_stream_prefixes(event_types)
        self._handler: BatchHandler
        self.max_batch: int | None
        if isinstance(handler, BatchHandler):
            self._handler, self.max_batch = handler, None
        else:
            self._handler, self.max_batch = _OneAtATime(handler), 1

    def batches(self, messages: Sequence[BusMessage]) -> Iterator[Sequence[BusMessage]]:
        """``messages`` cut into the batches the handler takes; check for stop between them."""
        size = self.max_batch or len(messages) or 1
        for start in range(0, len(messages), size):
            yield messages[start : start + size]

    def prepare(self, messages: Sequence[BusMessage]) -> Sequence[BusMessage]:
        """What to hand to ``deliver`` for ``messages`` just polled: the same, or, with an
        ordering guard, without the early records and with those an arrival released."""
        if self.ordering is None:
            return messages
        return self.ordering.sort(messages, self._untracked, self._never_an_event)

    def _never_an_event(self, message: BusMessage) -> bool:
        """Whether the decoder refuses ``message`` for its own fault: a record copying a real
        case's headers, any value but an event's, would hold its partition's commit until that
        case writes again. An outage of the keys is no verdict: the record may be one."""
        decoded = self._decoder(message)
        return isinstance(decoded, Exception) and not is_outage(decoded)

    def commit_offsets(self, handed: Sequence[BusMessage], done: int) -> dict[int, int]:
        """Per partition, the offset to commit once the first ``done`` of ``handed`` (what
        ``prepare`` returned) are done with: one past the last of them, but never past a
        record still withheld or handed over and not done."""
        if self.ordering is None:
            return commit_offsets(handed[:done])
        offsets: dict[int, int] = {}
        for message in handed[:done]:
            offsets[message.partition] = max(offsets.get(message.partition, 0), message.offset + 1)
        for message in handed[done:]:
            offsets[message.partition] = min(
                offsets.get(message.partition, message.offset), message.offset
            )
        for partition, offset in list(offsets.items()):
            limit = self.ordering.commit_limit(partition)
            if limit is not None and limit < offset:
                offsets[partition] = limit
        return offsets

    async def deliver(self, messages: Sequence[BusMessage], stop: asyncio.Event) -> int:
        """Handle or dead-letter ``messages`` (each partition's consecutive, in offset order),
        in order.

        Returns how many of them, from the first, are done with and may be committed: all
        of them unless stop was requested while retrying or storing a dead letter.
        """
        try:
            return await self._deliver(messages, stop)
        finally:
            if self._stalled_since is not None:
                self._stalled_since = None
                process_metrics().consumer_stalled_since(self.group, self, None)
            telling, self._telling = self._telling, None
            if telling is not None:
                telling.cancel()  # no longer stalled, or stopping: nothing left to tell

    def stalled(self) -> None:
        """A round of processing failed and is retried after a wait: the member is held back.
        Also told by a ``DeadLetterSink`` retrying a dead letter it could not store: the
        records in hand wait for it, nothing committed, as for a failing handler.
        ``on_stalled`` runs beside the wait, not before it: on Kafka it asks the broker, which
        may be away as well, and the retry (or a shutdown) must not wait for its answer."""
        if self._stalled_since is None:
            self._stalled_since = time.monotonic()
            process_metrics().consumer_stalled_since(self.group, self, self._stalled_since)
        if self._on_stalled is not None and (self._telling is None or self._telling.done()):
            self._telling = asyncio.ensure_future(self._tell(self._on_stalled))

    async def _tell(self, listener: StallListener) -> None:
        try:
            await listener()
        except Exception as error:  # reporting only: the retry goes on regardless
            log.debug("group %s: lag not updated while stalled: %s", self.group, error)

    async def _deliver(self, messages: Sequence[BusMessage], stop: asyncio.Event) -> int:
        run: list[_Decoded] = []
        starts: list[int] = []  # index in ``messages`` of each record of ``run``
        # Decoding opens sealed values: their keys are fetched first, off the event loop. A
        # message of the embedded bus carries its event, opened by the writer's keyring.
        away = await fetch_keys(
            self.registry,
            (m.value for m in messages if m.recorded is None and not self._unwanted(m)),
        )

        async def handle_run() -> int | None:
            """Handle the pending run; where to stop if not all of it is done."""
            nonlocal run, starts
            if run:
                handled = await self._handle_run(run, stop)
                if handled < len(run):
                    return starts[handled]
                run, starts = [], []
            return None

        for index, message in enumerate(messages):
            if self._unwanted(message):
                continue  # no effect to order: committed past with its neighbours
            # A key the outage kept away would be asked for again here, on the loop: wait.
            decoded = away if away and self._lacks_keys(message) else self._decode(message)
            if isinstance(decoded, Exception):
                # The decoder's own storage is away (the data-key table opening sealed
                # values): the event is fine; what came before goes first, then we wait.
                if (stopped := await handle_run()) is not None:
                    return stopped
                recovered = await self._decode_after_outage(message, decoded, stop)
                if recovered is None:
                    return index
                decoded, away = recovered, None
            if isinstance(decoded, RecordedEvent):
                run.append((message, decoded))
                starts.append(index)
                continue
            # Undecodable messages split the batch, so effects keep the order of the log.
            if (stopped := await handle_run()) is not None:
                return stopped
            if not await self._dead_letters(decoded):
                return index
        stopped = await handle_run()
        return len(messages) if stopped is None else stopped

    def passes_by(self, messages: Sequence[BusMessage]) -> bool:
        """Whether the handler wants none of ``messages`` (each one's type header names a type
        it does not want): delivering them hands nothing over and dead-letters nothing, only
        their offsets move on."""
        return self._wanted is not None and all(map(self._unwanted, messages))

    def _unwanted(self, message: BusMessage) -> bool:
        """Whether the record's type header names a type the handler does not want (a record
        without one is decoded, and dead-lettered if it is poison)."""
        if self._wanted is None:
            return False
        event_type = message.header(_TYPE_HEADER)
        return event_type is not None and event_type not in self._wanted

    def _lacks_keys(self, message: BusMessage) -> bool:
        """Whether decoding ``message`` would ask the key table or KMS (a key not cached)."""
        protection = self.registry.protection
        return (
            message.recorded is None
            and protection is not None
            and bool(protection.keys_to_fetch([message.value]))
        )

    def _decode(self, message: BusMessage) -> RecordedEvent | DeadLetter | Exception:
        """The event, its dead letter, or (returned) the outage that kept it from decoding."""
        decoded = self._decoder(message)
        if isinstance(decoded, RecordedEvent):
            return decoded
        if is_outage(decoded):
            return decoded
        if isinstance(decoded, InvalidEventError) and not isinstance(
            decoded, UndecodableMessageError
        ):
            return self._dead(message, DeadLetterReason.INVALID_EVENT, decoded, attempts=0)
        return self._dead(message, DeadLetterReason.UNDECODABLE, decoded, attempts=0)

    async def _decode_after_outage(
        self, message: BusMessage, error: Exception, stop: asyncio.Event
    ) -> RecordedEvent | DeadLetter | None:
        """Decode ``message`` again, pausing while the outage lasts; ``None`` if stop was
        requested meanwhile. Never dead-lettered for it, as a handler's outage is not."""
        where = f"{message.topic}/{message.partition}@{message.offset}"
        outages = 0
        decoded: RecordedEvent | DeadLetter | Exception = error
        while isinstance(decoded, Exception):
            outages += 1
            if await self._pause(where, outages, decoded, stop):
                return None
            if message.recorded is None:
                # The keys first, from a worker thread: while their table or KMS is still
                # away, its connection timeouts are waited there, not on the event loop.
                away = await fetch_keys(self.registry, [message.value])
                if away is not None:
                    decoded = away
                    continue
            decoded = self._decode(message)
        return decoded

    async def _handle_run(self, run: list[_Decoded], stop: asyncio.Event) -> int:
        """Handle decoded records as one batch; return how many are done with."""
        if len(run) == 1:
            return 1 if await self._handle_one(run[0], stop) else 0
        records = [recorded for _, recorded in run]
        attempts = outages = waits = 0
        while True:
            attempts += 1
            try:
                await self._handler.handle_batch(records)
            except Exception as error:
                first, last = run[0][0], run[-1][0]
                where = f"{first.topic}/{first.partition}@{first.offset}-{last.offset}"
                if is_outage(error):
                    attempts, outages = attempts - 1, outages + 1
                    if await self._pause(where, outages, error, stop):
                        return 0
                    continue
                if isinstance(error, BarrierNotReachedError):
                    attempts, waits = attempts - 1, waits + 1
                    if await self._wait_for_barrier(where, waits, error, stop):
                        return 0
                    continue
                if not is_retriable(error) or self.policy.gives_up_after(attempts):
                    log.warning(
                        "group %s: batch %s failed after %d attempt(s), handling its %d"
                        " records one by one: %s",
                        self.group,
                        where,
                        attempts,
                        len(run),
                        _describe(error),
                    )
                    return await self._one_by_one(run, stop)
                delay = self.policy.backoff.delay(attempts)
                self.stalled()
                log.warning(
                    "group %s: batch %s failed, attempt %d, retrying in %.2fs: %s",
                    self.group,
                    where,
                    attempts,
                    delay,
                    _describe(error),
                )
                if await sleep_unless_stopped(delay, stop):
                    return 0
            else:
                return len(run)

    async def _one_by_one(self, run: list[_Decoded], stop: asyncio.Event) -> int:
        for done, item in enumerate(run):
            if not await self._handle_one(item, stop):
                return done
        return len(run)

    async def _handle_one(self, item: _Decoded, stop: asyncio.Event) -> bool:
        """Handle one record (retrying) or dead-letter it; ``False`` if stop came first."""
        message, recorded = item
        attempts = outages = waits = 0
        while True:
            attempts += 1
            try:
                await self._handler.handle_batch((recorded,))
            except Exception as error:
                where = f"{message.topic}/{message.partition}@{message.offset}"
                if is_outage(error):
                    attempts, outages = attempts - 1, outages + 1
                    if await self._pause(where, outages, error, stop):
                        return False
                    continue
                if isinstance(error, BarrierNotReachedError):
                    attempts, waits = attempts - 1, waits + 1
                    if await self._wait_for_barrier(where, waits, error, stop):
                        return False
                    continue
                if not is_retriable(error):
                    reason = DeadLetterReason.HANDLER_FAILED
                    return await self._dead_letters(self._dead(message, reason, error, attempts))
                if self.policy.gives_up_after(attempts):
                    reason = DeadLetterReason.RETRIES_EXHAUSTED
                    return await self._dead_letters(self._dead(message, reason, error, attempts))
                delay = self.policy.backoff.delay(attempts)
                self.stalled()
                log.warning(
                    "group %s: handler failed on event %s (%s/%d@%d), attempt %d, retrying in"
                    " %.2fs: %s",
                    self.group,
                    recorded.event_id,
                    message.topic,
                    message.partition,
                    message.offset,
                    attempts,
                    delay,
                    _describe(error),
                )
                if await sleep_unless_stopped(delay, stop):
                    return False
            else:
                return True

    async def _pause(self, where: str, outages: int, error: Exception, stop: asyncio.Event) -> bool:
        """Wait before trying again while the handler's storage is away; ``True`` if stop
        was requested meanwhile."""
        delay = self.policy.outage_backoff.delay(outages)
        self.stalled()
        if outages == 1 or outages % 30 == 0:
            log.warning(
                "group %s: storage unavailable at %s (%s); pausing, retrying every %.1fs"
                " until it is back",
                self.group,
                where,
                _describe(error),
                delay,
            )
        return await sleep_unless_stopped(delay, stop)

    async def _wait_for_barrier(
        self, where: str, waits: int, error: Exception, stop: asyncio.Event
    ) -> bool:
        """Wait before trying again a handler waiting for a group to catch up
        (``BarrierNotReachedError``): the policy's backoff, never counted against its attempts;
        ``True`` if stop was requested meanwhile."""
        delay = self.policy.backoff.delay(waits)
        self.stalled()
        if waits == 1 or waits % BARRIER_LOG_EVERY == 0:
            log.warning(
                "group %s: %s waits for a group to catch up (%s), try %d; retrying in %.2fs,"
                " as long as it takes",
                self.group,
                where,
                _describe(error),
                waits,
                delay,
            )
        return await sleep_unless_stopped(delay, stop)

    def _dead(
        self, message: BusMessage, reason: DeadLetterReason, error: Exception, attempts: int
    ) -> DeadLetter:
        log.error(
            "group %s: dead-lettering %s/%d@%d (%s): %s",
            self.group,
            message.topic,
            message.partition,
            message.offset,
            reason.value,
            _describe(error),
        )
        process_metrics().dead_letters.labels(self.group, reason.value).inc()
        return DeadLetter(
            message=message,
            group=self.group,
            reason=reason,
            detail=failure_text(error),
            exception_type=f"{type(error).__module__}.{type(error).__qualname__}",
            attempts=attempts,
        )


def commit_offsets(delivered: Iterable[BusMessage]) -> dict[int, int]:
    """Per partition, the offset to commit once ``delivered`` (a prefix of what was handed to
    ``deliver``) is done with: one past the last of its records."""
    offsets: dict[int, int] = {}
    for message in delivered:
        offsets[message.partition] = message.offset + 1
    return offsets


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {failure_text(error)}"
