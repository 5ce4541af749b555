"""Per-case order on the consumer side: a safety net behind the relay's guarantee.

The relay never lets a later batch of a partition reach the log after an earlier one failed
(``casetrail_platform.bus.kafka``), and parks a refused record together with its case's later ones
(``casetrail_platform.outbox``), so a case's events arrive in order. Should a gap appear anyway, a
``SequenceGuard`` keeps a consumer from applying a case's event before an earlier one:

* It watches streams whose events all travel under one key (``travels_under_one_key``: a
  case's own streams, a client's record, a case's access log). Their ``sequence`` rises by
  exactly one per event in delivery order. Streams spanning several cases (a client's
  schedule, a budget line) cross partitions, carry no such promise and pass untouched
  (handlers dedupe them by event id).
* An event more than one past the last one seen of its stream (per producing service) is
  early: it is withheld, with the later ones of its stream, until the missing one arrives,
  and then handed over right after it. Nothing early is dead-lettered; but an early record
  whose value is no JSON object (no event's data, whatever its headers copy) is never
  withheld: it is handed over, and the decoder dead-letters it. A repeat (a sequence
  already seen) is handed over as it is; handlers dedupe by event id. So is a replayed dead
  letter (``events.dead_letters.REPLAYED``), untracked: it comes after later events of its
  stream, and a guard started afresh (after a restart) that took its sequence as the stream's
  start would withhold every later event of the case, waiting for events applied long ago.
* It works from the CloudEvents headers, so event types the handler does not want (skipped
  undecoded) still count, and it never decodes anything.
* Withheld records stay uncommitted: the offset committed for their partition stops before
  the first of them (``commit_limit``), so a consumer that dies loses nothing, it reads
  them again. The guard's memory is its member's: after a restart the first event read of a
  stream starts it afresh (order against a gap still open at that moment is not known).
* Bounded: at most ``max_held`` records are withheld; past that the oldest gap is given up
  (its withheld records are handed over in sequence order, logged as an error and counted).
  At most ``max_streams`` streams are remembered; the one quiet the longest is forgotten
  first (its next record starts it afresh).
  A gap open longer than ``report_after`` seconds is reported (log, ``status()``, health).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from casetrail_platform.bus.message import BusMessage
from events.cloudevents import ORDER_DIGITS
from events.dead_letters import REPLAYED
from events.ordering_contract import ONE_KEY_STREAM_KINDS, STREAM_KIND_EVENT_TYPES

log = logging.getLogger(__name__)


_SOURCE, _STREAM, _SEQUENCE, _SUBJECT = ("ce_source", "ce_stream", "ce_sequence", "ce_subject")


def travels_under_one_key(stream: str, subject: str) -> bool:
    """Whether ``stream`` holds only events of ``subject`` (the bus key), so that all of them
    are in one partition, in order: ``case-<case id>``, ``client-<client id>``,
    ``access-<case id>``."""
    kind, dash, rest = stream.partition("-")
    return bool(dash) and kind in ONE_KEY_STREAM_KINDS and rest == subject


def untracked_stream_prefixes(wanted: frozenset[str] | None) -> tuple[bytes, ...]:
    """The stream name prefixes a consumer wanting ``wanted`` (``None``: all) need not keep in
    order: kinds whose streams hold only types it skips undecoded. Passing them by before the
    guard spares every such consumer the per-record ordering work (each answered read appends
    one access record, which every consumer group of the process polls)."""
    if wanted is None:
        return ()
    return tuple(
        f"{kind}-".encode()
        for kind, types in sorted(STREAM_KIND_EVENT_TYPES.items())
        if not types & wanted
    )


@dataclass(frozen=True, slots=True)
class OrderingStatus:
    held: int
    """Records withheld now, waiting for an earlier one of their stream."""
    open_gaps: int
    """Streams with a missing event right now."""
    overdue_gaps: int
    """Of those, the ones open longer than ``report_after``: the consumer is unhealthy."""
    oldest_gap_seconds: float | None
    gaps_reported: int
    """Gaps that stayed open longer than ``report_after`` (a counter)."""
    gaps_given_up: int
    """Gaps abandoned because ``max_held`` was reached (a counter)."""

    @property
    def healthy(self) -> bool:
        return self.overdue_gaps == 0


@dataclass
class _Gap:
    since: float
    held: dict[int, BusMessage] = field(default_factory=dict)
    """Withheld records by sequence."""
    reported: bool = False


def _data_object(message: BusMessage) -> bool:
    """Whether the record's value is a JSON object, as every event's data is: the guard's own
    judgement when it is given no decoder's (``sort``'s ``never_an_event``)."""
    try:
        return isinstance(json.loads(message.value or b""), dict)
    except (ValueError, RecursionError):  # nested deeper than the parser goes: no event
        return False


def _not_data_object(message: BusMessage) -> bool:
    return not _data_object(message)


class SequenceGuard:
    def __init__(
        self,
        name: str = "consumer",
        *,
        max_held: int = 10_000,
        max_streams: int = 200_000,
        report_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_held < 1:
            raise ValueError("max_held must be at least 1")
        self._name = name
        self._max_held = max_held
        self._max_streams = max_streams
        self._report_after = report_after
        self._clock = clock
        self._last: dict[tuple[bytes, bytes], int] = {}
        self._partition_of: dict[tuple[bytes, bytes], int] = {}
        self._gaps: dict[tuple[bytes, bytes], _Gap] = {}
        self._held = 0
        self._reported = 0
        self._given_up = 0

    def sort(
        self,
        messages: Sequence[BusMessage],
        untracked: tuple[bytes, ...] = (),
        never_an_event: Callable[[BusMessage], bool] | None = None,
    ) -> list[BusMessage]:
        """``messages`` in the order to hand them over: early ones withheld, and withheld ones
        released right after the record that filled their gap. ``untracked``: stream name
        prefixes (``b"access-"``) whose records pass as they come, untracked: streams holding
        only types the consumer skips (``untracked_stream_prefixes``), so none of theirs waits.
        ``never_an_event``: whether the decoder refuses an early record for its own fault (then
        handed over, to be dead-lettered); without it, any record whose value is no JSON object.
        """
        if never_an_event is None:
            never_an_event = _not_data_object
        ordered: list[BusMessage] = []
        for message in messages:
            if (
                untracked and (message.header(_STREAM) or b"").startswith(untracked)
            ) or message.header(REPLAYED) is not None:
                ordered.append(message)
                continue
            try:
                where = _one_key_stream(message)
            except Exception as error:  # a header no event has: the decoder's to judge
                log.warning(
                    "%s: ordering headers of %s/%d@%d unreadable (%s); passed untracked",
                    self._name,
                    message.topic,
                    message.partition,
                    message.offset,
                    type(error).__name__,
                )
                where = None
            if where is None:
                ordered.append(message)
                continue
            stream, sequence = where
            self._partition_of[stream] = message.partition
            last = self._last.get(stream)
            if last is None or sequence <= last:
                # A stream's first record seen, or a repeat: as it comes.
                if last is None:
                    self._last[stream] = sequence
                    self._remember_at_most(self._max_streams)
                ordered.append(message)
            elif sequence == last + 1:
                ordered.append(message)
                del self._last[stream]  # re-inserted last: the dict runs oldest to newest
                self._last[stream] = sequence
                self._release_contiguous(stream, ordered)
            elif never_an_event(message):
                # Only an event is worth waiting for: a record with a real case's headers
                # and any other value would hold its partition's commit until that case
                # writes again. Handed over, the decoder dead-letters it.
                ordered.append(message)
            else:
                self._hold(stream, sequence, message, ordered)
        self.check()
        return ordered

    def _remember_at_most(self, streams: int) -> None:
        """Forget the streams quiet the longest beyond ``streams`` (their next record starts
        them afresh), never one with a gap open."""
        while len(self._last) > streams:
            quiet = next((s for s in self._last if s not in self._gaps), None)
            if quiet is None:
                return
            del self._last[quiet]
            self._partition_of.pop(quiet, None)

    def commit_limit(self, partition: int) -> int | None:
        """The lowest offset withheld on ``partition``: nothing from it on may be committed."""
        offsets = [
            message.offset
            for gap in self._gaps.values()
            for message in gap.held.values()
            if message.partition == partition
        ]
        return min(offsets) if offsets else None

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Forget the streams of ``partitions`` (all: ``None``) and drop what is withheld from
        them, e.g. when they go to another member or the member starts again: uncommitted,
        the withheld records are read again by whoever reads next, and what the guard knew of
        those streams may be stale by the time the partitions come back."""
        chosen = None if partitions is None else set(partitions)
        for stream, partition in list(self._partition_of.items()):
            if chosen is not None and partition not in chosen:
                continue
            gap = self._gaps.pop(stream, None)
            if gap is not None:
                self._held -= len(gap.held)
            del self._partition_of[stream]
            self._last.pop(stream, None)

    def check(self) -> None:
        """Report gaps open longer than ``report_after`` (once each)."""
        now = self._clock()
        for (source, stream), gap in self._gaps.items():
            if not gap.reported and now - gap.since >= self._report_after:
                gap.reported = True
                self._reported += 1
                log.error(
                    "%s: stream %s of %s misses event %d for %.0f s; %d later events held back",
                    self._name,
                    stream.decode(errors="replace"),
                    source.decode(errors="replace"),
                    self._last[(source, stream)] + 1,
                    now - gap.since,
                    len(gap.held),
                )

    def status(self) -> OrderingStatus:
        self.check()
        now = self._clock()
        oldest = min((gap.since for gap in self._gaps.values()), default=None)
        return OrderingStatus(
            held=self._held,
            open_gaps=len(self._gaps),
            overdue_gaps=sum(1 for gap in self._gaps.values() if gap.reported),
            oldest_gap_seconds=None if oldest is None else now - oldest,
            gaps_reported=self._reported,
            gaps_given_up=self._given_up,
        )

    def _hold(
        self,
        stream: tuple[bytes, bytes],
        sequence: int,
        message: BusMessage,
        ordered: list[BusMessage],
    ) -> None:
        gap = self._gaps.get(stream)
        if gap is None:
            gap = self._gaps[stream] = _Gap(since=self._clock())
            log.warning(
                "%s: stream %s of %s: event %d arrived before %d; holding it back",
                self._name,
                stream[1].decode(errors="replace"),
                stream[0].decode(errors="replace"),
                sequence,
                self._last[stream] + 1,
            )
        if sequence not in gap.held:
            gap.held[sequence] = message
            self._held += 1
        while self._held > self._max_held:
            self._give_up_oldest(ordered)

    def _release_contiguous(self, stream: tuple[bytes, bytes], ordered: list[BusMessage]) -> None:
        gap = self._gaps.get(stream)
        if gap is None:
            return
        while (following := gap.held.pop(self._last[stream] + 1, None)) is not None:
            ordered.append(following)
            self._held -= 1
            self._last[stream] += 1
        # Withheld repeats of what is now behind: hand them over as repeats.
        for sequence in sorted(s for s in gap.held if s <= self._last[stream]):
            ordered.append(gap.held.pop(sequence))
            self._held -= 1
        if not gap.held:
            del self._gaps[stream]
            if gap.reported:
                log.info(
                    "%s: stream %s of %s is complete again",
                    self._name,
                    stream[1].decode(errors="replace"),
                    stream[0].decode(errors="replace"),
                )

    def _give_up_oldest(self, ordered: list[BusMessage]) -> None:
        stream, gap = min(self._gaps.items(), key=lambda item: item[1].since)
        missing = self._last[stream] + 1
        log.error(
            "%s: gave up waiting for event %d of stream %s of %s: %d withheld events handed"
            " over without it",
            self._name,
            missing,
            stream[1].decode(errors="replace"),
            stream[0].decode(errors="replace"),
            len(gap.held),
        )
        for sequence in sorted(gap.held):
            ordered.append(gap.held[sequence])
            self._last[stream] = max(self._last[stream], sequence)
        self._held -= len(gap.held)
        self._given_up += 1
        del self._gaps[stream]


def _one_key_stream(message: BusMessage) -> tuple[tuple[bytes, bytes], int] | None:
    """(source, stream) and sequence of a record of a one-key stream, from its headers; ``None``
    for any other, and for one whose sequence no event has (not digits, or more of them than
    ``ORDER_DIGITS``): it passes untracked, and the decoder dead-letters it."""
    stream = message.header(_STREAM)
    subject = message.header(_SUBJECT)
    raw = message.header(_SEQUENCE)
    source = message.header(_SOURCE)
    if stream is None or subject is None or raw is None or source is None:
        return None
    if not raw.isdigit() or len(raw) > ORDER_DIGITS:  # int() refuses over 4,300 digits
        return None
    try:
        if not travels_under_one_key(stream.decode(), subject.decode()):
            return None
    except UnicodeDecodeError:
        return None
    return (source, stream), int(raw)
