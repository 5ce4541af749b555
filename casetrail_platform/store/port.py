"""The event store port: the only way a service persists and reads its own events.

Guarantees every adapter must give (checked by ``tests/contract/test_event_store_contract.py``):

* ``append`` is atomic: all events of the call are stored, or none.
* ``(stream, sequence)`` is unique: a writer whose ``expected_version`` is not the stream's
  current version gets ``ConcurrencyError`` and nothing is written.
* ``expected_version=ANY_VERSION`` never conflicts: the store itself places the events after
  whatever the stream holds when it writes them (appends are serialised in the store), so
  streams of independent facts never make a writer retry (see ``ANY_VERSION``).
* an append given a ``guard`` (``StreamVersion``: another stream, at the version its writer
  read) writes only if that stream is still at that version, checked in the append's
  transaction; else ``ConcurrencyError`` naming the guarded stream, and nothing is written.
* appending an event id that is already stored with the same content is a no-op that returns
  the stored records (safe retries); the same id with other content is an error.
* a command is recorded once: an append that names its ``command_id`` writes that id into the
  store's table of commands in the same transaction as its events; a later append naming the
  same command with other events gets ``CommandAlreadyRecorded`` and writes nothing, whichever
  stream it is for and whichever connection (replica) sends it.
* ``read_all`` returns events in global-position order and never skips one, even when
  concurrent writers commit out of order.
* stored events cannot be changed or deleted, not even through the database.
* a snapshot saved is loaded back as saved, until one of a higher version (or another schema
  version) of its fold and stream replaces it; a lower version never replaces a higher one.
  Snapshots are derived data (``casetrail_platform.folded``): they may be deleted at any time.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from events.envelope import NewEvent, RecordedEvent
from events.registry import EventRegistry

NO_STREAM = 0
"""``expected_version`` for a stream that must not exist yet."""

ANY_VERSION = -1
"""``expected_version`` for an append that must not conflict with anyone: the store puts the
events after the stream's newest event at the moment it writes them, serialised with every
other append, and ``ConcurrencyError`` is never raised for it.

Only for streams whose events are independent facts that no decision reads back before
appending, such as the access log (``casetrail.record.accessed``: every read records one, and
sixty readers of one case must not make each other retry). A decision (a command that looks at
the stream's history) must always pass the version it decided on. Retries stay safe: an append
whose event ids are already stored with the same content returns the stored events."""


@dataclass(frozen=True, slots=True)
class StreamVersion:
    """A stream a decision read but does not write, at the version it read (``NO_STREAM``:
    it had no events). Given to ``append`` as its ``guard``, the append is written only if
    ``stream`` is still at ``version`` when it is, in the same transaction: a decision on a
    case that read its client's stream is never appended past the client's erasure committed
    in between. A failed guard raises ``ConcurrencyError`` for ``stream``, as a wrong expected
    version does, so the writer reads again and decides again (``casetrail_platform.decide``)."""

    stream: str
    version: int
    lock: str | None = None
    """A lock name (``casetrail_platform.locking``) the append holds *shared* in its own
    transaction, waiting out whoever holds it exclusively (``Locks.holding``) before it is
    written: a decision whose append must come wholly before or wholly after another's section
    (a case opened as its client is erased) costs no lock session of its own. The store's
    adapters meet the host's ``Locks``: PostgreSQL's transaction-level advisory lock on the key
    of ``holding``'s session lock, SQLite's the in-process lock of the same name."""

    def __post_init__(self) -> None:
        if self.version < NO_STREAM:
            raise ValueError(f"a guard's version must be {NO_STREAM} or more, not {self.version}")

    @classmethod
    def as_read(cls, stream: str, history: Sequence[RecordedEvent]) -> StreamVersion:
        """``stream`` at the version ``history`` (the whole stream, as a guard just read it)
        ends at: its last event's sequence, ``NO_STREAM`` when it has none."""
        return cls(stream, history[-1].sequence if history else NO_STREAM)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stream's state as a fold makes it (``casetrail_platform.folded.Snapshots``), folded
    up to ``version``, whose event is ``last_event_id``."""

    fold: str
    stream: str
    schema_version: int
    version: int
    last_event_id: UUID
    data: bytes


class EventStore(ABC):
    @property
    @abstractmethod
    def registry(self) -> EventRegistry:
        """The catalog events are decoded with, and the keys their sealed values open with."""

    @abstractmethod
    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        command_id: UUID | None = None,
        guard: StreamVersion | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` to ``stream`` if it is at ``expected_version`` (or wherever the
        stream ends, for ``ANY_VERSION``). ``command_id``: the command these events record
        (``casetrail_platform.decide``), unique in the store; None for appends that are not a
        command's (access records, follow-ups), which cost nothing more. ``guard``: another
        stream the decision read, which must still be at the version read (``StreamVersion``);
        never ``stream`` itself (``expected_version`` is that stream's guard)."""

    @abstractmethod
    async def read_stream(
        self,
        stream: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        recorded_until: datetime | None = None,
        occurred_until: datetime | None = None,
    ) -> list[RecordedEvent]:
        """Events of one stream in sequence order, optionally only those recorded (or that
        occurred) at or before a moment: the stream as it was known, or as it was, then."""

    @abstractmethod
    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events with a global position greater than ``after_position``."""

    @abstractmethod
    async def read_by_causation(self, causation_id: UUID) -> list[RecordedEvent]:
        """Events recorded because of one command (its id is their causation id), in order.
        Lets a retried command find what it recorded the first time."""

    async def read_for_command(
        self, causation_id: UUID, stream: str, from_version: int = 1
    ) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
        """What a command reads before deciding: the events an earlier attempt of it recorded
        (``read_by_causation``) and ``stream``'s history from ``from_version`` on (a command
        holding the history up to there folded reads only what came after). When the first
        list is not empty the second may be left empty: a retry answers with what it recorded
        and decides nothing. A networked adapter answers in one round trip; this default takes
        two reads, which is right where a read is local (SQLite reads small results on the
        caller's thread)."""
        earlier = await self.read_by_causation(causation_id)
        if earlier:
            return earlier, []
        return [], await self.read_stream(stream, from_version=from_version)

    @abstractmethod
    async def load_snapshot(self, fold: str, stream: str) -> Snapshot | None:
        """The snapshot kept of ``stream``'s state as ``fold`` makes it, if any."""

    @abstractmethod
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` in place of its fold and stream's, unless that one is of the same
        schema version and a higher version. Not in any append's transaction."""

    @abstractmethod
    async def stream_version(self, stream: str) -> int:
        """Current version of ``stream`` (``NO_STREAM`` if it has no events)."""

    @abstractmethod
    async def last_position(self) -> int:
        """Global position of the newest readable event (0 for an empty store)."""

    @abstractmethod
    async def wait_for_append(self, after_position: int, max_wait: float) -> None:
        """Return once an event beyond ``after_position`` may be readable, or after
        ``max_wait`` seconds. Spurious returns are allowed."""

    @abstractmethod
    async def close(self) -> None: ...

    async def follow(
        self, after_position: int = 0, batch_size: int = 1000, idle_timeout: float = 1.0
    ) -> AsyncIterator[RecordedEvent]:
        """Every event after ``after_position``, then new ones as they are appended, forever."""
        position = after_position
        while True:
            batch = await self.read_all(position, batch_size)
            for recorded in batch:
                yield recorded
                position = recorded.position
            if len(batch) < batch_size:
                await self.wait_for_append(position, idle_timeout)


def check_guard(stream: str, guard: StreamVersion | None) -> None:
    """Refuse a guard no adapter should be given: on the stream appended to itself."""
    if guard is not None and guard.stream == stream:
        raise ValueError(
            f"the guard is on {stream!r}, the stream appended to: use expected_version"
        )


async def drain(
    store: EventStore, after_position: int = 0, batch_size: int = 1000
) -> AsyncIterator[RecordedEvent]:
    """Every event after ``after_position`` that exists now, then stop."""
    position = after_position
    while True:
        batch = await store.read_all(position, batch_size)
        for recorded in batch:
            yield recorded
            position = recorded.position
        if len(batch) < batch_size:
            return
        await asyncio.sleep(0)
