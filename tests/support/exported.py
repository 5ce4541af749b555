"""An export's lines built outside the ledger, over test events (``sample_events.note``): a
case's notes as intake's log recorded them, and a line with its inclusion proof in the tree of
the log's first events, and audit's statement of an export's extent, for tests of what
`casetrail verify` makes of an export."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from casetrail_platform.ledger.export import canonical_of_record, proof_attributes
from casetrail_platform.ledger.export_check import ExportVerification, verify_export
from casetrail_platform.ledger.export_note import (
    EXPORT_NOTE_ATTRIBUTE,
    ExportExtent,
    ExportStatement,
)
from casetrail_platform.ledger.keys import CheckpointSigner, FileSigner
from casetrail_platform.ledger.merkle import Hash, SubtreeKey, inclusion_proof, leaf_hash, root_of
from casetrail_platform.ledger.note import Checkpoint
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseOpened, PresentingNeed, ReferralSource, ReferralSourceKind
from events.catalog.clients import ClientRegistered, PersonName
from events.catalog.values import NeedCategory
from events.catalog_registry import default_registry
from events.cloudevents import from_structured, to_structured
from events.envelope import Actor, EventMetadata, RecordedEvent
from events.registry import EventRegistry
from tests.support.sample_events import note


def case_notes(count: int) -> list[RecordedEvent]:
    """``count`` notes on case-1, at positions (and sequences) 1 to ``count`` of intake's log."""
    events = []
    for position in range(1, count + 1):
        new = note("case-1", f"visit {position}")
        events.append(
            RecordedEvent(
                event_id=new.event_id,
                stream="case-case-1",
                sequence=position,
                position=position,
                recorded_at=datetime.now(UTC),
                event=new.event,
                metadata=dataclasses.replace(new.metadata, source="casetrail/intake"),
            )
        )
    return events


def tree_root(events: list[RecordedEvent], size: int) -> Hash:
    """The root of the tree of the log's first ``size`` events."""
    return root_of([leaf_hash(canonical_of_record(recorded)) for recorded in events[:size]])


def proven_line(
    events: list[RecordedEvent], recorded: RecordedEvent, origin: str, size: int, note_text: str
) -> dict[str, Any]:
    """``recorded``'s export line, proven in the tree of the first ``size`` of ``events`` (the
    log) under the signed checkpoint ``note_text``."""
    leaves = [leaf_hash(canonical_of_record(each)) for each in events]

    def source(keys: Iterable[SubtreeKey]) -> dict[SubtreeKey, Hash]:
        return {(lv, i): root_of(leaves[i << lv : (i + 1) << lv]) for lv, i in keys}

    proof = inclusion_proof(recorded.position - 1, size, source)
    return to_structured(recorded) | proof_attributes(
        origin, recorded.position, size, proof, note_text
    )


async def with_extent(
    lines: list[dict[str, Any]], audit: CheckpointSigner, registry: EventRegistry, case_id: str
) -> None:
    """Audit's signed statement of the extent of ``lines`` (``audit``: audit's log key) put on
    the line of the case's opening, else on the first, as audit's ExportCase does."""
    records = [record_of(line, registry) for line in lines]
    extent = ExportExtent()
    for recorded in records:
        extent.add(recorded)
    agency = audit.name.rsplit("/", 1)[0]
    statement = ExportStatement.of(
        case_id, datetime.now(UTC), extent, lambda service: f"{agency}/{service}"
    )
    carrier = next(i for i, r in enumerate(records) if r.event_id == extent.carrier)
    lines[carrier][EXPORT_NOTE_ATTRIBUTE] = await audit.sign_note(statement.body())


def record_of(line: dict[str, Any], registry: EventRegistry) -> RecordedEvent:
    """The event of an export's line, its ledger attributes aside."""
    return from_structured({k: v for k, v in line.items() if not k.startswith("ledger")}, registry)


def registered(client_id: str) -> ClientRegistered:
    return ClientRegistered(client_id=client_id, name=PersonName(given_names="Ada"))


def opened(case_id: str, client_id: str) -> CaseOpened:
    return CaseOpened(
        case_id=case_id,
        client_id=client_id,
        referral_source=ReferralSource(kind=ReferralSourceKind.FAMILY),
        presenting_needs=(PresentingNeed(category=NeedCategory.FOOD),),
    )


AT = datetime(2024, 3, 1, 9, tzinfo=UTC)
"""When the events of ``logged`` logs were recorded and occurred."""


def logged(source: str, entries: list[tuple[str, int, CaseEvent]]) -> list[RecordedEvent]:
    """A service's log: (stream, sequence, event) at positions 1, 2, …"""
    return [
        RecordedEvent(
            event_id=uuid4(),
            stream=stream,
            sequence=sequence,
            position=position,
            recorded_at=AT,
            event=event,
            metadata=EventMetadata(
                source=f"casetrail/{source}",
                actor=Actor("desk-dana", Role.RECEPTIONIST),
                occurred_at=AT,
                correlation_id=uuid4(),
            ),
        )
        for position, (stream, sequence, event) in enumerate(entries, 1)
    ]


async def signed_lines(
    tmp_path: Path, origin: str, log: list[RecordedEvent], exported: list[RecordedEvent]
) -> tuple[list[dict[str, Any]], Any]:
    signer = FileSigner(origin, tmp_path / f"{origin.rsplit('/', 1)[-1]}.key")
    note = await signer.sign_checkpoint(Checkpoint(origin, len(log), tree_root(log, len(log))))
    return [proven_line(log, r, origin, len(log), note) for r in exported], await signer.verifier()


async def verified_export(
    tmp_path: Path, origin: str, log: list[RecordedEvent], exported: list[RecordedEvent]
) -> ExportVerification:
    """What `casetrail verify` makes of ``exported`` as its lines stand, each proven in
    ``origin``'s ``log``, with audit's statement of their extent (audit's log: ``origin``'s
    agency's)."""
    lines, key = await signed_lines(tmp_path, origin, log, exported)
    audit = FileSigner(f"{origin.rsplit('/', 1)[0]}/audit", tmp_path / "audit.key")
    case_id = next(r.subject for r in exported if r.event.subject_field == "case_id")
    await with_extent(lines, audit, default_registry(), case_id)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    return verify_export(
        text, default_registry(), {origin: key, audit.name: await audit.verifier()}
    )
