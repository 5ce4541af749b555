"""The ledger through audit's API and the CLI, on both backends: checkpoints, proofs, an
export verified offline (and a tampered one refused), clear errors for bad requests."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.export import CHECKPOINT_ATTRIBUTE, PROOF_ATTRIBUTE
from casetrail_platform.ledger.note import Verifier, open_checkpoint
from cli.rpc import Person, command, eventually, query
from cli.walk.story import COORDINATOR, SOCIAL_WORKER
from events.catalog_registry import default_registry
from events.cloudevents import from_json_lines
from tests.e2e.conftest import Casetrail
from tests.e2e.exports import AUDITOR, SIGN_EVERY, audit_learned, context, proven_export
from tests.e2e.support import casetrail_cli, new_case

pytestmark = pytest.mark.asyncio(loop_scope="package")


def first_of_longer_stream(lines: list[dict[str, Any]]) -> int | None:
    """The line of the first event of a stream with more than one event in the export."""
    streams = Counter((line["source"], line["stream"]) for line in lines)
    return next(
        (
            i
            for i, line in enumerate(lines)
            if line["sequence"] == "1".zfill(19) and streams[line["source"], line["stream"]] > 1
        ),
        None,
    )


async def test_exported_events_carry_proofs_that_verify_offline(
    casetrail: Casetrail, tmp_path: Path
) -> None:
    case = await new_case(casetrail, "home_care")
    await audit_learned(casetrail, case.case_id)
    # Below, the first event of a stream of several is dropped: wait for such a stream, as
    # the case's events reach audit over the bus, not all by the time the first are proven.
    lines = await eventually(
        lambda: proven_export(casetrail, case.case_id),
        lambda lines: first_of_longer_stream(lines) is not None,
        what="an exported stream of more than one event",
        patience=casetrail.patience,
    )
    keys = await casetrail.stubs.as_(AUDITOR).audit.ListLedgerKeys(
        audit_pb2.ListLedgerKeysRequest(context=context())
    )
    assert {key.service for key in keys.keys} >= {"intake", "audit"}
    verifiers = {key.origin: Verifier.parse(key.verifier_key) for key in keys.keys}
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("".join(key.verifier_key + "\n" for key in keys.keys))

    # Each line's checkpoint is signed by its service's key; its proof leads to that root.
    for line in lines:
        proof = json.loads(line[PROOF_ATTRIBUTE])
        checkpoint = open_checkpoint(line[CHECKPOINT_ATTRIBUTE], verifiers[proof["log"]])
        assert checkpoint.size == proof["treesize"] >= proof["position"]

    export = tmp_path / "case.jsonl"
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))
    status, out, err = await casetrail_cli("verify", str(export), "--keys", str(keys_file))
    assert status == 0, err
    assert f"{len(lines)} of {len(lines)} events verified" in out

    opened_at = [i for i, line in enumerate(lines) if line["type"] == "casetrail.case.opened"]
    assert opened_at, f"no casetrail.case.opened in the export: {[li['type'] for li in lines]}"
    opened = opened_at[0]
    edited = [dict(line) for line in lines]
    edited[opened]["data"] = {**edited[opened]["data"], "referral_source": "forged"}
    proof = json.loads(lines[-1][PROOF_ATTRIBUTE])
    if proof["proof"]:
        proof["proof"][0] = base64.b64encode(b"\x00" * 32).decode()
    else:
        proof["position"] += 1
    edited[-1][PROOF_ATTRIBUTE] = json.dumps(proof)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("".join(json.dumps(line) + "\n" for line in edited))
    status, out, err = await casetrail_cli("verify", str(tampered), "--keys", str(keys_file))
    assert status == 1
    assert f"line {opened + 1}:" in err
    assert f"line {len(lines)}:" in err
    assert f"{len(lines) - 2} of {len(lines)} events verified" in out

    # Every other line still proves its event: the export as a whole shows what is missing.
    first_of_case = first_of_longer_stream(lines)
    assert first_of_case is not None, "no stream of more than one event in the export"
    dropped = [line for i, line in enumerate(lines) if i != first_of_case]
    repeated = [*lines, lines[0]]
    for name, changed, expected in (
        ("dropped", dropped, f"stream {lines[first_of_case]['stream']} of "),
        ("repeated", repeated, f"line {len(repeated)}: event {lines[0]['id']} repeats line 1"),
    ):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in changed))
        status, _, err = await casetrail_cli("verify", str(path), "--keys", str(keys_file))
        assert (status, expected in err) == (1, True), err

    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text(export.read_text()[:-40] + "\n")
    status, _, err = await casetrail_cli("verify", str(corrupt), "--keys", str(keys_file))
    assert status == 1
    assert f"line {len(lines)}: not valid JSON" in err


async def test_checkpoints_and_proofs_through_the_api(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "home_care")
    await audit_learned(casetrail, case.case_id)
    lines = await proven_export(casetrail, case.case_id)
    opened = next(line for line in lines if line["type"] == "casetrail.case.opened")

    answer = await casetrail.stubs.as_(AUDITOR).audit.GetLedgerCheckpoint(
        audit_pb2.GetLedgerCheckpointRequest(context=context(), service="intake")
    )
    verifier = Verifier.parse(answer.verifier_key)
    latest = open_checkpoint(answer.latest.signed_note, verifier)
    witnessed = open_checkpoint(answer.witnessed.signed_note, verifier)
    assert latest.size >= witnessed.size >= int(opened["sourceposition"])
    assert not answer.HasField("alarm")

    proof = await casetrail.stubs.as_(AUDITOR).audit.ProveEventInclusion(
        audit_pb2.ProveEventInclusionRequest(context=context(), event_id=opened["id"])
    )
    assert (proof.service, proof.position) == ("intake", int(opened["sourceposition"]))
    checkpoint = open_checkpoint(proof.checkpoint.signed_note, verifier)
    merkle.verify_inclusion(
        proof.position - 1, checkpoint.size, proof.leaf_hash, list(proof.proof), checkpoint.root
    )

    consistency = await casetrail.stubs.as_(AUDITOR).audit.ProveLogConsistency(
        audit_pb2.ProveLogConsistencyRequest(
            context=context(), service="intake", first_size=1, second_size=witnessed.size
        )
    )
    assert consistency.second_root == witnessed.root
    merkle.verify_consistency(
        1, witnessed.size, consistency.first_root, witnessed.root, list(consistency.proof)
    )


async def test_bad_ledger_requests_get_clear_errors(casetrail: Casetrail) -> None:
    audit = casetrail.stubs.as_(AUDITOR).audit

    async def refused(call: Any) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        return caught.value

    unknown = "0b7e4c1e-3f4a-4c1b-9d7e-000000000000"
    error = await refused(
        audit.ProveEventInclusion(
            audit_pb2.ProveEventInclusionRequest(context=context(), event_id=unknown)
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert unknown in (error.details() or "")

    error = await refused(
        audit.ProveEventInclusion(
            audit_pb2.ProveEventInclusionRequest(context=context(), event_id="not-an-id")
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "event_id" in (error.details() or "")

    def consistency(first: int, second: int, service: str = "intake") -> Any:
        return audit.ProveLogConsistency(
            audit_pb2.ProveLogConsistencyRequest(
                context=context(), service=service, first_size=first, second_size=second
            )
        )

    error = await refused(consistency(1, 10**9))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "second_size" in (error.details() or "")
    assert "beyond the log's current size" in (error.details() or "")
    error = await refused(consistency(5, 2))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "wrong order" in (error.details() or "")
    error = await refused(consistency(1, 2, service="payroll"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "service" in (error.details() or "")

    worker = casetrail.stubs.as_(Person("worker-1", "case_manager")).audit
    error = await refused(
        worker.ListLedgerKeys(audit_pb2.ListLedgerKeysRequest(context=query("direct_care")))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_export_holding_part_of_a_list_s_access_batch_verifies(
    casetrail: Casetrail, tmp_path: Path
) -> None:
    """A list's reads of several cases are one append to an ``access-batch-…`` stream: the
    export of one of them holds only its own entries of that stream, which is no hole."""
    first, second = [await new_case(casetrail, "home_care") for _ in range(2)]
    for case_id in (first.case_id, second.case_id):
        await audit_learned(casetrail, case_id)
    listed = await casetrail.stubs.as_(AUDITOR).audit.RecordCaseloadAccess(
        audit_pb2.RecordCaseloadAccessRequest(
            context=context(),
            view=audit_pb2.CASELOAD_VIEW_CASELOADS,
            case_ids=[first.case_id, second.case_id],
        )
    )
    assert listed.recorded == 2

    def batch_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [line for line in lines if line["stream"].startswith("access-batch-")]

    lines = await eventually(
        lambda: proven_export(casetrail, second.case_id),
        lambda lines: bool(batch_of(lines)),
        what="the export to hold the list's access, proven",
        patience=casetrail.patience,
    )
    assert [int(line["sequence"]) for line in batch_of(lines)] == [2]
    keys = await casetrail.stubs.as_(AUDITOR).audit.ListLedgerKeys(
        audit_pb2.ListLedgerKeysRequest(context=context())
    )
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("".join(key.verifier_key + "\n" for key in keys.keys))
    export = tmp_path / "case.jsonl"
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))
    status, out, err = await casetrail_cli("verify", str(export), "--keys", str(keys_file))
    assert status == 0, err
    assert f"{len(lines)} of {len(lines)} events verified" in out


async def test_an_export_of_text_holding_unicode_line_separators_verifies(
    casetrail: Casetrail, tmp_path: Path
) -> None:
    """Free text may hold U+2028 or U+2029 (no control characters the edge refuses; U+0085, a
    C1 control, is refused since 9ce16d7, and a stored one still exports as one line:
    ``test_cloudevents``): the export, exactly as audit streams it, is still one event per line
    for ``verify``."""
    case = await new_case(casetrail, "home_care")
    reason = "Knows the family\u2028and\u2029the street well"
    await casetrail.stubs.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(
            context=command(uuid.uuid4().hex),
            case_id=case.case_id,
            worker_id=SOCIAL_WORKER.user_id,
            reason=reason,
        )
    )
    request = audit_pb2.ExportCaseRequest(context=context(), case_id=case.case_id)

    tries: list[None] = []

    async def exported() -> bytes:
        # Spaced out as proven_export does: each export records an access, a new event.
        if tries:
            await asyncio.sleep(SIGN_EVERY * 2.5)
        tries.append(None)
        chunks = casetrail.stubs.as_(AUDITOR).audit.ExportCase(request)
        return b"".join([chunk.json_lines async for chunk in chunks])

    def proven(text: bytes) -> bool:
        lines = [json.loads(line) for line in text.split(b"\n") if line]
        return any(line["type"] == "casetrail.case.assigned" for line in lines) and all(
            PROOF_ATTRIBUTE in line for line in lines
        )

    text = await eventually(
        exported,
        proven,
        what="the assignment exported with its proof",
        patience=casetrail.patience,
    )
    assert reason in text.decode()  # as written, not escaped
    keys = await casetrail.stubs.as_(AUDITOR).audit.ListLedgerKeys(
        audit_pb2.ListLedgerKeysRequest(context=context())
    )
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("".join(key.verifier_key + "\n" for key in keys.keys))
    export = tmp_path / "case.jsonl"
    export.write_bytes(text)
    count = text.count(b"\n")
    status, out, err = await casetrail_cli("verify", str(export), "--keys", str(keys_file))
    assert status == 0, err
    assert f"{count} of {count} events verified" in out
    assert from_json_lines(text.decode(), default_registry())
