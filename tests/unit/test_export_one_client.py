"""``verify_export`` and the client of an export: a case's export holds the events of the one
client the case was opened for. Each line proves its own event, so lines of another client's
trail (whole, from that client's own export) each verify: the case would pass as that
person's too."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from casetrail_platform.ledger.export import canonical_of_record, proof_attributes
from casetrail_platform.ledger.export_check import ExportVerification, verify_export
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.merkle import Hash, SubtreeKey, inclusion_proof, leaf_hash, root_of
from casetrail_platform.ledger.note import Checkpoint, origin_of
from events.catalog.base import CaseEvent, Role
from events.catalog_registry import default_registry
from events.cloudevents import to_structured
from events.envelope import Actor, EventMetadata, RecordedEvent
from tests.support.exported import opened, registered, with_extent

INTAKE = origin_of("agency", "intake")
AUDIT = origin_of("agency", "audit")
AT = datetime(2024, 3, 1, 9, tzinfo=UTC)


def recorded(position: int, stream: str, event: CaseEvent) -> RecordedEvent:
    return RecordedEvent(
        event_id=uuid4(),
        stream=stream,
        sequence=1,
        position=position,
        recorded_at=AT,
        event=event,
        metadata=EventMetadata(
            source="casetrail/intake",
            actor=Actor("desk-dana", Role.RECEPTIONIST),
            occurred_at=AT,
            correlation_id=uuid4(),
        ),
    )


async def intake_log(tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Intake's log of two clients, each registered and with a case, every line proven in its
    signed tree: [client-a, case-a, client-b, case-b]; the verifiers hold audit's key."""
    events = [
        recorded(1, "client-client-a", registered("client-a")),
        recorded(2, "case-case-a", opened("case-a", "client-a")),
        recorded(3, "client-client-b", registered("client-b")),
        recorded(4, "case-case-b", opened("case-b", "client-b")),
    ]
    leaves = [leaf_hash(canonical_of_record(event)) for event in events]

    def source(keys: Iterable[SubtreeKey]) -> dict[SubtreeKey, Hash]:
        return {(lv, i): root_of(leaves[i << lv : (i + 1) << lv]) for lv, i in keys}

    signer = FileSigner(INTAKE, tmp_path / "ledger.key")
    size = len(events)
    note = await signer.sign_checkpoint(Checkpoint(INTAKE, size, root_of(leaves)))
    lines = []
    for event in events:
        proof = inclusion_proof(event.position - 1, size, source)
        lines.append(
            to_structured(event) | proof_attributes(INTAKE, event.position, size, proof, note)
        )
    audit = FileSigner(AUDIT, tmp_path / "audit.key")
    return lines, {INTAKE: await signer.verifier(), AUDIT: await audit.verifier()}


async def verified(
    tmp_path: Path, lines: list[dict[str, Any]], verifiers: dict[str, Any]
) -> ExportVerification:
    """``lines`` verified, with audit's statement of their extent (whatever they hold: what
    is checked here is whose events they are)."""
    lines = [dict(line) for line in lines]
    audit = FileSigner(AUDIT, tmp_path / "audit.key")
    await with_extent(lines, audit, default_registry(), "case-a")
    text = "".join(json.dumps(line) + "\n" for line in lines)
    return verify_export(text, default_registry(), verifiers)


async def test_a_case_export_with_its_own_clients_events_verifies(tmp_path: Path) -> None:
    lines, verifiers = await intake_log(tmp_path)
    result = await verified(tmp_path, lines[:2], verifiers)
    assert (result.ok, result.verified, result.problems) == (True, 2, [])


async def test_another_clients_events_mixed_in_fail_naming_the_line(tmp_path: Path) -> None:
    lines, verifiers = await intake_log(tmp_path)
    client_a, case_a, client_b, _ = lines

    mixed = await verified(tmp_path, [client_a, case_a, client_b], verifiers)
    assert not mixed.ok
    assert mixed.problems == [
        f"line 3: event {client_b['id']} is of client client-b, but the case was opened for"
        " client client-a (line 2): an export holds one case and its client"
    ]
    # Without the case's own client among them, the other is named all the same.
    swapped = await verified(tmp_path, [case_a, client_b], verifiers)
    assert [problem.split(":")[0] for problem in swapped.problems] == ["line 2"]
    # Two clients and no opening in view: the export is of the first.
    two = await verified(tmp_path, [client_a, client_b], verifiers)
    assert two.problems == [
        f"line 2: event {client_b['id']} is of client client-b, but the export is of client"
        " client-a (line 1): an export holds one case and its client"
    ]
