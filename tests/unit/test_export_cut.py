"""``verify_export`` and audit's signed statement of an export's extent (``ledgerexportnote``):
an export cut at the end of the case's stream, of its access records, of its client or of a
list's ``access-batch-…`` stream fails naming the stream (each remaining line still proves its
event); so does one whose statement is missing, repeated, of another case, signed by another
key, or naming another agency's logs. Built outside the ledger: intake's and audit's logs, each
signed whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from casetrail_platform.ledger.export_check import ExportVerification, verify_export
from casetrail_platform.ledger.export_note import (
    EXPORT_NOTE_ATTRIBUTE,
    HEADER,
    MAX_STREAMS,
    ExportExtent,
    ExportStatement,
)
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import Checkpoint, NoteError, origin_of, parse_verifiers
from events.catalog.access import AccessPurpose, RecordAccessed, RecordSection
from events.catalog.base import Role
from events.catalog.cases import CaseReopened
from events.catalog_registry import default_registry
from tests.support.exported import (
    AT,
    logged,
    opened,
    proven_line,
    record_of,
    registered,
    signed_lines,
    tree_root,
    with_extent,
)

AGENCY = "agency"
INTAKE, AUDIT = origin_of(AGENCY, "intake"), origin_of(AGENCY, "audit")
BATCH = f"access-batch-{uuid4().hex}"


def accessed(case_id: str) -> RecordAccessed:
    return RecordAccessed(
        case_id=case_id,
        accessor_id="auditor-ann",
        accessor_role=Role.AUDITOR,
        purpose=AccessPurpose.CONFIDENTIALITY_REVIEW,
        sections=(RecordSection.PLAN,),
        rule="auditor",
        policy_version="test",
    )


async def export(tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Case-1's export as audit makes it, and the verifiers: intake's client and case streams
    (reopened: its stream ends at 2), its access records; audit's access records and its
    entry of a list's read of case-0 and case-1."""
    intake = logged(
        "intake",
        [
            ("client-client-1", 1, registered("client-1")),
            ("case-case-1", 1, opened("case-1", "client-1")),
            ("access-case-1", 1, accessed("case-1")),
            ("case-case-1", 2, CaseReopened(case_id="case-1", reason="moved back")),
        ],
    )
    audit = logged(
        "audit",
        [
            ("access-case-1", 1, accessed("case-1")),
            (BATCH, 1, accessed("case-0")),
            (BATCH, 2, accessed("case-1")),
            ("access-case-1", 2, accessed("case-1")),
        ],
    )
    case = [r for r in audit if r.subject == "case-1"]
    intake_lines, intake_key = await signed_lines(tmp_path, INTAKE, intake, intake)
    audit_lines, audit_key = await signed_lines(tmp_path, AUDIT, audit, case)
    lines = intake_lines + audit_lines
    await with_extent(
        lines, FileSigner(AUDIT, tmp_path / "audit.key"), default_registry(), "case-1"
    )
    return lines, {INTAKE: intake_key, AUDIT: audit_key}


def verified(lines: list[dict[str, Any]], verifiers: dict[str, Any]) -> ExportVerification:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    return verify_export(text, default_registry(), verifiers)


def carrier(lines: list[dict[str, Any]]) -> int:
    (found,) = [i for i, line in enumerate(lines) if EXPORT_NOTE_ATTRIBUTE in line]
    return found


async def test_an_intact_export_verifies_its_statement_riding_the_case_s_opening(
    tmp_path: Path,
) -> None:
    lines, verifiers = await export(tmp_path)
    result = verified(lines, verifiers)
    assert (result.ok, result.verified, result.problems) == (True, 7, [])
    assert result.extent is not None
    assert result.extent[0] == "case-1"
    assert lines[carrier(lines)]["type"] == "casetrail.case.opened"


@pytest.mark.parametrize(
    ("stream", "problem"),
    [
        ("case-case-1", "stream case-case-1 of intake ends at sequence 1, audit's statement"),
        ("access-case-1", "stream access-case-1 of audit ends at sequence 1, audit's statement"),
        ("client-client-1", "stream client-client-1 of intake is missing"),
        (BATCH, f"stream {BATCH} of audit is missing: audit's statement of the export"),
    ],
    # BATCH holds a random uuid: stable ids keep the test's id the same from run to run.
    ids=["case", "access", "client", "batch"],
)
async def test_an_export_cut_at_the_end_of_a_stream_fails_naming_it(
    tmp_path: Path, stream: str, problem: str
) -> None:
    lines, verifiers = await export(tmp_path)
    last = max(
        (i for i, line in enumerate(lines) if line["stream"] == stream),
        key=lambda i: int(lines[i]["sequence"]),
    )
    cut = [line for i, line in enumerate(lines) if i != last]
    result = verified(cut, verifiers)
    assert not result.ok
    assert result.verified == len(cut)  # every remaining line proves its event
    assert any(problem in p for p in result.problems), result.problems
    said = f"audit's statement of the export (line {carrier(cut) + 1})"
    assert f"the export holds 6 lines, {said} 7: lines were removed or added" in result.problems


async def test_a_list_s_entry_removed_from_the_middle_of_the_export_fails(tmp_path: Path) -> None:
    # A stream of several cases whose line is not the export's last: the count tells.
    lines, verifiers = await export(tmp_path)
    batch = [line for line in lines if line["stream"] == BATCH]
    lines.insert(2, lines.pop(lines.index(batch[0])))
    result = verified(lines, verifiers)
    assert result.ok, result.problems
    del lines[2]
    result = verified(lines, verifiers)
    assert f"stream {BATCH} of audit is missing" in " ".join(result.problems)


async def test_without_its_statement_an_export_fails(tmp_path: Path) -> None:
    lines, verifiers = await export(tmp_path)
    del lines[carrier(lines)][EXPORT_NOTE_ATTRIBUTE]
    result = verified(lines, verifiers)
    assert not result.ok
    assert not result.only_pending
    assert result.verified == len(lines)
    assert result.problems == [
        f"the export carries no {EXPORT_NOTE_ATTRIBUTE}, audit's signed statement of its extent,"
        " so lines cut from its end would not show: export it again (audit signs one with every"
        " export while its own log's key answers)"
    ]


async def test_two_statements_fail(tmp_path: Path) -> None:
    lines, verifiers = await export(tmp_path)
    lines[5][EXPORT_NOTE_ATTRIBUTE] = lines[carrier(lines)][EXPORT_NOTE_ATTRIBUTE]
    result = verified(lines, verifiers)
    assert result.problems == [
        f"line 6: a second {EXPORT_NOTE_ATTRIBUTE} (the first is on line 2): an export carries one"
    ]


async def test_a_statement_of_another_case_fails(tmp_path: Path) -> None:
    lines, verifiers = await export(tmp_path)
    others = [dict(line) for line in lines]
    await with_extent(
        others, FileSigner(AUDIT, tmp_path / "audit.key"), default_registry(), "case-2"
    )
    lines[carrier(lines)][EXPORT_NOTE_ATTRIBUTE] = others[carrier(others)][EXPORT_NOTE_ATTRIBUTE]
    result = verified(lines, verifiers)
    assert result.problems == [
        "audit's statement of the export (line 2) is of case case-2, not of case case-1"
    ]


@pytest.mark.parametrize("signer", ["forger", "other agency"])
async def test_a_statement_not_signed_by_audit_of_the_export_s_agency_fails(
    tmp_path: Path, signer: str
) -> None:
    lines, verifiers = await export(tmp_path)
    del lines[carrier(lines)][EXPORT_NOTE_ATTRIBUTE]
    if signer == "forger":  # audit's name, another key
        key = FileSigner(AUDIT, tmp_path / "forger.key")
    else:  # another agency's audit (naming its own logs), whose key the verifier also holds
        key = FileSigner(origin_of("other", "audit"), tmp_path / "other.key")
        verifiers[key.name] = await key.verifier()
    await with_extent(lines, key, default_registry(), "case-1")
    result = verified(lines, verifiers)
    assert not result.ok
    assert result.verified == len(lines)
    assert result.problems == [
        f"line 2: {EXPORT_NOTE_ATTRIBUTE}: the note carries no signature by {AUDIT}"
    ]


async def test_a_statement_naming_streams_the_export_lacks_or_not_its_own_fails(
    tmp_path: Path,
) -> None:
    lines, verifiers = await export(tmp_path)
    records = [record_of(line, default_registry()) for line in lines]
    extent = ExportExtent()
    for recorded in records:
        extent.add(recorded)
    extent.streams[("planning", "case-case-1")] = (3, 3)
    extent.one_key.add(("planning", "case-case-1"))
    del extent.streams[("intake", "access-case-1")]
    statement = ExportStatement.of("case-1", AT, extent, lambda service: origin_of(AGENCY, service))
    audit = FileSigner(AUDIT, tmp_path / "audit.key")
    lines[carrier(lines)][EXPORT_NOTE_ATTRIBUTE] = await audit.sign_note(statement.body())
    problems = verified(lines, verifiers).problems
    said = "audit's statement of the export (line 2)"
    assert problems == [
        f"stream access-case-1 of intake is exported, but {said} does not name it",
        f"stream case-case-1 of planning is missing: {said} ends it at 3",
    ]


async def test_after_audit_s_key_rotated_an_earlier_export_still_verifies(
    tmp_path: Path,
) -> None:
    """Audit signed the statement and its checkpoint of 4 events with its first key; the
    keys file now hands its log over to a new key at size 10: the key valid for the size the
    export's audit lines are proven against still vouches for the export (a court's copy
    needs no new export after a routine rotation), and one retired before that size does not."""
    lines, verifiers = await export(tmp_path)
    first = verifiers[AUDIT]
    new = await FileSigner(AUDIT, tmp_path / "audit-2.key").verifier()
    at = "2025-01-01T00:00:00Z"
    rotated = parse_verifiers(f"{first}\n{new} from=10 at={at}\n")[AUDIT]
    result = verified(lines, {**verifiers, AUDIT: rotated})
    assert (result.ok, result.problems) == (True, [])

    retired_before = parse_verifiers(f"{first}\n{new} from=3 at={at}\n")[AUDIT]
    result = verified(lines, {**verifiers, AUDIT: retired_before})
    assert any(
        p.startswith(f"line {carrier(lines) + 1}: {EXPORT_NOTE_ATTRIBUTE}: ")
        for p in result.problems
    ), result.problems


def test_a_case_of_more_streams_than_the_bound_is_stated_by_its_lines_alone() -> None:
    extent = ExportExtent()
    extent.lines = MAX_STREAMS + 1
    extent.streams = {("audit", f"access-batch-{i:032x}"): (1, 1) for i in range(MAX_STREAMS + 1)}
    statement = ExportStatement.of("case-1", AT, extent, lambda s: origin_of(AGENCY, s))
    assert (statement.ends, statement.counts, statement.lines) == ({}, {}, MAX_STREAMS + 1)
    assert ExportStatement.parse(statement.body()) == statement

    within = ExportExtent()
    within.streams = dict(list(extent.streams.items())[:MAX_STREAMS])
    body = ExportStatement.of("case-1", AT, within, lambda s: origin_of(AGENCY, s)).body()
    assert len(ExportStatement.parse(body).counts) == MAX_STREAMS
    longer = body + f"count {AUDIT} access-batch-{'f' * 32} 1\n"
    with pytest.raises(NoteError, match="at most"):
        ExportStatement.parse(longer)
    twice = f"count {AUDIT} {BATCH} 1\n" * 2
    with pytest.raises(NoteError, match=f"names stream {BATCH} of {AUDIT} twice"):
        ExportStatement.parse(f"{HEADER}\ncase case-1\nat {AT.isoformat()}\nlines 2\n{twice}")


async def test_past_the_bound_a_line_swapped_for_a_later_one_fails_on_the_one_key_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case of more streams than the bound (every list read that showed it is an
    ``access-batch-…`` stream of its own: a long-lived case passes it): its statement still
    ends each of its one-key streams, leaving out only the other streams' counts. Stated by
    its lines alone, the case's last event cut and an access record of a later export put in
    its place (the line count kept) verified."""
    monkeypatch.setattr("casetrail_platform.ledger.export_note.MAX_STREAMS", 4)  # of 5
    lines, verifiers = await export(tmp_path)
    statement = ExportStatement.parse(
        lines[carrier(lines)][EXPORT_NOTE_ATTRIBUTE].split("\n\n")[0] + "\n"
    )
    assert statement.counts == {}
    assert len(statement.ends) == 4
    assert (verified(lines, verifiers).ok, verified(lines, verifiers).problems) == (True, [])

    # Audit's log as a later export proves it: one more access record of the case.
    later = logged(
        "audit",
        [
            ("access-case-1", 1, accessed("case-1")),
            (BATCH, 1, accessed("case-0")),
            (BATCH, 2, accessed("case-1")),
            ("access-case-1", 2, accessed("case-1")),
            ("access-case-1", 3, accessed("case-1")),
        ],
    )
    audit = FileSigner(AUDIT, tmp_path / "audit.key")
    note = await audit.sign_checkpoint(Checkpoint(AUDIT, 5, tree_root(later, 5)))
    added = proven_line(later, later[-1], AUDIT, 5, note)
    reopened = next(i for i, line in enumerate(lines) if line["type"] == "casetrail.case.reopened")
    swapped = [line for i, line in enumerate(lines) if i != reopened] + [added]

    result = verified(swapped, verifiers)
    assert not result.ok
    assert result.verified == len(swapped)  # every line proves its event
    said = f"audit's statement of the export (line {carrier(swapped) + 1})"
    assert result.problems == [
        f"stream access-case-1 of audit goes on to sequence 3, past {said}'s end",
        f"stream case-case-1 of intake ends at sequence 1, {said} at 2: its last lines were cut",
    ]
