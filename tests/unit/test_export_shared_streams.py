"""``verify_export`` and the lines of a stream of several cases (a budget line): audit's signed
statement of the export names which of its lines the export holds (``count … <digest>``), not
only how many, so a line swapped for a later event of the case in that stream, proven by a later
export, fails naming the stream (it verified "exported whole": the count held). A statement
signed before (count alone) is still read, and the check says it was of that form; a line
recorded after the statement's time fails whatever its form. Built outside the ledger:
intake's and coordination's logs, coordination's signed at two sizes."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.ledger.export_check import ExportVerification, verify_export
from casetrail_platform.ledger.export_note import (
    EXPORT_NOTE_ATTRIBUTE,
    HEADER,
    ExportExtent,
    ExportStatement,
    sequences_digest,
)
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import Checkpoint, NoteError, origin_of
from events.catalog.funding import BudgetReleased, BudgetReserved
from events.catalog.values import Money
from events.catalog_registry import default_registry
from events.envelope import RecordedEvent
from tests.support.cli import casetrail_exit
from tests.support.exported import AT, logged, opened, proven_line, record_of, registered, tree_root

AGENCY = "agency"
INTAKE, COORDINATION, AUDIT = (origin_of(AGENCY, s) for s in ("intake", "coordination", "audit"))
SAID = "audit's statement of the export (line 2)"
BUDGET = "stream budget-line-a of coordination"


def money(minor_units: int) -> Money:
    return Money(amount_minor_units=minor_units, currency="EUR")


def coordination_log(released_at: timedelta = timedelta(0)) -> list[RecordedEvent]:
    """Two reservations of case-1 on a budget line, then (``released_at`` after the others)
    the first one's release: recorded after the export below was made."""
    log = logged(
        "coordination",
        [
            ("budget-line-a", 1, reserved("r1", 500)),
            ("budget-line-a", 2, reserved("r2", 900_000)),
            (
                "budget-line-a",
                3,
                BudgetReleased(
                    case_id="case-1",
                    reservation_id="r1",
                    budget_line="line-a",
                    amount=money(500),
                    reason="done",
                ),
            ),
        ],
    )
    release = log[2]
    log[2] = RecordedEvent(
        event_id=release.event_id,
        stream=release.stream,
        sequence=release.sequence,
        position=release.position,
        recorded_at=release.recorded_at + released_at,
        event=release.event,
        metadata=release.metadata,
    )
    return log


def reserved(reservation_id: str, minor_units: int) -> BudgetReserved:
    return BudgetReserved(
        case_id="case-1",
        reservation_id=reservation_id,
        budget_line="line-a",
        amount=money(minor_units),
    )


async def export(
    tmp_path: Path,
    *,
    count_only: bool = False,
    released_at: timedelta = timedelta(0),
    stated_at: datetime = AT,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Case-1's export made when coordination's log held both reservations (its statement
    made at ``stated_at``; ``count_only``: of the older form, its budget line counted alone),
    the verifiers, and the line of the release as a later export proves it."""
    intake = logged(
        "intake",
        [
            ("client-client-1", 1, registered("client-1")),
            ("case-case-1", 1, opened("case-1", "client-1")),
        ],
    )
    coordination = coordination_log(released_at)
    signers = [
        FileSigner(o, tmp_path / f"{o.rsplit('/', 1)[-1]}.key")
        for o in (INTAKE, COORDINATION, AUDIT)
    ]
    intake_key, coordination_key, audit_key = signers
    at_2 = await coordination_key.sign_checkpoint(
        Checkpoint(COORDINATION, 2, tree_root(coordination, 2))
    )
    at_3 = await coordination_key.sign_checkpoint(
        Checkpoint(COORDINATION, 3, tree_root(coordination, 3))
    )
    intake_note = await intake_key.sign_checkpoint(Checkpoint(INTAKE, 2, tree_root(intake, 2)))
    lines = [proven_line(intake, r, INTAKE, 2, intake_note) for r in intake]
    lines += [proven_line(coordination, r, COORDINATION, 2, at_2) for r in coordination[:2]]
    extent = ExportExtent()
    for line in lines:
        extent.add(record_of(line, default_registry()))
    statement = ExportStatement.of("case-1", stated_at, extent, lambda s: origin_of(AGENCY, s))
    if count_only:
        statement = dataclasses.replace(statement, lines_of={})
    lines[1][EXPORT_NOTE_ATTRIBUTE] = await audit_key.sign_note(statement.body())
    verifiers = {signer.name: await signer.verifier() for signer in signers}
    return lines, verifiers, proven_line(coordination, coordination[2], COORDINATION, 3, at_3)


def swapped(lines: list[dict[str, Any]], later: dict[str, Any]) -> list[dict[str, Any]]:
    """The second reservation's line removed, the later release's put in: the count holds."""
    return [
        line for line in lines if int(line["sequence"]) != 2 or "budget" not in line["stream"]
    ] + [later]


def verified(lines: list[dict[str, Any]], verifiers: dict[str, Any]) -> ExportVerification:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    return verify_export(text, default_registry(), verifiers)


async def test_a_line_of_a_budget_line_swapped_for_a_later_event_of_the_case_fails(
    tmp_path: Path,
) -> None:
    lines, verifiers, later = await export(tmp_path)
    honest = verified(lines, verifiers)
    assert (honest.ok, honest.problems, honest.counted_only) == (True, [], [])
    assert honest.extent is not None

    result = verified(swapped(lines, later), verifiers)
    assert not result.ok
    assert result.verified == 4  # every line still proves its event
    assert result.problems == [
        f"{BUDGET} holds 2 lines, as {SAID} counts, but not the lines it names: a line was"
        " swapped for another event of the stream"
    ]


async def test_a_statement_of_the_older_count_only_form_still_verifies_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines, verifiers, _ = await export(tmp_path, count_only=True)
    assert " budget-line-a 2\n" in lines[1][EXPORT_NOTE_ATTRIBUTE]
    result = verified(lines, verifiers)
    assert (result.ok, result.problems, result.counted_only) == (True, [], [BUDGET])

    exported = tmp_path / "case-1.jsonl"
    exported.write_text("".join(json.dumps(line) + "\n" for line in lines))
    keys = tmp_path / "published.keys"
    keys.write_text("".join(f"{key}\n" for key in verifiers.values()))
    assert casetrail_exit("verify", str(exported), "--keys", str(keys)) == 0
    out = capsys.readouterr().out
    assert "exported whole" in out
    assert (
        f"audit's statement is of the older, count-only form: {BUDGET} (of several cases)"
        " checked by their line count alone, not by which lines" in out
    )


async def test_a_line_recorded_after_the_statement_fails_whatever_its_form(
    tmp_path: Path,
) -> None:
    """The release recorded an hour after the export: in its place it fails by its time alone,
    under a statement that counts the budget line's lines only."""
    lines, verifiers, later = await export(
        tmp_path, count_only=True, released_at=timedelta(hours=1)
    )
    result = verified(swapped(lines, later), verifiers)
    assert not result.ok
    released = (AT + timedelta(hours=1)).isoformat()
    assert result.problems == [
        f"line 4: event {later['id']} was recorded at {released}, after {SAID} at"
        f" {AT.isoformat()}: it is not of this export"
    ]


@pytest.mark.parametrize(("behind", "ok"), [(4, True), (6, False)])
async def test_within_the_clocks_drift_a_line_recorded_after_the_statement_passes(
    tmp_path: Path, behind: int, ok: bool
) -> None:
    """The logs' clocks are their hosts', the statement's time audit's: one a few minutes
    behind (5 at most, ``OCCURRED_AT_CLOCK_SKEW``) fails no honest export."""
    lines, verifiers, _ = await export(tmp_path, stated_at=AT - timedelta(minutes=behind))
    result = verified(lines, verifiers)
    assert (result.ok, len(result.problems)) == (ok, 0 if ok else 4)


def test_the_statement_names_the_lines_of_a_stream_of_several_cases_by_their_digest() -> None:
    extent = ExportExtent()
    for recorded in coordination_log()[:2]:
        extent.add(recorded)
    statement = ExportStatement.of("case-1", AT, extent, lambda s: origin_of(AGENCY, s))
    digest = sequences_digest([2, 1])
    assert digest == sequences_digest([1, 2]) != sequences_digest([1, 3])
    assert statement.lines_of == {(COORDINATION, "budget-line-a"): digest}
    body = statement.body()
    assert f"\ncount {COORDINATION} budget-line-a 2 {digest}\n" in body
    assert ExportStatement.parse(body) == statement

    older = f"{HEADER}\ncase case-1\nat {AT.isoformat()}\nlines 2\n"
    older += f"count {COORDINATION} budget-line-a 2\n"
    assert ExportStatement.parse(older).lines_of == {}
    assert ExportStatement.parse(older).counts == {(COORDINATION, "budget-line-a"): 2}
    ended = older.replace(f"count {COORDINATION} budget-line-a 2", f"end {INTAKE} case-case-1 1")
    assert ExportStatement.parse(ended).ends == {(INTAKE, "case-case-1"): 1}
    with pytest.raises(NoteError, match="malformed statement line"):
        ExportStatement.parse(ended.replace(" 1\n", f" 1 {digest}\n"))
