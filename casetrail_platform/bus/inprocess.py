"""The embedded bus: Kafka's semantics in one process, for ``make run`` without a broker.

It keeps a partitioned log per topic, committed offsets per consumer group, cooperative
partition assignment among a group's members, and a dead-letter list per group, and it
carries the same CloudEvents bytes as Kafka, so decoding and dead-lettering behave alike.
An event published through its publisher also travels as the immutable ``RecordedEvent``
itself, which subscribers get without decoding the bytes again, until every group of the topic
has committed past it: then only its bytes stay (``_forget_decoded``), as Kafka keeps them.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import count

from casetrail_platform.bus.deadletter import DeadLetter
from casetrail_platform.bus.delivery import Decoder, Deliverer, commit_offsets, decoder_for
from casetrail_platform.bus.encoding import bus_records
from casetrail_platform.bus.errors import is_outage
from casetrail_platform.bus.message import BusMessage, as_headers, past_last_of
from casetrail_platform.bus.ordering import SequenceGuard
from casetrail_platform.bus.port import (
    AssignmentListener,
    BatchHandler,
    EventPublisher,
    EventSubscriber,
    Handler,
    Refill,
)
from casetrail_platform.bus.retry import RetryPolicy, never_set
from casetrail_platform.telemetry.metrics import forget_consumer_lag, observe_consumer_lag
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from events.topics import DEFAULT_CASE_EVENTS_TOPIC, check_topic_name

RECENT_DECODED = 1024
"""Messages of each partition that keep their decoded event however far every group has read."""
FORGET_EVERY = 64
"""Polls of a topic (by any of its groups) between two looks for the decoded events every group
has read past (``_forget_decoded``). A look costs ~9 µs with 14 groups on 6 partitions; made at
each poll of each group, it was ~8% of an answered read's CPU on the embedded backend, where
every group polls the access record each read publishes (bench/RESULTS.md, "Commits of records
a group passes by"). The messages of the polls in between keep their event a little longer."""


class InProcessBus:
    """An in-memory, single-event-loop message bus.

    It is **not durable**: everything on it is gone when the process exits, and
    ``durable`` says so. Its publishers report ``durable = False``, which makes an
    ``OutboxRelay`` start from position 0 of the event store on every start and never
    save a checkpoint (one saved for a forgetful bus would make a later Kafka relay skip
    events). The durable store is the source of truth and the bus is rebuilt from it, so
    a restart loses nothing that was acknowledged. Consumers see every event again after
    a restart and must be idempotent (they must be on Kafka too); committed offsets and
    dead letters are forgotten as well, so keep projections' own tracking durable. Until every
    relay refilling it has republished what its store held at the start (``republishing``), it
    does not hold all that was recorded, and ``caught_up`` waits for them too: the relays go at
    their own pace, so one store's later events may come after another's earlier ones. A relay
    that has told what its store held (``Refill.store_held``) is waited for only up to the
    last record of the case asked about (of the types asked about), not for the rest.

    Partitions are chosen by a stable hash of the key (the case id), so one case's events
    stay in order. Within a group each partition is held by one member at a time and is
    only handed over between two messages.
    """

    durable = False

    def __init__(self, partitions: int = 6) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self._partitions = partitions
        self._logs: dict[str, list[list[BusMessage]]] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._dead_letters: dict[str, list[DeadLetter]] = {}
        self._decoded_from: dict[str, list[int]] = {}
        """Per topic and partition, the first offset whose message may still carry its event."""
        self._polls: dict[str, int] = {}
        """Per topic, polls since ``_forget_decoded`` last looked."""
        self._unkeyed = count()
        self._changed: asyncio.Future[None] | None = None
        self._committed: asyncio.Future[None] | None = None
        """Done at the next commit of any group (``InProcessSubscriber.caught_up`` waits on it)."""
        self._decoders: list[tuple[EventRegistry, Decoder]] = []
        self._refills: list[_Refill] = []
        """One per relay refilling the bus (``republishing``) and not ended yet."""

    def publisher(self, topic: str = DEFAULT_CASE_EVENTS_TOPIC) -> InProcessPublisher:
        return InProcessPublisher(self, topic)

    def subscriber(
        self,
        registry: EventRegistry,
        topic: str = DEFAULT_CASE_EVENTS_TOPIC,
        retry: RetryPolicy | None = None,
        max_batch: int = 100,
        linger: float = 0.0,
    ) -> InProcessSubscriber:
        """``max_batch``: most records a ``BatchHandler`` gets at once (like a Kafka poll).
        ``linger``: seconds a subscriber that found fewer waits for more before handing them
        over (like a Kafka fetch's ``fetch.max.wait.ms``), so that under load one handler
        call, e.g. one read-model transaction, covers many events."""
        return InProcessSubscriber(self, registry, topic, retry or RetryPolicy(), max_batch, linger)

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]] = (),
        recorded: RecordedEvent | None = None,
    ) -> BusMessage:
        """Put raw bytes on ``topic`` as a producer would; returns the stored message.
        ``recorded``: the event the bytes encode, handed to subscribers as it is."""
        partitions = self._log(topic)
        if key is None:
            partition = next(self._unkeyed) % self._partitions
        else:
            partition = self.partition_of(key)
        log = partitions[partition]
        message = BusMessage(topic, partition, len(log), key, value, as_headers(headers), recorded)
        log.append(message)
        self._notify()
        return message

    def republishing(self) -> Refill:
        """A relay about to refill the bus from the start of its store (``EventPublisher``'s
        ``republishing``); returns what it tells of its refill. Also the services' start
        (``services.runner.start_services``), which holds every barrier until each service's
        relay is made."""
        refill = _Refill()
        self._refills.append(refill)
        return refill

    async def refilled(self, key: str, types: frozenset[str] | None = None) -> None:
        """Returns once every relay refilling the bus (one told while this waits too) has
        published what its store held of ``key`` (of ``types``; ``None``: of any) when it
        started: all its store held until it has told what that is (``Refill.store_held``)."""
        while True:
            self._refills = [refill for refill in self._refills if not refill.over]
            behind = next((r for r in self._refills if not r.holds(key, types)), None)
            if behind is None:
                return
            await behind.progress()

    def partition_of(self, key: bytes) -> int:
        """The partition of records keyed ``key`` (a stable hash: the same in every process)."""
        return zlib.crc32(key) % self._partitions

    def messages(self, topic: str) -> list[BusMessage]:
        """Every message on ``topic``, partition by partition."""
        return [message for log in self._logs.get(topic, []) for message in log]

    def dead_letters(self, group: str) -> list[DeadLetter]:
        """What ``group`` gave up on, oldest first (the in-process ``<group>.dlq``)."""
        return list(self._dead_letters.get(group, []))

    def committed(self, topic: str, group: str) -> dict[int, int]:
        """Next offset to read per partition for ``group`` (like Kafka's committed offsets)."""
        state = self._groups.get((topic, group))
        return {} if state is None else dict(enumerate(state.committed))

    def _decoder(self, registry: EventRegistry) -> Decoder:
        """One decoder per registry, shared by every group: each message is decoded once."""
        for known, decoder in self._decoders:
            if known is registry:
                return decoder
        decoder = _SharedDecoder(decoder_for(registry))
        self._decoders.append((registry, decoder))
        return decoder

    def _log(self, topic: str) -> list[list[BusMessage]]:
        log = self._logs.get(topic)
        if log is None:
            check_topic_name(topic)
            log = self._logs[topic] = [[] for _ in range(self._partitions)]
        return log

    def _forget_decoded(self, topic: str) -> None:
        """Drop the event object from the messages every group of ``topic`` has committed: the
        log holds every message for the life of the process (the relay publishes the whole
        store again at each start), and the decoded event is 1.6 of the 3.8 KB an access
        record held. The latest ``RECENT_DECODED`` of each partition keep it anyway,
        so that groups started together or trailing a little still share one decoded event. A
        group that reads an older message again (one joining later) decodes the bytes, as on
        Kafka. Told at each poll; looks at every ``FORGET_EVERY``-th."""
        log = self._logs.get(topic)
        if log is None:
            return
        polls = self._polls.get(topic, 0) + 1
        self._polls[topic] = 0 if polls >= FORGET_EVERY else polls
        if polls < FORGET_EVERY:
            return
        groups = [state for (name, _), state in self._groups.items() if name == topic]
        if not groups:
            return
        starts = self._decoded_from.setdefault(topic, [0] * self._partitions)
        for partition, messages in enumerate(log):
            done = min(
                len(messages) - RECENT_DECODED, *(state.committed[partition] for state in groups)
            )
            for offset in range(starts[partition], done):
                if messages[offset].recorded is not None:
                    messages[offset] = replace(messages[offset], recorded=None)
            starts[partition] = max(starts[partition], done)

    def _group(self, topic: str, group: str) -> _Group:
        state = self._groups.get((topic, group))
        if state is None:
            state = self._groups[(topic, group)] = _Group(self._partitions)
        return state

    def _change(self) -> asyncio.Future[None]:
        """Done at the next change (a message appended, a member joining or leaving): one
        future every idle member of every group waits on, so that a publish wakes them without
        a task per member and wake-up (each answered read publishes one access record)."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def _commit_seen(self) -> asyncio.Future[None]:
        """Done at the next commit: apart from ``_change``, so that a commit wakes only those
        waiting for a group's progress, not every idle member."""
        if self._committed is None:
            self._committed = asyncio.get_running_loop().create_future()
        return self._committed

    def _notify_commit(self) -> None:
        committed, self._committed = self._committed, None
        if committed is not None and not committed.done():
            committed.set_result(None)


class InProcessPublisher(EventPublisher):
    def __init__(self, bus: InProcessBus, topic: str) -> None:
        check_topic_name(topic)
        self._bus = bus
        self._topic = topic

    @property
    def durable(self) -> bool:
        return self._bus.durable

    def republishing(self) -> Refill:
        return self._bus.republishing()

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        # Encode everything first so that a bad record leaves the log untouched.
        encoded = bus_records(records)
        for kafka_record, record in zip(encoded, records, strict=True):
            self._bus.append(
                self._topic, kafka_record.key, kafka_record.value, kafka_record.headers, record
            )


class InProcessSubscriber(EventSubscriber):
    def __init__(
        self,
        bus: InProcessBus,
        registry: EventRegistry,
        topic: str,
        retry: RetryPolicy,
        max_batch: int,
        linger: float = 0.0,
    ) -> None:
        check_topic_name(topic)
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if linger < 0:
            raise ValueError("linger must not be negative")
        self._bus = bus
        self._registry = registry
        self._topic = topic
        self._retry = retry
        self._max_batch = max_batch
        self._linger = linger

    async def run(
        self,
        group: str,
        handler: Handler | BatchHandler,
        stop: asyncio.Event | None = None,
        *,
        on_assignment: AssignmentListener | None = None,
        event_types: frozenset[str] | None = None,
        ordering: SequenceGuard | None = None,
    ) -> None:
        stop = stop or never_set()
        bus = self._bus
        log = bus._log(self._topic)
        state = bus._group(self._topic, group)
        member = _Member(on_assignment)
        dead_letters = bus._dead_letters.setdefault(group, [])

        async def store(letter: DeadLetter) -> bool:
            dead_letters.append(letter)
            return True

        def observe_lag(partitions: Iterable[int]) -> None:
            # As on Kafka: the partition's end minus the group's committed offset.
            held = list(partitions)
            observe_consumer_lag(
                group,
                {p: len(log[p]) for p in held},
                {p: state.committed[p] for p in held},
            )

        async def observe_lag_while_stalled() -> None:
            observe_lag(member.positions)

        deliverer = Deliverer(
            group,
            handler,
            self._registry,
            self._retry,
            store,
            event_types=event_types,
            decode=bus._decoder(self._registry),
            ordering=ordering,
            on_stalled=observe_lag_while_stalled,
        )
        if ordering is not None:
            ordering.forget()  # a new member reads from the committed offsets again
        state.join(member)
        bus._notify()
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: bus._notify())
        try:
            while not stop.is_set():
                changed = bus._change()
                held_before = set(member.positions)
                if state.settle(member):
                    bus._notify()
                    released = held_before - set(member.positions)
                    # The member now holding them reports their lag.
                    forget_consumer_lag(group, released)
                    if ordering is not None:
                        ordering.forget(released)
                limit = deliverer.max_batch or self._max_batch
                messages = member.next_messages(log, limit)
                if not messages:
                    # Shielded: a member cancelled while waiting must not cancel the future
                    # the others wait on.
                    await asyncio.shield(changed)
                    continue
                if len(messages) < limit and self._linger:
                    await asyncio.sleep(self._linger)
                    messages = member.next_messages(log, limit)
                handed = deliverer.prepare(messages)
                done = await deliverer.deliver(handed, stop)
                if done < len(handed):
                    stopped_at = deliverer.commit_offsets(handed, done)
                    for partition, offset in stopped_at.items():
                        state.commit(member, partition, offset, offset)
                    bus._notify_commit()
                    observe_lag(stopped_at)
                    break
                # Withheld records are read past but stay uncommitted (ordering guard), also
                # on a partition of which this poll handed nothing over (all of it withheld).
                committed = deliverer.commit_offsets(handed, done)
                for partition, offset in commit_offsets(messages).items():
                    commit_to = committed.get(partition, offset)
                    held = None if ordering is None else ordering.commit_limit(partition)
                    commit_to = commit_to if held is None else min(commit_to, held)
                    state.commit(member, partition, offset, commit_to)
                bus._notify_commit()
                observe_lag(commit_offsets(messages))
                bus._forget_decoded(self._topic)
        finally:
            stopping.cancel()
            forget_consumer_lag(group, member.positions)
            state.leave(member)
            bus._notify()

    async def caught_up(
        self, group: str, key: str, *, patience: float, types: frozenset[str] | None = None
    ) -> bool:
        bus = self._bus
        partition = bus.partition_of(key.encode())
        log = bus._log(self._topic)[partition]
        state = bus._group(self._topic, group)
        try:
            async with asyncio.timeout(patience):
                # What the stores held of the case at the start is on the bus only once every
                # relay has republished it; at once when none is refilling the bus any more.
                await bus.refilled(key, types)
                end = len(log)
                if types is not None:
                    start = state.committed[partition]
                    end = past_last_of(log[start:end], key.encode(), types, start)
                while state.committed[partition] < end:
                    # Shielded: a waiter that gives up must not cancel the others' future.
                    await asyncio.shield(bus._commit_seen())
        except TimeoutError:
            return False
        return True


class _Refill:
    """A relay's refill of the bus (``Refill``), as the bus's barriers ask about it."""

    def __init__(self) -> None:
        self.over = False
        self._last_positions: Mapping[str, Mapping[str, int]] | None = None
        self._published = 0
        self._changed: asyncio.Future[None] | None = None

    def store_held(self, last_positions: Mapping[str, Mapping[str, int]]) -> None:
        if not self.over:
            self._last_positions = last_positions
            self._notify()

    def published(self, position: int) -> None:
        self._published = max(self._published, position)
        self._notify()

    def ended(self) -> None:
        self.over = True
        self._last_positions = None  # a map of every case of the store: not kept any longer
        self._notify()

    def holds(self, key: str, types: frozenset[str] | None) -> bool:
        """Whether everything the store held of ``key`` (of ``types``; ``None``: any) when the
        relay started is on the bus."""
        if self.over:
            return True
        if self._last_positions is None:
            return False
        by_type = self._last_positions.get(key, {})
        needed = max(
            (position for kind, position in by_type.items() if types is None or kind in types),
            default=0,
        )
        return self._published >= needed

    async def progress(self) -> None:
        """Returns at the refill's next change."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        # Shielded: a waiter that gives up must not cancel the others' future.
        await asyncio.shield(self._changed)

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)


class _SharedDecoder:
    """Decodes each message once for all groups, keeping the latest results.

    Recorded events are immutable, so groups can share one; a decoding error is shared too and
    each group dead-letters the message with it. The groups of one process move close together,
    so a bounded window of recent messages serves nearly every repeat without keeping the
    whole log decoded.
    """

    def __init__(self, decode: Decoder, capacity: int = 8192) -> None:
        self._decode = decode
        self._capacity = capacity
        self._results: dict[tuple[str, int, int], RecordedEvent | Exception] = {}

    def __call__(self, message: BusMessage) -> RecordedEvent | Exception:
        if message.recorded is not None:
            return message.recorded
        where = (message.topic, message.partition, message.offset)
        result = self._results.get(where)
        if result is None:
            result = self._decode(message)
            if isinstance(result, Exception) and is_outage(result):
                return result  # the keys' storage was away: the next try decodes afresh
            self._results[where] = result
            if len(self._results) > self._capacity:
                del self._results[next(iter(self._results))]
        return result


@dataclass(eq=False)
class _Member:
    on_assignment: AssignmentListener | None
    positions: dict[int, int] = field(default_factory=dict)
    """Partitions this member holds -> next offset to deliver."""
    reported: frozenset[int] | None = None
    cursor: int = 0

    def next_messages(self, log: list[list[BusMessage]], limit: int) -> list[BusMessage]:
        """Up to ``limit`` undelivered messages, partition after partition (each in offset
        order), as a Kafka poll returns them; the first partition taken moves round so that
        none starves."""
        held = sorted(self.positions)
        if not held:
            return []
        start = next((i for i, p in enumerate(held) if p >= self.cursor), 0)
        taken: list[BusMessage] = []
        for partition in held[start:] + held[:start]:
            offset = self.positions[partition]
            pending = log[partition][offset : offset + limit - len(taken)]
            if pending:
                if not taken:
                    self.cursor = partition + 1
                taken.extend(pending)
                if len(taken) >= limit:
                    break
        return taken

    def report(self) -> None:
        current = frozenset(self.positions)
        if current != self.reported:
            self.reported = current
            if self.on_assignment is not None:
                self.on_assignment(current)


class _Group:
    def __init__(self, partitions: int) -> None:
        self.committed = [0] * partitions
        self.members: list[_Member] = []
        self.target: dict[int, _Member] = {}
        self.holder: dict[int, _Member] = {}

    def join(self, member: _Member) -> None:
        self.members.append(member)
        self._rebalance()

    def leave(self, member: _Member) -> None:
        self.members.remove(member)
        for partition in member.positions:
            self.holder.pop(partition, None)
        member.positions.clear()
        self._rebalance()

    def settle(self, member: _Member) -> bool:
        """Hand back partitions no longer assigned to ``member`` and take up newly assigned
        ones that are free; returns whether some were handed back (others may be waiting)."""
        released = False
        for partition in list(member.positions):
            if self.target.get(partition) is not member:
                del member.positions[partition]
                del self.holder[partition]
                released = True
        for partition, assignee in self.target.items():
            if assignee is member and partition not in self.holder:
                self.holder[partition] = member
                member.positions[partition] = self.committed[partition]
        member.report()
        return released

    def commit(self, member: _Member, partition: int, read_to: int, commit_to: int) -> None:
        """``member`` read ``partition`` up to ``read_to`` and is done with it up to
        ``commit_to`` (lower while an ordering guard withholds a record)."""
        if self.holder.get(partition) is member:
            member.positions[partition] = read_to
            self.committed[partition] = max(self.committed[partition], commit_to)

    def _rebalance(self) -> None:
        count_ = len(self.members)
        self.target = (
            {p: self.members[p % count_] for p in range(len(self.committed))} if count_ else {}
        )
