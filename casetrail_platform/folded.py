"""Decision states kept folded between commands, so a command's cost does not grow with its
stream (``casetrail_platform.decide.execute_folded``).

A stream kind that opts in gives a ``Fold``: its empty state and how events change it. The
state of a stream folded up to version ``v`` is kept in memory, per store; the next command
reads only the events after ``v`` (streams are append-only, so what was folded stays true) and
folds them in. Being right never depends on the cache: the command appends at the version it
folded up to, and the store refuses it if another connection or replica appended since, as for
any command. The cache is bounded by the events folded into its states (``MAX_FOLDED_EVENTS``),
least recently used first out; a stream that is evicted, or never seen, is folded from its start
(or from its snapshot, below).

Erasure: decoded events hold sealed values opened, so a state can hold a client's plaintext
(a service's kind on a schedule). Each entry remembers the keys its events were sealed with; it
is dropped when this process forgets one of them (the erasure's own process destroying the key,
or any service consuming ``casetrail.client.erased``: ``ClientKeyring.forget``) and is not used
once one is no longer cached live (a key destroyed by another process is found so within the
keyring's ``cache_seconds``): the stream is then folded again from its start and reads erased.
Nothing of such a state is persisted, so no plaintext outlives the process either.

Snapshots: a fold whose state never holds an opened sealed value (a budget line: amounts and
ids) may give ``Snapshots``; its state is then also written to the store's snapshot table
(``EventStore.save_snapshot``) every ``SNAPSHOT_EVERY`` events, off the command's path
(``casetrail_platform.decide``), and a process that keeps no state of the stream starts from
the snapshot instead of the stream's first event. A snapshot is derived data and never needed:
it is used only when written by the state's current schema version and when the event at its
version is still the one it was folded up to, and the events after it are always read and
folded in, so the store's version check still settles every race. A state that holds any
opened value (its keys are not empty) is never written, whatever its fold says.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from casetrail_platform.keys.fields import named_keys, sensitive_plan
from events.envelope import RecordedEvent
from events.registry import EventRegistry

S = TypeVar("S")

MAX_FOLDED_EVENTS = 250_000
"""Events folded into the states one store's cache keeps (each entry counts its version): a
budget line's state takes about 360 bytes per reservation (uuid ids), so at most ~90 MB, and
four lines of 55,000 reservations each fit."""

MAX_STREAMS = 10_000
"""States one store's cache keeps at most, whatever their size."""

SNAPSHOT_EVERY = 1_000
"""Events folded into a state between two snapshots of it: a process started after the newest
reads and folds fewer than this many events of the stream (plus the one the snapshot ends on,
to check it), however long the stream, instead of all of them. A budget line's snapshot of
50,000 reservations is about 5 MB, so this writes about 5 KB per event at that size."""


@dataclass(frozen=True, slots=True)
class Snapshots(Generic[S]):
    """How a fold's state is written to, and read back from, a snapshot. ``schema_version``
    changes with any change to the state's layout or to what ``evolve`` makes of an event: a
    snapshot of another schema version is ignored (the stream is folded from its start)."""

    schema_version: int
    encode: Callable[[S], bytes]
    decode: Callable[[bytes], S]


@dataclass(frozen=True, slots=True)
class Fold(Generic[S]):
    """How a stream kind's decision state is built from its events.

    ``evolve(state, events)`` folds the stream's next ``events`` into ``state`` and returns
    the result; it may change ``state`` in place (the cache hands a state to one command or
    read at a time, under the stream's turn). ``name`` tells the folds of one stream apart
    (a follow-up's and a command's states of one case) and keys its snapshots. ``snapshots``:
    only for a state that can never hold an opened sealed value (see the module)."""

    name: str
    start: Callable[[], S]
    evolve: Callable[[S, Sequence[RecordedEvent]], S]
    snapshots: Snapshots[S] | None = None


@dataclass(slots=True)
class _Entry:
    state: object
    version: int
    keys: frozenset[tuple[str, int]]
    """The keys whose opened values the state may hold."""


class FoldCache:
    """One store's folded states, keyed by (fold, stream). Use only under the stream's turn
    (``casetrail_platform.decide``): ``take`` hands the state out and removes it, ``keep``
    puts it back, so a command that fails half way leaves nothing half folded behind."""

    def __init__(
        self,
        registry: EventRegistry,
        max_events: int = MAX_FOLDED_EVENTS,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self._protection = registry.protection
        self._max_events = max_events
        self._max_streams = max_streams
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._events = 0
        self._snapshot_at: dict[tuple[str, str], int] = {}
        """Per kept state of a fold with snapshots: the version of its newest snapshot, written
        or read here (0: none)."""
        self._lock = threading.Lock()
        """``forget_owner`` may be called from a worker thread (a key destroyed there)."""
        if self._protection is not None:
            self._protection.watch_forgets(self)

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, fold: Fold[S], stream: str) -> tuple[S, int, frozenset[tuple[str, int]]]:
        """The state of ``stream`` as kept, the version it is folded up to and the keys it
        opened with; the empty state at version 0 when none is kept, or when one of its keys is
        no longer live here."""
        with self._lock:
            entry = self._entries.pop((fold.name, stream), None)
            if entry is not None:
                self._events -= entry.version
        live = entry is not None and (
            self._protection is None or self._protection.keys_live(entry.keys)
        )
        if entry is not None and live:
            return cast(S, entry.state), entry.version, entry.keys
        return fold.start(), 0, frozenset()

    def keep(
        self,
        fold: Fold[S],
        stream: str,
        state: S,
        version: int,
        keys: frozenset[tuple[str, int]],
    ) -> None:
        key = (fold.name, stream)
        # A key forgotten while the state was out (an erasure meanwhile): not kept at all.
        live = self._protection is None or self._protection.keys_live(keys)
        with self._lock:
            earlier = self._entries.pop(key, None)
            if earlier is not None:
                self._events -= earlier.version
            if not live:
                return
            self._entries[key] = _Entry(state, version, keys)
            self._events += version
            # No snapshot of an evicted state: its next use folds at most SNAPSHOT_EVERY - 1
            # events past its snapshot (tens of ms), while writing one would encode the whole
            # state holding the interpreter's lock for every eviction, reused or not (README).
            while self._entries and (
                self._events > self._max_events or len(self._entries) > self._max_streams
            ):
                evicted_key, evicted = self._entries.popitem(last=False)
                self._events -= evicted.version
                self._snapshot_at.pop(evicted_key, None)

    def snapshot_read(self, fold: Fold[S], stream: str, version: int) -> None:
        """The state of ``stream`` was started from its snapshot at ``version``."""
        with self._lock:
            self._snapshot_at[(fold.name, stream)] = version

    def snapshot_due(self, fold: Fold[S], stream: str, version: int) -> bool:
        """Whether a snapshot of the state at ``version`` is to be written now (then it is
        counted as written: one that fails is tried again ``SNAPSHOT_EVERY`` events later)."""
        if fold.snapshots is None:
            return False
        key = (fold.name, stream)
        with self._lock:
            if version - self._snapshot_at.get(key, 0) < SNAPSHOT_EVERY:
                return False
            self._snapshot_at[key] = version
            return True

    def forget_owner(self, owner: str) -> None:
        """Drop every state holding values opened with ``owner``'s keys (an erasure)."""
        with self._lock:
            held = [key for key, entry in self._entries.items() if _opened_by(entry, owner)]
            for key in held:
                self._events -= self._entries.pop(key).version
                self._snapshot_at.pop(key, None)


def _opened_by(entry: _Entry, owner: str) -> bool:
    return any(key_owner == owner for key_owner, _ in entry.keys)


def sealed_keys(
    keys: frozenset[tuple[str, int]], events: Sequence[RecordedEvent]
) -> frozenset[tuple[str, int]]:
    """``keys`` and those the sealed values of ``events`` are sealed with. Only an event whose
    model marks fields holds any: a caller's text in one that marks none (a budget release's
    reason) shaped as a whole sealed value named a key no keyring holds, and the state of the
    shared stream it was in (the agency's budget line) was never kept nor snapshotted again."""
    named = named_keys(
        _as_stored(recorded)
        for recorded in events
        if recorded.sealed and sensitive_plan(type(recorded.event)) is not None
    )
    return keys | named if named else keys


def _as_stored(recorded: RecordedEvent) -> bytes:
    # An upcast event's data would be sealed again to be handed out; its stored bytes name
    # the same keys.
    form = recorded.stored_form
    return recorded.data if form is None else form.data
