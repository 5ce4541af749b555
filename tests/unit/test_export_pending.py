"""`verify_export` and events marked ``ledgerpending``: reported apart, never verified, and a
mark that could hide a stripped proof fails (a tree of a case's notes signed at size 2): one no
statement signed by audit's log key names, too."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.ledger.export import (
    CHECKPOINT_ATTRIBUTE,
    PENDING_ATTRIBUTE,
    PROOF_ATTRIBUTE,
    pending_attributes,
)
from casetrail_platform.ledger.export_check import ExportVerification, verify_export
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import Checkpoint, NoteError, origin_of
from casetrail_platform.ledger.pending import (
    MAX_ALARMS,
    MAX_ENTRIES,
    PENDING_NOTE_ATTRIBUTE,
    PendingEntry,
    PendingStatement,
)
from casetrail_platform.limits import MAX_EVENT_BYTES
from events.cloudevents import to_structured
from events.envelope import RecordedEvent
from services.audit.entrypoints.requests import MAX_PAGE_SIZE
from tests.support.exported import case_notes, proven_line, tree_root, with_extent
from tests.support.sample_events import sample_registry

ORIGIN = origin_of("agency", "intake")
AUDIT = origin_of("agency", "audit")
SIGNED = 2
"""Events of the log the checkpoint covers; the third is pending."""


async def statement(
    tmp_path: Path,
    entries: list[tuple[int, RecordedEvent]],
    alarms: dict[str, int] | None = None,
    key: str = "audit.key",
) -> str:
    """Audit's signed statement naming ``entries`` (tree size, event) of intake's log pending."""
    signer = FileSigner(AUDIT, tmp_path / key)
    named = PendingStatement(
        "case-1",
        datetime.now(UTC),
        alarms or {},
        tuple(PendingEntry(ORIGIN, size, e.position, str(e.event_id)) for size, e in entries),
    )
    return await signer.sign_note(named.body())


async def export(tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The three lines (two proven in the tree of two, the third pending and named so by
    audit's signed statement), and the verifiers."""
    signer = FileSigner(ORIGIN, tmp_path / "ledger.key")
    events = case_notes(3)
    note_text = await signer.sign_checkpoint(Checkpoint(ORIGIN, SIGNED, tree_root(events, SIGNED)))
    lines = []
    for recorded in events:
        if recorded.position <= SIGNED:
            line = proven_line(events, recorded, ORIGIN, SIGNED, note_text)
        else:
            line = to_structured(recorded) | pending_attributes(ORIGIN, SIGNED, 5.0)
            line[PENDING_NOTE_ATTRIBUTE] = await statement(tmp_path, [(SIGNED, recorded)])
        lines.append(line)
    audit = FileSigner(AUDIT, tmp_path / "audit.key")
    await with_extent(lines, audit, sample_registry(), "case-1")
    return lines, {ORIGIN: await signer.verifier(), AUDIT: await audit.verifier()}


def verified(lines: list[dict[str, Any]], verifiers: dict[str, Any]) -> ExportVerification:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    return verify_export(text, sample_registry(), verifiers)


async def test_a_pending_event_is_reported_apart_and_never_verified(tmp_path: Path) -> None:
    lines, verifiers = await export(tmp_path)
    result = verified(lines, verifiers)
    assert (result.verified, result.pending, result.problems) == (2, 1, [])
    assert result.only_pending
    assert not result.ok
    assert result.sign_every == 5.0


def stripped(line: dict[str, Any]) -> None:
    del line[PROOF_ATTRIBUTE], line[CHECKPOINT_ATTRIBUTE]


def stripped_and_marked(line: dict[str, Any]) -> None:
    stripped(line)
    line |= pending_attributes(ORIGIN, SIGNED, 5.0)


def marked_below(line: dict[str, Any]) -> None:
    stripped(line)
    line |= pending_attributes(ORIGIN, 0, 5.0)


def other_log(line: dict[str, Any]) -> None:
    line[PENDING_ATTRIBUTE] = pending_attributes(origin_of("agency", "audit"), 0, 5.0)[
        PENDING_ATTRIBUTE
    ]


def other_size(line: dict[str, Any]) -> None:
    line |= pending_attributes(ORIGIN, 1, 5.0)


def malformed(line: dict[str, Any]) -> None:
    line[PENDING_ATTRIBUTE] = '{"log": "x"}'


@pytest.mark.parametrize(
    ("line", "change", "problem"),
    [
        (1, stripped, "carries no ledgerproof"),
        (1, stripped_and_marked, "position 2 is in the checkpoint of 2 events"),
        # Marked past no checkpoint, before a proven event of its stream (and another size).
        (1, marked_below, "proves events of"),
        (0, marked_below, "proves events of"),
        (2, other_log, "not one of intake"),
        (2, other_size, "in its tree of 2"),
        (2, malformed, "ledgerpending is malformed"),
    ],
)
async def test_a_mark_that_could_hide_a_stripped_proof_fails(
    tmp_path: Path, line: int, change: Any, problem: str
) -> None:
    lines, verifiers = await export(tmp_path)
    change(lines[line])
    result = verified(lines, verifiers)
    assert not result.ok
    assert not result.only_pending
    assert any(p.startswith(f"line {line + 1}:") and problem in p for p in result.problems), (
        result.problems
    )


async def test_a_pending_event_before_a_proven_one_of_its_stream_fails(tmp_path: Path) -> None:
    # The pending line's attributes are not proven: given an earlier sequence of its stream
    # than a proven line's, it is one the log's proofs skipped.
    lines, verifiers = await export(tmp_path)
    lines[2]["sequence"] = "1".zfill(19)
    result = verified(lines, verifiers)
    assert not result.ok
    assert not result.only_pending
    assert any(
        p.startswith("line 3:") and "a later event of stream case-case-1 is proven" in p
        for p in result.problems
    ), result.problems


async def test_every_line_of_a_log_stripped_and_marked_pending_without_a_statement_fails(
    tmp_path: Path,
) -> None:
    # The whole log's lines marked pending past no checkpoint: no proven line of the log is
    # left to compare with, only audit's signature tells.
    lines, verifiers = await export(tmp_path)
    for line in lines:
        line.pop(PROOF_ATTRIBUTE, None), line.pop(CHECKPOINT_ATTRIBUTE, None)
        line.pop(PENDING_NOTE_ATTRIBUTE, None)
        line |= pending_attributes(ORIGIN, 0, 5.0)
    result = verified(lines, verifiers)
    assert not result.ok
    assert not result.only_pending
    assert result.pending == 0
    for number in (1, 2, 3):
        assert any(
            p.startswith(f"line {number}:") and f"no statement signed by {AUDIT}" in p
            for p in result.problems
        ), result.problems


async def test_a_statement_of_another_key_or_naming_a_missing_line_fails(tmp_path: Path) -> None:
    lines, verifiers = await export(tmp_path)
    events = case_notes(3)
    # Signed under another key of the same name (a forger's), naming the whole log pending.
    for line in lines:
        line.pop(PROOF_ATTRIBUTE, None), line.pop(CHECKPOINT_ATTRIBUTE, None)
        line |= pending_attributes(ORIGIN, 0, 5.0)
    lines[0][PENDING_NOTE_ATTRIBUTE] = await statement(
        tmp_path, [(0, e) for e in events], key="forger.key"
    )
    result = verified(lines, verifiers)
    assert not result.ok
    assert not result.only_pending
    assert any(
        p.startswith(f"line 1: {PENDING_NOTE_ATTRIBUTE}: the note carries no signature by {AUDIT}")
        for p in result.problems
    ), result.problems
    assert result.pending == 0

    # A genuine statement naming an event the export no longer holds as pending.
    lines, verifiers = await export(tmp_path)
    lines[2][PENDING_NOTE_ATTRIBUTE] = await statement(
        tmp_path, [(SIGNED, events[2]), (SIGNED, events[1])]
    )
    result = verified(lines, verifiers)
    assert not result.ok
    assert not result.only_pending
    assert any("holds no such pending line" in p for p in result.problems), result.problems


async def test_a_log_under_an_alarm_is_named_and_its_marks_are_checked(tmp_path: Path) -> None:
    lines, verifiers = await export(tmp_path)
    alarm = f"audit's witness holds an inconsistency alarm on {ORIGIN}: a fork"
    lines[2] |= pending_attributes(ORIGIN, SIGNED, 5.0, alarm)
    lines[2][PENDING_NOTE_ATTRIBUTE] = await statement(
        tmp_path, [(SIGNED, _event_of(lines[2]))], alarms={ORIGIN: 2}
    )
    result = verified(lines, verifiers)
    assert (result.verified, result.pending, result.problems) == (2, 1, [])
    assert result.only_pending
    assert result.alarms == {ORIGIN: alarm}
    assert result.pending_under_alarm == {ORIGIN: 1}

    # The mark's alarm without the statement's (or the reverse) is not what audit said.
    lines[2][PENDING_NOTE_ATTRIBUTE] = await statement(tmp_path, [(SIGNED, _event_of(lines[2]))])
    result = verified(lines, verifiers)
    assert not result.ok
    assert not result.only_pending
    assert any("which audit's statement on line 3 does not name" in p for p in result.problems)


def _event_of(line: dict[str, Any]) -> RecordedEvent:
    from events.cloudevents import from_structured

    return from_structured(
        {k: v for k, v in line.items() if not k.startswith("ledger")}, sample_registry()
    )


def test_a_statement_at_its_bound_fits_the_line_that_carries_it() -> None:
    """A page's statement names at most as many events as a page holds, and at the bound,
    with the longest origins and positions, it stays within an event's bound: the line it
    rides (an event, its proof and the statement) stays within an export line's."""
    assert MAX_PAGE_SIZE <= MAX_ENTRIES
    longest = f"casetrail/{'a' * 63}/{'b' * 63}"
    at = datetime(2026, 12, 5, 23, 59, 59, 999999, tzinfo=UTC)
    entries = tuple(
        PendingEntry(longest, 10**19 - 1, 10**19 - 1 - i, f"{i:08x}-0000-4000-8000-000000000000")
        for i in range(MAX_ENTRIES)
    )
    alarms = {f"casetrail/{'a' * 63}/{'b' * 61}{i:02}": 10**19 - 1 for i in range(MAX_ALARMS)}
    full = PendingStatement("c" * 64, at, alarms, entries)
    body = full.body()
    assert PendingStatement.parse(body) == full
    assert len(body.encode()) <= MAX_EVENT_BYTES
    one_more = body + f"pending {longest} 1 1 ffffffff-0000-4000-8000-000000000000\n"
    with pytest.raises(NoteError, match="at most"):
        PendingStatement.parse(one_more)
    fewer_alarms = body.replace(f"alarm {next(iter(alarms))} {10**19 - 1}\n", "")
    with pytest.raises(NoteError, match="at most"):
        PendingStatement.parse(
            fewer_alarms + f"pending {longest} 1 1 {'f' * 8}-0000-4000-8000-{'0' * 12}\n"
        )
