"""Audit as the witness of every service's log, and the proofs it hands out.

Audit checks each new checkpoint of every service against the last one it holds
(``casetrail_platform.ledger.witness``); a failure is an alarm:
``casetrail.ledger.inconsistency_detected`` in audit's own store and the health entry
``casetrail.audit.ledger-witness`` NOT_SERVING. A log audit has no public key for is not
witnessed, and says so: the same health entry NOT_SERVING and an error logged. Who may ask
is the access policy's decision (``queries.authorize_ledger``, made by the servicer before any
of these runs). Proofs are answered
from the service's ledger, for the checkpoint audit has verified, and are checked against the event
audit itself received before they are handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.commands import NotFound, RuleBroken
from casetrail_platform.errors import StorageConfigurationError
from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.directory import LedgerDirectory, PublishedKeysUnreadable
from casetrail_platform.ledger.export import (
    PENDING_ATTRIBUTE,
    canonical_of_record,
    pending_attributes,
    proof_attributes,
)
from casetrail_platform.ledger.export_note import (
    EXPORT_NOTE_ATTRIBUTE,
    ExportExtent,
    ExportStatement,
)
from casetrail_platform.ledger.log import (
    InclusionProof,
    inclusion_subtrees_of,
    prove_consistency,
    prove_inclusion,
    root_of_log,
)
from casetrail_platform.ledger.merkle import Hash, SubtreeKey
from casetrail_platform.ledger.note import (
    Checkpoint,
    LogKeys,
    NoteError,
    open_checkpoint,
    schedule_of,
)
from casetrail_platform.ledger.pending import (
    PENDING_NOTE_ATTRIBUTE,
    PendingEntry,
    PendingStatement,
)
from casetrail_platform.ledger.port import LedgerNotCreated, LedgerStore
from casetrail_platform.ledger.witness import HeldCheckpoint, Witness, WitnessAlarm
from casetrail_platform.store.port import ANY_VERSION, EventStore
from events.catalog.base import Role
from events.catalog.ledger import LedgerInconsistencyDetected
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from services.audit.app.handlers import SERVICE, SERVICE_SOURCE
from services.audit.domain.errors import invalid

log = logging.getLogger(__name__)

WITNESS = Actor("audit-ledger-witness", Role.SYSTEM)
SEEN = "audit_seen_events"


@dataclass(frozen=True)
class LedgerDeps:
    directory: LedgerDirectory
    witness: Witness
    store: EventStore
    """Audit's own store, where alarms are recorded."""
    find_event: Callable[[UUID], Coroutine[Any, Any, RecordedEvent | None]]
    """The event audit received with this id (any service's), or None."""
    sign_own: Callable[[], Coroutine[Any, Any, object]] | None = None
    """Catch audit's own ledger up and sign (and publish) a checkpoint now: what its schedule
    does, asked for by an export whose access records the newest checkpoint misses."""
    sign_every: float = 0.0
    """Seconds between the logs' checkpoints, named to an auditor given unprovable events."""
    sign_note: Callable[[str], Coroutine[Any, Any, str]] | None = None
    """Sign a note body with audit's own log key (``CheckpointSigner.sign_note``): an
    export's statements of the events it marks pending and of its extent."""


@dataclass(frozen=True)
class LogStatus:
    service: str
    origin: str
    latest: Checkpoint | None
    latest_note: str
    witnessed: HeldCheckpoint | None
    verifier: LogKeys | None
    alarm: WitnessAlarm | None


@dataclass(frozen=True)
class EventProof:
    service: str
    origin: str
    proof: InclusionProof
    checkpoint: Checkpoint
    note: str


@dataclass(frozen=True, slots=True)
class WitnessRound:
    alarms: list[WitnessAlarm]
    unkeyed: list[str]
    """Services whose log exists but whose public key audit lacks: not witnessed at all."""
    unchecked: list[str] = field(default_factory=list)
    """Services whose log could not be checked this round (an error, logged): not witnessed."""

    @property
    def consistent(self) -> bool:
        return not self.alarms and not self.unkeyed and not self.unchecked


async def witness_all(deps: LedgerDeps) -> WitnessRound:
    """One round: every log checked once, each on its own, so that one log failing (its
    database unreadable, a row its driver cannot read) stops no other's check. Returns the
    alarms standing and the logs it could not check, for want of their key or for an error
    (a log nobody checks must not look checked). A storage configuration error (an operator
    must act) is raised once every log was tried, for the caller to tell once."""
    alarms: list[WitnessAlarm] = []
    unkeyed: list[str] = []
    unchecked: list[str] = []
    misconfigured: StorageConfigurationError | None = None
    for service in deps.directory.services:

        async def raised(alarm: WitnessAlarm, service: str = service) -> None:
            await record_alarm(deps.store, service, alarm)

        try:
            store = await deps.directory.log(service)
            if store is None:
                # None created yet, or one the witness held gone: the shrink alarm, as for a
                # table emptied.
                alarm = await deps.witness.vanished(deps.directory.origin(service), raised)
                if alarm is not None:
                    alarms.append(alarm)
                continue
            verifier = await deps.directory.verifier(service)
            if verifier is None:
                unkeyed.append(service)
                continue
            try:
                alarm = await deps.witness.witness(store, verifier, raised)
            except LedgerNotCreated:
                # Gone since it was opened (its schema dropped): as a log not found.
                await deps.directory.forget(service)
                alarm = await deps.witness.vanished(deps.directory.origin(service), raised)
        except StorageConfigurationError as error:
            misconfigured = misconfigured or error
            continue
        except PublishedKeysUnreadable as error:
            # Told whole: it names the file and why, and a public key file quotes no event.
            log.error("ledger witness could not check %s's log: %s", service, error)
            unchecked.append(service)
            continue
        except Exception as error:
            # By type and place, no traceback: the message may quote what it failed on.
            log.error("ledger witness could not check %s's log: %s", service, failure_text(error))
            unchecked.append(service)
            continue
        if alarm is not None:
            alarms.append(alarm)
    if misconfigured is not None:
        raise misconfigured
    return WitnessRound(alarms, unkeyed, unchecked)


async def record_alarm(store: EventStore, service: str, alarm: WitnessAlarm) -> None:
    log.error(
        "ledger of %s is inconsistent (first bad position %s): %s",
        alarm.origin,
        alarm.first_bad_position,
        alarm.problem,
    )
    event = LedgerInconsistencyDetected(
        origin=alarm.origin,
        held_size=alarm.held_size,
        checkpoint_size=alarm.checkpoint_size,
        first_bad_position=alarm.first_bad_position,
        problem=alarm.problem[:500],
    )
    new = NewEvent(
        event=event,
        metadata=EventMetadata(
            source=SERVICE_SOURCE,
            actor=WITNESS,
            occurred_at=datetime.now(UTC),
            correlation_id=uuid4(),
        ),
    )
    await store.append(f"ledger-{service}", [new], ANY_VERSION)


async def run_witness(
    deps: LedgerDeps,
    set_health: Callable[[bool], Coroutine[Any, Any, None]],
    stop: asyncio.Event,
    every: float,
) -> None:
    """Witness every log every ``every`` seconds until ``stop``."""
    healthy: bool | None = None
    unkeyed: list[str] = []
    misconfigured = ""
    while not stop.is_set():
        try:
            round_ = await witness_all(deps)
        except StorageConfigurationError as error:
            # Said once (not a traceback every round): it lasts until an operator acts.
            if str(error) != misconfigured:
                misconfigured = str(error)
                log.error("ledger witness cannot read the logs: %s", error)
            consistent = False
        except Exception as error:
            # By type and place, no traceback: the message may quote what it failed on.
            log.error("ledger witness round failed: %s", failure_text(error))
            consistent = False
        else:
            misconfigured = ""
            consistent = round_.consistent
            if round_.unkeyed != unkeyed:
                unkeyed = round_.unkeyed
                if unkeyed:
                    log.error(
                        "ledger witness has no public key for %s: their logs are not checked"
                        " (CASETRAIL_LEDGER_PUBLIC_KEYS, chart ledger.publicKeys)",
                        ", ".join(unkeyed),
                    )
        if consistent != healthy:
            healthy = consistent
            await set_health(healthy)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def _service(deps: LedgerDeps, service: str, field: str = "service") -> str:
    if service not in deps.directory.services:
        choices = ", ".join(deps.directory.services)
        raise invalid(field, f"unknown service {service!r}; one of {choices}")
    return service


async def _log(deps: LedgerDeps, service: str) -> LedgerStore:
    store = await deps.directory.log(service)
    if store is None:
        raise NotFound("ledger of service", service)
    return store


async def log_status(deps: LedgerDeps, service: str) -> LogStatus:
    service = _service(deps, service)
    store = await _log(deps, service)
    verifier = await deps.directory.verifier(service)
    origin = deps.directory.origin(service)
    stored = await store.latest_checkpoint()
    latest = None if stored is None else _signed_checkpoint(stored.note, verifier)
    return LogStatus(
        service,
        origin,
        latest,
        stored.note if stored is not None else "",
        await deps.witness.held(origin),
        verifier,
        await deps.witness.alarm(origin),
    )


def _signed_checkpoint(note: str, verifier: LogKeys | None) -> Checkpoint | None:
    """The checkpoint ``note`` signs (read unverified without the log's key); ``None`` when it
    is no checkpoint the log signed: one stored in the ledger's table that does not verify is
    what the witness raises its alarm on, and the status must still tell that alarm."""
    try:
        if verifier is None:
            return Checkpoint.parse(note.partition("\n\n")[0] + "\n")
        return open_checkpoint(note, verifier)
    except NoteError:
        return None


async def prove_event(deps: LedgerDeps, event_id: UUID, tree_size: int = 0) -> EventProof:
    """The inclusion proof of an event audit received, in the checkpoint audit verified (or
    in the tree of ``tree_size`` events, when one of that size was signed)."""
    recorded = await deps.find_event(event_id)
    if recorded is None:
        raise NotFound("event", str(event_id))
    proof = await event_proof(deps, recorded, tree_size)
    if proof is None:
        raise RuleBroken(
            "EVENT_NOT_YET_CHECKPOINTED",
            f"event {event_id} (position {recorded.position} of"
            f" {_service_of_record(recorded)}) is not yet in a checkpoint audit has verified",
        )
    return proof


def _service_of_record(recorded: RecordedEvent) -> str:
    return recorded.metadata.source.rsplit("/", 1)[-1]


async def event_proof(
    deps: LedgerDeps, recorded: RecordedEvent, tree_size: int = 0
) -> EventProof | None:
    """The proof for ``recorded`` (None when no verified checkpoint covers it yet). Raises
    ``RuleBroken`` LEDGER_MISMATCH if the log does not hold the event audit received."""
    service = _service_of_record(recorded)
    signed = await _signed_log(deps, service, tree_size)
    if signed is None:
        return None
    if recorded.position > signed.checkpoint.size:
        if tree_size:
            raise invalid(
                "tree_size", f"the event's position {recorded.position} is beyond {tree_size}"
            )
        return None
    return await _proved(signed, recorded)


@dataclass(frozen=True)
class _SignedLog:
    """A service's log and the checkpoint its proofs are given against."""

    service: str
    origin: str
    store: LedgerStore
    checkpoint: Checkpoint
    note: str


async def _signed_log(deps: LedgerDeps, service: str, tree_size: int = 0) -> _SignedLog | None:
    """The log with its checkpoint of ``tree_size`` events (verified), or with the latest one
    audit holds; None for no such log, or no checkpoint held yet."""
    if service not in deps.directory.services:
        return None
    store = await deps.directory.log(service)
    origin = deps.directory.origin(service)
    if store is None:
        return None
    if tree_size:
        note = await _note_of_size(store, tree_size)
        if note is None:
            raise invalid("tree_size", f"no checkpoint of {tree_size} events was signed")
        verifier = await deps.directory.verifier(service)
        if verifier is None:
            # Audit was given no key for this log: nothing it holds can be verified.
            raise RuleBroken(
                "CHECKPOINT_NOT_VERIFIED",
                f"audit holds no public key of the ledger of {service}: its checkpoint of"
                f" {tree_size} events cannot be verified",
                tree_size=str(tree_size),
            )
        try:
            checkpoint = open_checkpoint(note, verifier)
        except NoteError as error:
            # Stored in the ledger's table, not signed by the log's key: the witness's alarm.
            raise RuleBroken(
                "CHECKPOINT_NOT_VERIFIED",
                f"the checkpoint of {tree_size} events in the ledger of {service} does not"
                f" verify under its key: {error}",
                tree_size=str(tree_size),
            ) from None
        return _SignedLog(service, origin, store, checkpoint, note)
    held = await deps.witness.held(origin)
    if held is None:
        return None
    return _SignedLog(service, origin, store, Checkpoint(origin, held.size, held.root), held.note)


async def _proved(
    signed: _SignedLog,
    recorded: RecordedEvent,
    known: Mapping[SubtreeKey, Hash] | None = None,
) -> EventProof:
    """The event's inclusion proof in the signed tree, checked against the event audit holds."""
    checkpoint = signed.checkpoint
    try:
        proof = await prove_inclusion(signed.store, recorded.position, checkpoint.size, known)
        merkle.verify_inclusion(
            recorded.position - 1,
            checkpoint.size,
            merkle.leaf_hash(canonical_of_record(recorded)),
            proof.hashes,
            checkpoint.root,
        )
    except (merkle.ProofError, LookupError) as error:
        raise RuleBroken(
            "LEDGER_MISMATCH",
            f"the ledger of {signed.service} does not prove the event audit received at"
            f" position {recorded.position}: {error}",
            position=str(recorded.position),
        ) from None
    return EventProof(signed.service, signed.origin, proof, checkpoint, signed.note)


async def _note_of_size(store: LedgerStore, size: int) -> str | None:
    found = await store.checkpoints(after_size=size - 1, limit=1)
    return found[0].note if found and found[0].size == size else None


async def prove_log_consistency(
    deps: LedgerDeps, service: str, first_size: int, second_size: int
) -> tuple[list[bytes], bytes, bytes]:
    """Proof that the log's tree of ``second_size`` events extends the one of ``first_size``,
    with both roots."""
    service = _service(deps, service)
    if first_size < 0:
        raise invalid("first_size", "must not be negative")
    if second_size < 1:
        raise invalid("second_size", "must be at least 1")
    if first_size > second_size:
        raise invalid(
            "first_size",
            f"sizes in the wrong order: first_size {first_size} exceeds second_size {second_size}",
        )
    store = await _log(deps, service)
    current = await store.size()
    if second_size > current:
        raise invalid("second_size", f"{second_size} is beyond the log's current size {current}")
    proof = await prove_consistency(store, first_size, second_size)
    return proof, await root_of_log(store, first_size), await root_of_log(store, second_size)


EXPORT_PROOF_BATCH = 1000
"""Events of one log whose proofs share one read of the ledger's subtrees."""

OWN_CHECKPOINT_SECONDS = 5.0
"""How long an export waits for audit's own checkpoint signed on demand (and witnessed)
before it gives its own unproven records as pending instead."""


async def checkpoint_own_log(deps: LedgerDeps) -> None:
    """Sign audit's own log now, as its schedule would, and witness the checkpoint, so that
    proofs can be given against it at once. Bounded by ``OWN_CHECKPOINT_SECONDS``; a failure
    or a timeout is logged and leaves the checkpoint audit held (its records then pending)."""
    if deps.sign_own is None:
        return
    sign_own = deps.sign_own

    async def signed_and_witnessed() -> None:
        await sign_own()
        store = await deps.directory.log(SERVICE)
        verifier = await deps.directory.verifier(SERVICE)
        if store is None or verifier is None:
            return

        async def raised(alarm: WitnessAlarm) -> None:
            await record_alarm(deps.store, SERVICE, alarm)

        await deps.witness.witness(store, verifier, raised)

    try:
        await asyncio.wait_for(signed_and_witnessed(), OWN_CHECKPOINT_SECONDS)
    except Exception as error:
        # By type and place: the export goes on, its own records marked pending.
        log.error("export: no checkpoint of audit's own log: %s", failure_text(error))


class ExportProofs:
    """The ledger attributes of an export's events, given page by page: every event of one log
    is proved against the checkpoint audit held when its first event was proved (so one export
    never mixes tree sizes), and the subtrees the proofs of up to ``EXPORT_PROOF_BATCH`` events
    share are read once. Audit's own log is signed first when its newest checkpoint misses
    records (the export's own access record always is one); events of other logs past their
    newest checkpoint are marked pending (``ledgerpending``), each page's marks vouched for by
    a statement audit signs with its own log key (``ledgerpendingnote``); a log under the
    witness's inconsistency alarm is named so in its marks. The line of ``extent``'s carrier
    (the case's opening) gets audit's signed statement of the whole export
    (``ledgerexportnote``)."""

    def __init__(self, deps: LedgerDeps, case_id: str, extent: ExportExtent) -> None:
        self._deps = deps
        self._case_id = case_id
        self._extent = extent
        self._signed: dict[str, _SignedLog | None] = {}
        self._has_key: dict[str, bool] = {}
        self._alarms: dict[str, WitnessAlarm | None] = {}

    async def _alarm(self, origin: str) -> WitnessAlarm | None:
        # Read once per export, like the checkpoint its proofs use: one export, one story.
        if origin not in self._alarms:
            self._alarms[origin] = await self._deps.witness.alarm(origin)
        return self._alarms[origin]

    async def _keyed(self, service: str) -> bool:
        if service not in self._has_key:
            self._has_key[service] = (
                service in self._deps.directory.services
                and await self._deps.directory.verifier(service) is not None
            )
        return self._has_key[service]

    async def _signed_for(self, service: str) -> _SignedLog | None:
        if service not in self._signed:
            signed = await _signed_log(self._deps, service)
            if service == SERVICE and (
                signed is None or signed.checkpoint.size < await self._deps.store.last_position()
            ):
                await checkpoint_own_log(self._deps)
                signed = await _signed_log(self._deps, service)
            self._signed[service] = signed
        return self._signed[service]

    async def of(self, records: Sequence[RecordedEvent]) -> dict[UUID, dict[str, str]]:
        """The attributes of each of ``records``: its proof when a verified checkpoint covers
        it, else its pending mark (for a log audit knows)."""
        by_service: dict[str, list[RecordedEvent]] = {}
        for recorded in records:
            by_service.setdefault(_service_of_record(recorded), []).append(recorded)
        attributes: dict[UUID, dict[str, str]] = {}
        entries: list[PendingEntry] = []
        alarms: dict[str, int] = {}
        for service, events in by_service.items():
            signed = await self._signed_for(service)
            if await self._keyed(service):
                # (A log audit holds no key of never becomes provable here: left unmarked.)
                size = 0 if signed is None else signed.checkpoint.size
                origin = self._deps.directory.origin(service)
                alarm = await self._alarm(origin)
                pending = pending_attributes(
                    origin, size, self._deps.sign_every, None if alarm is None else _told(alarm)
                )
                for recorded in events:
                    if recorded.position > size:
                        attributes[recorded.event_id] = pending
                        entries.append(
                            PendingEntry(origin, size, recorded.position, str(recorded.event_id))
                        )
                if alarm is not None and any(e.origin == origin for e in entries):
                    alarms[origin] = alarm.first_bad_position or 0
            if signed is None:
                continue
            covered = [e for e in events if e.position <= signed.checkpoint.size]
            for first in range(0, len(covered), EXPORT_PROOF_BATCH):
                batch = covered[first : first + EXPORT_PROOF_BATCH]
                known = await inclusion_subtrees_of(
                    signed.store, [e.position for e in batch], signed.checkpoint.size
                )
                for recorded in batch:
                    try:
                        proof = await _proved(signed, recorded, known)
                    except RuleBroken as error:
                        # Exported without a proof: the offline check then names the event.
                        log.error("export: %s", error)
                        continue
                    attributes[recorded.event_id] = proof_attributes(
                        proof.origin,
                        proof.proof.position,
                        proof.proof.tree_size,
                        proof.proof.hashes,
                        proof.note,
                    )
        if entries:
            await self._vouch(records, attributes, alarms, entries)
        carrier = self._extent.carrier
        if carrier is not None and any(r.event_id == carrier for r in records):
            statement = ExportStatement.of(
                self._case_id, datetime.now(UTC), self._extent, self._deps.directory.origin
            )
            note = await self._signed_note(statement.body(), "the export's extent")
            if note is not None:
                attributes[carrier] = {**attributes.get(carrier, {}), EXPORT_NOTE_ATTRIBUTE: note}
        return attributes

    async def _signed_note(self, body: str, what: str) -> str | None:
        """``body`` signed with audit's own log key; None, logged, when it cannot be (no key,
        or signing failed): the export goes on, and ``casetrail verify`` fails it."""
        if self._deps.sign_note is None:
            log.error("export: no key of audit's own log: %s left unsigned", what)
            return None
        try:
            return await self._deps.sign_note(body)
        except Exception as error:
            log.error("export: %s left unsigned: %s", what, failure_text(error))
            return None

    async def _vouch(
        self,
        records: Sequence[RecordedEvent],
        attributes: dict[UUID, dict[str, str]],
        alarms: dict[str, int],
        entries: list[PendingEntry],
    ) -> None:
        """Put the page's signed statement of its pending events on its first pending line.
        Without it (no signing key, or signing failed) the marks are the exporter's word
        alone, and ``casetrail verify`` fails them: logged, the export goes on."""
        statement = PendingStatement(
            self._case_id, datetime.now(UTC), alarms, tuple(sorted(entries))
        )
        note = await self._signed_note(statement.body(), "pending marks")
        if note is None:
            return
        first = next(
            r for r in records if r.event_id in attributes and _is_pending(attributes[r.event_id])
        )
        attributes[first.event_id] = {**attributes[first.event_id], PENDING_NOTE_ATTRIBUTE: note}


def _is_pending(attributes: Mapping[str, str]) -> bool:
    return PENDING_ATTRIBUTE in attributes


def _told(alarm: WitnessAlarm) -> str:
    """The alarm as a pending mark names it: what the witness found, and where."""
    where = (
        ""
        if alarm.first_bad_position is None
        else f", first bad position {alarm.first_bad_position}"
    )
    return (
        f"audit's witness holds an inconsistency alarm on {alarm.origin} (checkpoint of"
        f" {alarm.checkpoint_size} events{where}): {alarm.problem[:500]}"
    )


async def published_keys(deps: LedgerDeps) -> list[tuple[str, str, str]]:
    """(service, origin, verifier key) of every log whose key is published, a log's keys in
    the order they signed, each as its keys-file line (with its range when it has one)."""
    keys: list[tuple[str, str, str]] = []
    for service in deps.directory.services:
        verifier = await deps.directory.verifier(service)
        if verifier is not None:
            schedule = schedule_of(verifier)
            keys.extend((service, schedule.name, str(key)) for key in schedule.keys)
    return keys
