"""Read models: JSON documents in named collections, plus the tracking that makes them exact.

A projection turns events into documents. Whatever feeds it (the service's own store, or the bus
for other services' events), each event is applied in a transaction that also records how far the
projection got, so an event delivered twice is applied once, and a crash mid-way leaves either
both the documents and the tracking updated or neither.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.errors import StorageUnavailableError
from events.catalog.erasure import ClientErased
from events.envelope import RecordedEvent

log = logging.getLogger(__name__)

Document = dict[str, Any]

ChangeCallback = Callable[[str | None], None]
"""Told the key of a document after the commit that changed it, or ``None`` when any document
of the collection may have changed (a reset)."""


class DocumentTransaction(ABC):
    @abstractmethod
    async def get(self, collection: str, key: str) -> Document | None: ...

    @abstractmethod
    async def put(self, collection: str, key: str, document: Document) -> None: ...

    @abstractmethod
    async def delete(self, collection: str, key: str) -> None: ...

    async def append_to_list(self, collection: str, key: str, field: str, item: Any) -> bool:
        """Append ``item`` to the list in ``field`` of a stored document; ``False`` when there
        is no such document, ``ValueError`` (``no_list``) when its ``field`` holds no list,
        nothing written. Adapters splice it in inside the database, so a growing document
        is neither read back nor written out again in Python."""
        document = await self.get(collection, key)
        if document is None:
            return False
        if not isinstance(document.get(field), list):
            raise no_list(collection, key, field)
        document[field].append(item)
        await self.put(collection, key, document)
        return True

    async def put_many(self, documents: Sequence[tuple[str, str, Document]]) -> None:
        """``put`` each ``(collection, key, document)``, in order. One statement for all of them
        in the adapters (on PostgreSQL, one round trip): audit stores three documents per
        access record, and every answered read records one."""
        for collection, key, document in documents:
            await self.put(collection, key, document)

    async def put_new(self, collection: str, key: str, document: Document) -> bool:
        """Store ``document`` unless the key holds one already; whether it was stored. One
        statement in the adapters (an insert that ignores a conflict): a marker that makes a
        projection idempotent is checked and set at once, with nothing read back."""
        if await self.get(collection, key) is not None:
            return False
        await self.put(collection, key, document)
        return True

    async def put_once(
        self,
        marker: tuple[str, str, Document],
        documents: Sequence[tuple[str, str, Document]],
        new_only: Sequence[tuple[str, str, Document]] = (),
    ) -> bool:
        """``put_new`` the ``(collection, key, document)`` ``marker`` and, only if it was
        stored, ``put`` each of ``documents`` and ``put_new`` each of ``new_only``; whether the
        marker was stored. Every key given must differ from the others. One statement on
        PostgreSQL (one round trip instead of three): audit keeps every access record this
        way, behind the record's seen-marker, and every answered read records one."""
        if not await self.put_new(*marker):
            return False
        await self.put_many(documents)
        for collection, key, document in new_only:
            await self.put_new(collection, key, document)
        return True

    async def put_if_unchanged(
        self, collection: str, key: str, expected: Document | None, document: Document
    ) -> bool:
        """Store ``document`` if the key holds ``expected`` (``None``: nothing); whether it was
        stored: compare and set. On PostgreSQL the transactions of a projection's replicas run
        at once, and a document read, changed and put back would drop what another committed
        meanwhile; there it is one statement, which waits for the other's row lock and compares
        with what it committed, so the loser reads again and retries (and then holds the row
        until it commits, which orders whatever else it writes about the same thing). SQLite's
        transactions run one at a time: this default, a read then a put, holds there."""
        if await self.get(collection, key) != expected:
            return False
        await self.put(collection, key, document)
        return True

    async def put_if_later(
        self, collection: str, key: str, document: Document, order_field: str
    ) -> bool:
        """Store ``document`` unless the key holds one whose ``order_field`` is not before the
        document's (strings, in byte order; a stored document without the field comes before
        any); whether it was stored. One statement in the adapters (an upsert whose update is
        conditional): for a collection two projections write, each in its own transaction, a
        read then a write lets the later writer put an earlier document over a later one on
        PostgreSQL (it read before the other committed); the upsert compares with what is
        committed, waiting for the other's row lock."""
        order = ordering(document, order_field)
        known = await self.get(collection, key)
        if known is not None and str(known.get(order_field, "")).encode() >= order.encode():
            return False
        await self.put(collection, key, document)
        return True

    @abstractmethod
    async def find(
        self, collection: str, equals: Mapping[str, str | int | bool] | None = None
    ) -> list[Document]:
        """Documents whose top-level fields equal the given values."""

    @abstractmethod
    async def position(self, projection: str) -> int:
        """Global position of the last event of the feeding store applied by ``projection``."""

    @abstractmethod
    async def set_position(self, projection: str, position: int) -> None: ...

    @abstractmethod
    async def already_applied(self, projection: str, event_ids: Sequence[UUID]) -> set[UUID]:
        """Which of ``event_ids`` ``projection`` has applied before."""

    @abstractmethod
    async def mark_applied(self, projection: str, event_ids: Sequence[UUID]) -> None:
        """Record that ``projection`` applied these events (in this transaction)."""

    async def mark_overwritten(self) -> None:
        """Record, with this transaction, that values it overwrites (an erasure's) are to leave
        the store's files: the mark stays until a ``forget_overwritten`` begun after its commit
        succeeds, and ``forget_if_pending`` forgets while it is there. By default nothing (a
        store in memory)."""
        return


PENDING_FORGET_RETRY_SECONDS = 60.0
"""How long after a failed ``forget_if_pending`` it is tried again, and how often a bus-fed
projection's batches look at the store's mark (``forget_if_due``; ``ReadModelStore``)."""

ERASURE_FORGET_PATIENCE_SECONDS = 1.0
"""How long the forgetting right after an erasure's commit (``forget_after_erasure``) waits
for what holds the overwritten values (transactions in flight end in moments). Past it the
mark stays for later tries and the projection goes on: a batch that failed instead held every
later event of the projection back, and the store's writer 10 s a try, for as long as an older
snapshot stayed open (a backup's, for hours)."""

FORGET_PATIENCE_SECONDS = 10.0
"""How long ``forget_overwritten`` keeps trying while another connection holds what it must
clear (SQLite: a reader of the write-ahead log; PostgreSQL: a snapshot older than the
erasure), before ``StorageUnavailableError``: the caller's batch is tried again."""


@dataclass(frozen=True, slots=True)
class RetiredLayout:
    """A layout a projection replaced, kept under its old name (its tracking) in
    ``collections``, which held sensitive values in the clear (``ReadModelStore.retire``)."""

    projection: str
    collections: tuple[str, ...]


@dataclass(frozen=True)
class KeyRange:
    """Keys strictly between ``low`` and ``high`` (byte order) whose documents' top-level
    fields each equal one of the values given for them in ``where``."""

    low: str
    high: str
    where: Mapping[str, Sequence[str]] = field(default_factory=dict)
    descending: bool = False
    limit: int = 1000

    def holds(self, key: str, document: Document) -> bool:
        return self.low.encode() < key.encode() < self.high.encode() and all(
            document.get(name) in values for name, values in self.where.items()
        )


class DocumentReader(ABC):
    """Reads of committed documents: a store's (each read sees the last commit), or one
    snapshot's (``ReadModelStore.snapshot``: every read sees the same commit)."""

    @abstractmethod
    async def get(self, collection: str, key: str) -> Document | None: ...

    async def get_many(self, collection: str, keys: Sequence[str]) -> dict[str, Document]:
        """The documents of ``keys`` that exist, by key (for a list answer's thousand cases).
        Adapters answer it with one query; this default gets them one by one."""
        found = {key: await self.get(collection, key) for key in dict.fromkeys(keys)}
        return {key: document for key, document in found.items() if document is not None}

    @abstractmethod
    async def find(
        self,
        collection: str,
        equals: Mapping[str, str | int | bool] | None = None,
        contains: Mapping[str, str] | None = None,
        limit: int = 1000,
    ) -> list[Document]:
        """Documents whose fields equal ``equals`` and whose list fields contain ``contains``."""

    @abstractmethod
    def scan(self, collection: str) -> AsyncIterator[tuple[str, Document]]:
        """Every document of a collection in key order (for comparisons and exports)."""

    async def key_range(self, collection: str, keys: KeyRange) -> list[tuple[str, Document]]:
        """The documents of ``keys`` in key order (byte order of the keys), at most
        ``keys.limit``: an index read, for keyset paging. Adapters answer it with one query on
        their primary key; this default scans the collection."""
        chosen = [item async for item in self.scan(collection) if keys.holds(*item)]
        chosen.sort(key=lambda item: item[0].encode(), reverse=keys.descending)
        return chosen[: keys.limit]

    async def count_range(self, collection: str, keys: KeyRange) -> int:
        """How many documents ``keys`` holds, whatever its limit."""
        return len([item async for item in self.scan(collection) if keys.holds(*item)])

    @abstractmethod
    async def applied_position(self, projection: str) -> int:
        """``projection``'s position at the last commit, read without taking part in any
        transaction (nothing locked, nothing written); 0 before its first event."""


class ReadModelStore(DocumentReader):
    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[DocumentTransaction]:
        """One atomic, durable unit of work: commits on normal exit, rolls back on error."""

    @abstractmethod
    def snapshot(self) -> AbstractAsyncContextManager[DocumentReader]:
        """Reads that all see one committed state, whatever commits meanwhile, for a pass that
        reads an index a page at a time while its projection goes on applying events (audit's
        export and state as of a moment: pages read apart held an event applied between them
        ahead of the cursor and missed an earlier one of its stream applied behind it). SQLite:
        a read transaction on a connection of its own; PostgreSQL: a read-only REPEATABLE READ
        transaction. Keep it short: while it is open the store's files keep what an erasure
        overwrote since (``forget_overwritten`` waits for it)."""

    async def applied_position(self, projection: str) -> int:
        """Adapters read it on their reader; this default goes through a transaction."""
        async with self.transaction() as transaction:
            return await transaction.position(projection)

    @abstractmethod
    async def reset(
        self, projection: str, collections: tuple[str, ...], *, forget: bool = False
    ) -> bool:
        """Forget a projection's documents and tracking, to rebuild it from zero; whether
        there was anything to forget. With ``forget`` what it deleted must leave the store's
        files too (a retired layout's sensitive values): a reset that deleted anything leaves
        its mark (``mark_overwritten``) with its commit, for ``forget_if_pending``."""

    async def retire(self, layouts: Iterable[RetiredLayout]) -> None:
        """Delete what a projection's retired layouts left (nothing once done: a no-op after),
        their values leaving the store's files too: they were kept in the clear. Forgotten in
        one try, never waited for: a snapshot older than the deletion (a backup) may stay open
        for hours, and waiting for it failed the service's start. The mark stays for the
        store's later tries (``forget_if_pending``) until one succeeds."""
        deleted = [
            await self.reset(layout.projection, layout.collections, forget=True)
            for layout in layouts
        ]
        if any(deleted):
            # Now, however lately the store looked at the mark (``forget_if_due``): the values
            # were just deleted for leaving the files.
            await self._forget_once(patience=0.0)

    async def forget_overwritten(self, patience: float | None = None) -> None:
        """Make sure no file of the store keeps bytes that were just overwritten (after an
        erasure scrubbed sensitive values): SQLite's write-ahead log cut, PostgreSQL's dead
        row versions vacuumed. By default nothing (a store in memory)."""
        return

    _forget_retry_at: float = 0.0
    """Before it neither ``forget_if_pending`` nor ``forget_if_due`` looks at the mark: set
    ``PENDING_FORGET_RETRY_SECONDS`` on by a failed try and by each look ``forget_if_due``
    takes."""

    async def forget_if_pending(self) -> None:
        """``forget_overwritten`` while a committed transaction's mark (``mark_overwritten``)
        says it has not succeeded since: a feed that failed or ended between an erasure's
        commit and its forgetting stands past the erasure, and nothing else would ask again.

        Never raised: it runs before every catch-up, a request's read-your-writes among them
        (intake's registrations), and a snapshot older than the erasure may stay open for
        hours (a backup): each catch-up would wait ``FORGET_PATIENCE_SECONDS`` and fail. So a
        failure is logged and the mark stays, tried again after
        ``PENDING_FORGET_RETRY_SECONDS``, by the next catch-up then, the next bus-fed batch
        (``forget_if_due``) or the next opening."""
        if time.monotonic() < self._forget_retry_at:
            return
        # One try, no patience: its wait held the store's writer, every read model's write
        # waiting 10 s once a minute for as long as the older snapshot stayed open.
        await self._forget_once(patience=0.0)

    async def forget_after_erasure(self) -> None:
        """Right after an erasure's commit (its ``mark_overwritten``): ``forget_overwritten``
        now, whenever an earlier try failed, waiting ``ERASURE_FORGET_PATIENCE_SECONDS`` at
        most. Never raised either: the mark stays for ``forget_if_pending``."""
        self._forget_retry_at = 0.0
        await self._forget_once(patience=ERASURE_FORGET_PATIENCE_SECONDS)

    async def _forget_once(self, *, patience: float) -> None:
        if not await self.forgetting_pending():
            return
        try:
            await self.forget_overwritten(patience=patience)
        except StorageUnavailableError as error:
            self._forget_retry_at = time.monotonic() + PENDING_FORGET_RETRY_SECONDS
            log.warning("values an erasure overwrote not forgotten yet: %s", failure_text(error))

    async def forget_if_due(self) -> None:
        """One try, as ``forget_if_pending``'s, once ``PENDING_FORGET_RETRY_SECONDS`` have
        passed since the last look or failed try, asking nothing before: a bus-fed projection
        runs it with every batch, and it costs one query a minute. The mark is the store's,
        on PostgreSQL every replica's of the service: whichever replica's erasure, retirement
        or opening left it, each replica still running forgets it. Only the replica whose own
        try had failed asked again, so once it left (scaled down, rescheduled) the values
        stayed in the files until a start, or a catch-up of a projection fed from the
        service's own store, of which planning has none."""
        now = time.monotonic()
        if now < self._forget_retry_at:
            return
        self._forget_retry_at = now + PENDING_FORGET_RETRY_SECONDS
        await self._forget_once(patience=0.0)

    async def forgetting_pending(self) -> bool:
        """Whether a mark says an erasure's overwritten values may still be in the files. By
        default never (a store in memory)."""
        return False

    def watch(self, collection: str, changed: ChangeCallback) -> bool:
        """Tell ``changed`` about every committed change to ``collection``'s documents, after
        the commit, for as long as the store is open. ``False`` when this store cannot see
        every writer (other processes, replicas): then nothing may be cached on its word."""
        return False

    def watching(self) -> bool:
        """Whether every committed change is being told right now (a store that watches over
        a connection is deaf while it is lost: nothing may be cached meanwhile)."""
        return True

    @abstractmethod
    async def close(self) -> None: ...


class Projection(ABC):
    """Pure logic from events to documents. ``apply`` ignores event types it does not need."""

    name: str
    collections: tuple[str, ...]
    retired: tuple[RetiredLayout, ...] = ()
    """The layouts this projection replaced: deleted at its service's start and, fed from the
    bus, again with every erasure it is given and every ``RETIRE_AGAIN_SECONDS``
    (``BusProjectionHandler``): in a rolling upgrade the old replica goes on writing its
    layout after the new one's start retired it, until it stops."""
    event_types: frozenset[str] | None = None
    """The event types ``apply`` reacts to (``None``: maybe any). Fed from the bus, a
    projection is not even given the others: they are skipped before decoding."""
    idempotent: bool = False
    """``handle`` given an event it already applied changes nothing (a seen-marker written
    with the event, or documents keyed by the event alone): fed from the bus, such a
    projection keeps no tracking row per event (``already_applied``/``mark_applied``), which
    for audit would be one more row for every read of every case, kept forever. Nor does it
    take the projection's advisory lock (taken with that tracking): on PostgreSQL its replicas
    apply events of one key at once, so each of its writes is a blind put of what the event
    alone gives, one conditional statement (``put_new``, ``put_once``, ``put_if_unchanged``,
    ``put_if_later``, ``append_to_list``), or made under a row lock such a statement took in
    the same transaction, never a read then a put (README, "Projections and the bus")."""

    @abstractmethod
    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None: ...

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        """Forget the sensitive values this projection copied in the clear about the erased
        client's cases (``casetrail_platform.projections.erasure.CaseErasure``, which also holds
        when the erasure arrives before the case's events). It is given every
        ``casetrail.client.erased`` instead of ``apply``; by default it holds none."""
        del transaction, erased

    @property
    def wanted_types(self) -> frozenset[str] | None:
        """``event_types`` and, when the projection holds sensitive values, the erasure."""
        types = self.event_types
        if types is None or type(self).erase is Projection.erase:
            return types
        return types | {ClientErased.event_type}

    async def handle(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        """``apply``, or ``erase`` for a ``casetrail.client.erased``."""
        if recorded.event_type == ClientErased.event_type:
            event = recorded.event
            assert isinstance(event, ClientErased)
            await self.erase(transaction, event)
        else:
            await self.apply(transaction, recorded)


def no_list(collection: str, key: str, field: str) -> ValueError:
    """``append_to_list`` given a document whose ``field`` holds no list: refused alike on
    every backend (SQLite's ``json_insert`` left the document as it was and was taken for
    done, PostgreSQL's ``||`` made a NULL document or a list of the scalar and the item)."""
    return ValueError(f"{collection}/{key}: {field!r} holds no list to append to")


def ordering(document: Document, order_field: str) -> str:
    """``document``'s ``order_field`` for ``put_if_later``: a string, never empty (the empty
    string is where a stored document without the field stands)."""
    order = document.get(order_field)
    if not isinstance(order, str) or not order:
        raise ValueError(f"{order_field!r} must be a non-empty string to order documents by")
    return order


def stream_key(recorded: RecordedEvent) -> str:
    """Streams are unique per owning service, so the source is part of the key."""
    return f"{recorded.metadata.source}|{recorded.stream}"
