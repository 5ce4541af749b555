"""Exports in a row, on both backends: audit signs its own log on demand, so the access records
of the exports themselves are proven; an event of another service recorded after its log's
newest checkpoint is marked pending, which `casetrail verify` reports apart (its own exit
status) under audit's signed statement of them, while a proof stripped from a covered line
still fails, and so does every line of a log stripped and marked pending without it."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.ledger.export import (
    CHECKPOINT_ATTRIBUTE,
    PENDING_ATTRIBUTE,
    PROOF_ATTRIBUTE,
)
from casetrail_platform.ledger.pending import PENDING_NOTE_ATTRIBUTE
from cli.ledger import PENDING_STATUS
from cli.rpc import command, eventually
from cli.walk.story import COORDINATOR
from tests.e2e.conftest import Casetrail
from tests.e2e.exports import (
    AUDITOR,
    audit_learned,
    context,
    keys_file,
    proven_export,
    verify,
)
from tests.e2e.support import new_case
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")

AUDIT_SOURCE = "casetrail/audit"
CORRECTED = "casetrail.client.date_of_birth_corrected"


async def export(casetrail: Casetrail, case_id: str) -> list[dict[str, Any]]:
    request = audit_pb2.ExportCaseRequest(context=context(), case_id=case_id)
    text = b"".join(
        [c.json_lines async for c in casetrail.stubs.as_(AUDITOR).audit.ExportCase(request)]
    )
    return [json.loads(line) for line in text.decode().splitlines()]


def corrections(count: int, lines: list[dict[str, Any]]) -> bool:
    return sum(1 for line in lines if line["type"] == CORRECTED) == count


async def test_exports_in_a_row_verify_and_later_events_are_pending(
    casetrail: Casetrail, tmp_path: Path
) -> None:
    case = await new_case(casetrail, "home_care")
    await audit_learned(casetrail, case.case_id)
    await proven_export(casetrail, case.case_id)
    keys = await keys_file(casetrail, tmp_path)

    # Two exports in a row: the second holds the first's access record and its own, recorded
    # after the newest scheduled checkpoint of audit's log; audit signs one for them.
    # (Audit's timeline shows its own records a moment after they are stored: the next
    # export holding the first's record is the second one here.)
    first = await export(casetrail, case.case_id)
    before = {line["id"] for line in first if line["source"] == AUDIT_SOURCE}
    second = await eventually(
        lambda: export(casetrail, case.case_id),
        lambda lines: before < {line["id"] for line in lines if line["source"] == AUDIT_SOURCE},
        what="the first export's access record in the timeline",
        patience=casetrail.patience,
    )
    own = [line for line in second if line["source"] == AUDIT_SOURCE]
    assert all(PROOF_ATTRIBUTE in line for line in own), [line["id"] for line in own]
    status, out, err = await verify(second, tmp_path / "second.jsonl", keys)
    assert status == 0, err
    assert f"{len(second)} of {len(second)} events verified" in out

    # An intake event past intake's newest checkpoint (intake signs on its own schedule: if it
    # signed in between, the correction is proven, and another is made).
    for attempt in range(10):
        await casetrail.stubs.as_(COORDINATOR).intake.CorrectClientDateOfBirth(
            intake_pb2.CorrectClientDateOfBirthRequest(
                context=command(key()),
                client_id=case.client_id,
                date_of_birth=f"1950-03-{15 + attempt}",
                reason="Identity card seen at the home visit",
            )
        )
        lines = await eventually(
            lambda: export(casetrail, case.case_id),
            partial(corrections, attempt + 1),
            what="audit to learn the correction",
            patience=casetrail.patience,
        )
        if PENDING_ATTRIBUTE in [li for li in lines if li["type"] == CORRECTED][-1]:
            break
    else:
        pytest.fail("intake signed every correction before it could be exported")
    pending = [i for i, line in enumerate(lines) if PENDING_ATTRIBUTE in line]
    assert all(
        lines[i]["source"] != AUDIT_SOURCE and PROOF_ATTRIBUTE not in lines[i] for i in pending
    )
    mark = json.loads(lines[pending[-1]][PENDING_ATTRIBUTE])
    assert int(lines[pending[-1]]["sourceposition"]) > mark["treesize"]
    status, out, err = await verify(lines, tmp_path / "pending.jsonl", keys)
    assert status == PENDING_STATUS, err
    assert status != 1
    assert not err
    assert f"{len(lines) - len(pending)} of {len(lines)} events verified" in out
    assert (
        f"{len(pending)} events recorded after their log's newest checkpoint: not yet provable;"
        " export again after the next checkpoint (at most" in out
    )
    assert f"audit's signed statement for case {case.case_id}" in out
    assert PENDING_NOTE_ATTRIBUTE in lines[pending[0]]

    # A covered line of the same stream (the client's registration) with its proof stripped
    # and a pending mark in its place is no pending line: the proven ones after it show it.
    registered = next(
        i
        for i, line in enumerate(lines)
        if line["type"] == "casetrail.client.registered" and PROOF_ATTRIBUTE in line
    )
    for name, marked in (("stripped", False), ("marked", True)):
        edited = [dict(line) for line in lines]
        del edited[registered][PROOF_ATTRIBUTE], edited[registered][CHECKPOINT_ATTRIBUTE]
        if marked:
            edited[registered][PENDING_ATTRIBUTE] = lines[pending[-1]][PENDING_ATTRIBUTE]
        status, out, err = await verify(edited, tmp_path / f"{name}.jsonl", keys)
        assert status == 1, (name, out)
        assert f"line {registered + 1}:" in err, (name, err)

    # Every intake line stripped of its proof and marked pending past no checkpoint leaves no
    # proven line of that log to compare with: audit's statement does not name them.
    edited = [dict(line) for line in lines]
    intake = [i for i, line in enumerate(lines) if line["source"] == "casetrail/intake"]
    mark = json.loads(lines[pending[-1]][PENDING_ATTRIBUTE]) | {"treesize": 0}
    for i in intake:
        edited[i].pop(PROOF_ATTRIBUTE, None)
        edited[i].pop(CHECKPOINT_ATTRIBUTE, None)
        edited[i].pop(PENDING_NOTE_ATTRIBUTE, None)
        edited[i][PENDING_ATTRIBUTE] = json.dumps(mark)
    status, out, err = await verify(edited, tmp_path / "all-intake.jsonl", keys)
    assert status == 1, out
    assert f"line {intake[0] + 1}:" in err, err
    assert "no statement signed by" in err, err
