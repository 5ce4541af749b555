"""Proofs inside a case export, and checking an export offline.

Each line of an export is a CloudEvents JSON document; the ledger adds two extension attributes:

* ``ledgerproof``: JSON text ``{"log": origin, "position": n, "treesize": N, "proof": [base64
  hashes]}``, the RFC 9162 inclusion proof of the event (leaf ``position - 1``) in the tree of
  its service's log of ``treesize`` events;
* ``ledgercheckpoint``: the signed note of that tree (C2SP tlog-checkpoint), which the proof
  leads to.

The leaf is recomputed from the line itself (``canonical_of_record``: the canonical bytes of
``casetrail_platform.ledger.canonical`` from the event's attributes and data, or, for an event
stored under an older schema version, from ``storedversion``/``storeddata``, which the decoder
has checked upcast to ``data``), so any change to a
line, to its proof or to the checkpoint fails verification, and a checkpoint is trusted only under a
public key the verifier got elsewhere (``casetrail ledger-keys``, the README, the data dir).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from casetrail_platform.bus.ordering import travels_under_one_key
from casetrail_platform.ledger.canonical import canonical_row
from casetrail_platform.ledger.merkle import ProofError, leaf_hash, verify_inclusion
from casetrail_platform.ledger.note import NoteError, Verifier, open_checkpoint
from events.envelope import RecordedEvent, to_micros
from events.errors import InvalidEventError
from events.registry import EventRegistry

PROOF_ATTRIBUTE = "ledgerproof"
CHECKPOINT_ATTRIBUTE = "ledgercheckpoint"


def canonical_of_record(recorded: RecordedEvent) -> bytes:
    """The canonical bytes of an event as its store holds it, from the record (read back from
    a store, the bus or an export). For an event stored under an older schema version, that is
    its stored form (the ``storedversion``/``storeddata`` extensions), not the upcast data."""
    metadata = recorded.metadata
    stored = recorded.stored_form
    version, data = (recorded.schema_version, recorded.data) if stored is None else stored
    return canonical_row(
        (
            recorded.position,
            str(recorded.event_id),
            recorded.stream,
            recorded.sequence,
            recorded.event_type,
            version,
            data,
            metadata.source,
            metadata.actor.user_id,
            metadata.actor.role.value,
            str(metadata.correlation_id),
            None if metadata.causation_id is None else str(metadata.causation_id),
            to_micros(metadata.occurred_at),
            to_micros(recorded.recorded_at),
            recorded.subject,
        )
    )


def proof_attributes(
    origin: str, position: int, tree_size: int, proof: list[bytes], note: str
) -> dict[str, str]:
    document = {
        "log": origin,
        "position": position,
        "treesize": tree_size,
        "proof": [base64.b64encode(item).decode() for item in proof],
    }
    return {
        PROOF_ATTRIBUTE: json.dumps(document, separators=(",", ":")),
        CHECKPOINT_ATTRIBUTE: note,
    }


@dataclass
class ExportVerification:
    lines: int = 0
    verified: int = 0
    problems: list[str] = field(default_factory=list)
    checkpoints: dict[str, int] = field(default_factory=dict)
    """The largest tree size seen per log."""

    @property
    def ok(self) -> bool:
        return not self.problems and self.lines > 0 and self.verified == self.lines


def verify_export(
    text: str, registry: EventRegistry, verifiers: Mapping[str, Verifier]
) -> ExportVerification:
    """Checks every line of an export: it decodes, carries a proof, its checkpoint is signed by
    the key of its log, and the proof leads from the event's own leaf to that root."""
    from events.cloudevents import from_structured, json_lines

    result = ExportVerification()
    whole = _WholeExport()
    for number, line in json_lines(text):
        if not line.strip():
            continue
        result.lines += 1
        problem = _verify_line(line, registry, verifiers, result, from_structured, whole, number)
        if problem is None:
            result.verified += 1
        else:
            result.problems.append(f"line {number}: {problem}")
    if result.lines == 0:
        result.problems.append("the export holds no events")
    result.problems.extend(whole.gaps())
    return result


@dataclass
class _WholeExport:
    """What only the export as a whole shows: each line proves its own event, so a line
    removed or repeated would leave every other line verified. A case's export holds each of
    its one-key streams (``travels_under_one_key``: the case's, its access records', its
    client's) whole, from sequence 1 up, so a missing line leaves a hole in one. (A cut at the
    very end of a stream leaves none: the export carries no signed count.) A list's reads of
    several cases share one ``access-batch-…`` stream, of which the export of one case holds
    only its own entries: no one-key stream, not checked for holes."""

    lines_by_id: dict[str, int] = field(default_factory=dict)
    sequences: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)

    def repeated(self, recorded: RecordedEvent, number: int) -> str | None:
        event_id = str(recorded.event_id)
        first = self.lines_by_id.setdefault(event_id, number)
        if first != number:
            return f"event {event_id} repeats line {first}"
        if travels_under_one_key(recorded.stream, recorded.subject):
            key = (recorded.metadata.source, recorded.stream)
            self.sequences.setdefault(key, {})[recorded.sequence] = number
        return None

    def gaps(self) -> list[str]:
        problems = []
        for (source, stream), lines in sorted(self.sequences.items()):
            missing = next((n for n in range(1, max(lines) + 1) if n not in lines), None)
            if missing is not None:
                problems.append(
                    f"stream {stream} of {source}: sequence {missing} is missing (the export"
                    f" holds {len(lines)} of its {max(lines)} events)"
                )
        return problems


def _verify_line(
    line: str,
    registry: EventRegistry,
    verifiers: Mapping[str, Verifier],
    result: ExportVerification,
    decode: Any,
    whole: _WholeExport,
    number: int,
) -> str | None:
    try:
        document = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg})"
    if not isinstance(document, dict):
        return "not a JSON object"
    try:
        recorded: RecordedEvent = decode(document, registry)
    except InvalidEventError as error:
        return f"not a casetrail CloudEvent ({error})"
    if (repeated := whole.repeated(recorded, number)) is not None:
        return repeated
    label = f"event {document.get('id')}"
    proof_text, note = document.get(PROOF_ATTRIBUTE), document.get(CHECKPOINT_ATTRIBUTE)
    if not isinstance(proof_text, str) or not isinstance(note, str):
        return f"{label} carries no {PROOF_ATTRIBUTE} and {CHECKPOINT_ATTRIBUTE}"
    try:
        proof = json.loads(proof_text)
        origin, position = str(proof["log"]), int(proof["position"])
        tree_size = int(proof["treesize"])
        hashes = [base64.b64decode(item, validate=True) for item in proof["proof"]]
    except (ValueError, KeyError, TypeError, binascii.Error):
        return f"{label}: {PROOF_ATTRIBUTE} is malformed"
    verifier = verifiers.get(origin)
    if verifier is None:
        return f"{label}: no public key for log {origin!r}"
    try:
        checkpoint = open_checkpoint(note, verifier)
    except NoteError as error:
        return f"{label}: checkpoint of {origin}: {error}"
    if checkpoint.size != tree_size:
        return (
            f"{label}: the proof is for {tree_size} events, the checkpoint signs {checkpoint.size}"
        )
    if position != recorded.position:
        return f"{label}: the proof is for position {position}, the event is at {recorded.position}"
    try:
        verify_inclusion(
            position - 1,
            tree_size,
            leaf_hash(canonical_of_record(recorded)),
            hashes,
            checkpoint.root,
        )
    except ProofError as error:
        return f"{label} (position {position} of {origin}): {error}"
    result.checkpoints[origin] = max(result.checkpoints.get(origin, 0), tree_size)
    return None
