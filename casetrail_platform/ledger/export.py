"""What the ledger adds to a case export, so that it can be checked offline (``export_check``).

Each line of an export is a CloudEvents JSON document; the ledger adds two extension attributes:

* ``ledgerproof``: JSON text ``{"log": origin, "position": n, "treesize": N, "proof": [base64
  hashes]}``, the RFC 9162 inclusion proof of the event (leaf ``position - 1``) in the tree of
  its service's log of ``treesize`` events;
* ``ledgercheckpoint``: the signed note of that tree (C2SP tlog-checkpoint), which the proof
  leads to;
* ``ledgerpending``, instead of both, on an event recorded after the newest checkpoint of its
  log that audit holds: JSON text ``{"log": origin, "treesize": N, "signevery": seconds}``,
  the size of that checkpoint (0: none yet) and how often the logs sign one, and ``alarm`` (the
  witness's finding) when audit's witness holds an inconsistency alarm on the log: then the
  event does not become provable with the next checkpoint, only once an operator dealt with
  the alarm. Such an event is not yet provable; it is never counted as verified, and
  ``export_check.verify_export`` accepts the mark only where it cannot hide a stripped proof:
  named pending by a statement audit signed (``ledgerpendingnote``,
  ``casetrail_platform.ledger.pending``), past the tree size, after every proven line of its
  stream, and naming the tree size the export's proofs of that log use.

Audit's signed statement of the export's extent (``ledgerexportnote``,
``casetrail_platform.ledger.export_note``) rides the case's opening: ``export_check`` requires
exactly one, so that an export cut at the end of a stream, or short of lines of a stream of
several cases, fails too.

A line shown with a part withheld from its reader carries none of these but
``casetrailredacted`` (the fields withheld, comma-separated): it is no longer the stored event,
so no proof leads from it to its log's root. ``export_check`` accepts it, as withheld, only
where audit's statement of the extent names it with the digest of the line
(``export_note.withheld_digest``).
"""

from __future__ import annotations

import base64
import json

from casetrail_platform.ledger.canonical import canonical_row
from events.envelope import RecordedEvent, to_micros

PROOF_ATTRIBUTE = "ledgerproof"
CHECKPOINT_ATTRIBUTE = "ledgercheckpoint"
PENDING_ATTRIBUTE = "ledgerpending"
REDACTED_ATTRIBUTE = "casetrailredacted"


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


def pending_attributes(
    origin: str, tree_size: int, sign_every: float, alarm: str | None = None
) -> dict[str, str]:
    """The mark of an event its log's newest checkpoint (of ``tree_size`` events) does not
    cover yet; ``alarm``: the inconsistency alarm audit's witness holds on the log."""
    document: dict[str, object] = {"log": origin, "treesize": tree_size, "signevery": sign_every}
    if alarm is not None:
        document["alarm"] = alarm
    return {PENDING_ATTRIBUTE: json.dumps(document, separators=(",", ":"))}
