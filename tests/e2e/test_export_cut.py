"""An export cut at its end, on both backends: audit signs, with every export, a statement of
its lines and of where each stream ends (``ledgerexportnote``, on the case's opening), so
`casetrail verify` fails, naming the stream, an export whose last lines of the case's stream,
of its access records, of its client or of a list's ``access-batch-…`` stream were cut; one
whose statement was removed, repeated, is of another case or signed by another key fails too;
the export as audit streamed it verifies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from casetrail_platform.ledger.export_note import EXPORT_NOTE_ATTRIBUTE
from casetrail_platform.ledger.keys import FileSigner
from cli.rpc import command, eventually, query
from cli.walk.story import COORDINATOR
from tests.e2e.conftest import Casetrail
from tests.e2e.exports import AUDITOR, audit_learned, context, keys_file, proven_export, verify
from tests.e2e.support import new_case
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")

Lines = list[dict[str, Any]]


def carrier(lines: Lines) -> int:
    (found,) = [i for i, line in enumerate(lines) if EXPORT_NOTE_ATTRIBUTE in line]
    return found


def last_of(lines: Lines, wanted: Callable[[dict[str, Any]], bool]) -> tuple[int, str]:
    """The line of the highest sequence among ``wanted`` lines (of one stream) and how
    `casetrail verify` names the stream."""
    chosen = [i for i, line in enumerate(lines) if wanted(line)]
    assert chosen, "no such line in the export"
    last = max(chosen, key=lambda i: int(lines[i]["sequence"]))
    line = lines[last]
    return last, f"stream {line['stream']} of {line['source'].rsplit('/', 1)[-1]}"


def without(lines: Lines, index: int) -> Lines:
    return [line for i, line in enumerate(lines) if i != index]


async def test_an_export_cut_at_its_end_fails_naming_the_stream(
    casetrail: Casetrail, tmp_path: Path
) -> None:
    other, case = [await new_case(casetrail, "home_care") for _ in range(2)]
    for case_id in (other.case_id, case.case_id):
        await audit_learned(casetrail, case_id)
    # Two contacts: planning's stream of the case goes on past its first event.
    view = pl.GetCaseViewRequest(context=query("coordination"), case_id=case.case_id)
    await eventually(
        lambda: casetrail.stubs.as_(COORDINATOR).planning.GetCaseView(view),
        what="planning to learn the case",
        patience=casetrail.patience,
    )
    for summary in ("Called about the flat", "Called again"):
        await casetrail.stubs.as_(COORDINATOR).planning.LogContact(
            pl.LogContactRequest(
                context=command(key()), case_id=case.case_id, kind="phone_call", summary=summary
            )
        )
    await casetrail.stubs.as_(AUDITOR).audit.RecordCaseloadAccess(
        audit_pb2.RecordCaseloadAccessRequest(
            context=context(),
            view=audit_pb2.CASELOAD_VIEW_CASELOADS,
            case_ids=[other.case_id, case.case_id],
        )
    )
    streams = (f"access-{case.case_id}", "client-", "access-batch-")
    contacts = "casetrail.contact.logged"
    lines = await eventually(
        lambda: proven_export(casetrail, case.case_id),
        lambda lines: (
            all(any(line["stream"].startswith(s) for line in lines) for s in streams)
            and sum(line["type"] == contacts for line in lines) == 2
        ),
        what="the export to hold the case's, access, client and access-batch streams, proven",
        patience=casetrail.patience,
    )
    keys = await keys_file(casetrail, tmp_path)
    path = tmp_path / "case.jsonl"

    status, out, err = await verify(lines, path, keys)
    assert status == 0, err
    assert f"{len(lines)} of {len(lines)} events verified" in out
    assert f"exported whole, as audit's signed statement for case {case.case_id}" in out
    note = lines[carrier(lines)][EXPORT_NOTE_ATTRIBUTE]
    assert lines[carrier(lines)]["type"] == "casetrail.case.opened"

    for wanted in (
        lambda line: line["stream"] == f"case-{case.case_id}" and line["type"] == contacts,
        lambda line: line["stream"] == f"access-{case.case_id}",
        lambda line: line["stream"].startswith("client-"),
        lambda line: line["stream"].startswith("access-batch-"),
    ):
        cut, stream = last_of(lines, wanted)
        status, _, err = await verify(without(lines, cut), path, keys)
        assert (status, stream in err) == (1, True), (stream, err)
        assert f"the export holds {len(lines) - 1} lines" in err, err

    removed = [dict(line) for line in lines]
    del removed[carrier(lines)][EXPORT_NOTE_ATTRIBUTE]
    status, _, err = await verify(removed, path, keys)
    assert (status, f"the export carries no {EXPORT_NOTE_ATTRIBUTE}" in err) == (1, True), err

    twice = [dict(line) for line in lines]
    second = next(i for i in range(len(lines)) if i != carrier(lines))
    twice[second][EXPORT_NOTE_ATTRIBUTE] = note
    status, _, err = await verify(twice, path, keys)
    first, then = sorted((second, carrier(lines)))
    repeated = (
        f"line {then + 1}: a second {EXPORT_NOTE_ATTRIBUTE} (the first is on line {first + 1})"
    )
    assert (status, repeated in err) == (1, True), err

    others = await proven_export(casetrail, other.case_id)
    swapped = [dict(line) for line in lines]
    swapped[carrier(lines)][EXPORT_NOTE_ATTRIBUTE] = others[carrier(others)][EXPORT_NOTE_ATTRIBUTE]
    status, _, err = await verify(swapped, path, keys)
    assert status == 1
    assert f"is of case {other.case_id}, not of case {case.case_id}" in err, err

    # The genuine statement signed again, under audit's name, by a key not audit's.
    body, signature = note.split("\n\n", 1)
    name = signature.split(" ", 2)[1]  # "— <name> <signature>"
    forger = FileSigner(name, tmp_path / "forger.key")
    forged = [dict(line) for line in lines]
    forged[carrier(lines)][EXPORT_NOTE_ATTRIBUTE] = await forger.sign_note(body + "\n")
    status, _, err = await verify(forged, path, keys)
    assert status == 1
    assert f"{EXPORT_NOTE_ATTRIBUTE}: the note carries no signature by {name}" in err, err
