"""``verify_export`` and a line shown with a part withheld from the export's reader
(``casetrailredacted``: the client's erasure naming a case the reader may not see). It is no
longer the stored event, so it carries no proof; audit's signed statement of the extent names
it withheld with its digest, and the line passes counted withheld (not verified) only so. The
line changed, or a proof stripped from another line and the mark put in its place, fails naming
the line. Built outside the ledger, the line as audit's ``NamedOthers`` shows it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.ledger.export import (
    CHECKPOINT_ATTRIBUTE,
    PROOF_ATTRIBUTE,
    REDACTED_ATTRIBUTE,
)
from casetrail_platform.ledger.export_check import ExportVerification, verify_export
from casetrail_platform.ledger.export_note import (
    EXPORT_NOTE_ATTRIBUTE,
    ExportExtent,
    ExportStatement,
    withheld_digest,
)
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import origin_of
from events.catalog.erasure import ClientErased
from events.catalog_registry import default_registry
from events.cloudevents import to_structured
from events.envelope import RecordedEvent
from services.audit.app.queries import NamedOthers
from services.audit.domain.others import OTHER_CASES_PATH
from tests.support.cli import casetrail_exit
from tests.support.exported import AT, logged, opened, record_of, registered, signed_lines

AGENCY = "agency"
INTAKE, AUDIT = origin_of(AGENCY, "intake"), origin_of(AGENCY, "audit")


async def export(
    tmp_path: Path, *, name_withheld: bool = True
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Case-1's export to a reader who may not see case-2: the client's erasure (naming both)
    shown naming case-1 alone, marked, without a proof; audit's statement naming it withheld
    (unless not ``name_withheld``: a statement as audit signed it before)."""
    intake = logged(
        "intake",
        [
            ("client-client-1", 1, registered("client-1")),
            ("case-case-1", 1, opened("case-1", "client-1")),
            (
                "client-client-1",
                2,
                ClientErased(
                    client_id="client-1", case_ids=("case-1", "case-2"), request_reference="dsr"
                ),
            ),
        ],
    )
    shown, redacted = NamedOthers(withheld={OTHER_CASES_PATH: frozenset({"case-2"})}).view(intake)
    assert redacted == {intake[2].event_id: OTHER_CASES_PATH}
    lines, intake_key = await signed_lines(tmp_path, INTAKE, intake, intake[:2])
    lines.append(to_structured(shown[2]) | {REDACTED_ATTRIBUTE: OTHER_CASES_PATH})
    audit = FileSigner(AUDIT, tmp_path / "audit.key")
    extent = ExportExtent()
    for line in lines:
        extent.add(record_of(line, default_registry()))
    if name_withheld:
        extent.withhold(shown[2])
    statement = ExportStatement.of("case-1", AT, extent, lambda s: origin_of(AGENCY, s))
    lines[1][EXPORT_NOTE_ATTRIBUTE] = await audit.sign_note(statement.body())
    return lines, {INTAKE: intake_key, AUDIT: await audit.verifier()}


def verified(lines: list[dict[str, Any]], verifiers: dict[str, Any]) -> ExportVerification:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    return verify_export(text, default_registry(), verifiers)


async def test_a_line_named_withheld_by_audit_s_statement_passes_counted_withheld(
    tmp_path: Path,
) -> None:
    lines, verifiers = await export(tmp_path)
    assert lines[2]["data"]["case_ids"] == ["case-1"]
    result = verified(lines, verifiers)
    assert result.problems == []
    assert (result.ok, result.lines, result.verified, result.withheld) == (True, 3, 2, 1)
    assert not result.only_pending


async def test_the_withheld_line_changed_fails_naming_it(tmp_path: Path) -> None:
    lines, verifiers = await export(tmp_path)
    lines[2]["data"]["request_reference"] = "another"
    result = verified(lines, verifiers)
    assert not result.ok
    assert result.withheld == 0
    assert result.problems == [
        f"line 3: event {lines[2]['id']} marked {REDACTED_ATTRIBUTE}, but it is not the line"
        " audit's statement names withheld (sequence 2 of stream client-client-1 of intake):"
        " it was changed"
    ]


async def test_a_proof_stripped_and_the_mark_put_in_its_place_fails_naming_the_line(
    tmp_path: Path,
) -> None:
    lines, verifiers = await export(tmp_path)
    del lines[0][PROOF_ATTRIBUTE], lines[0][CHECKPOINT_ATTRIBUTE]
    lines[0][REDACTED_ATTRIBUTE] = OTHER_CASES_PATH
    result = verified(lines, verifiers)
    assert not result.ok
    assert (result.verified, result.withheld) == (1, 1)
    assert result.problems == [
        f"line 1: event {lines[0]['id']} marked {REDACTED_ATTRIBUTE} without a"
        f" {PROOF_ATTRIBUTE}, but audit's statement does not name sequence 1 of stream"
        " client-client-1 of intake withheld: its proof may have been stripped"
    ]


async def test_a_marked_line_no_statement_names_fails_and_so_does_one_named_not_held(
    tmp_path: Path,
) -> None:
    lines, verifiers = await export(tmp_path, name_withheld=False)
    result = verified(lines, verifiers)
    assert not result.ok
    assert "does not name sequence 2 of stream client-client-1" in " ".join(result.problems)

    lines, verifiers = await export(tmp_path)
    del lines[2][REDACTED_ATTRIBUTE]
    result = verified(lines, verifiers)
    assert result.problems == [
        f"line 3: event {lines[2]['id']} carries no {PROOF_ATTRIBUTE} and {CHECKPOINT_ATTRIBUTE}",
        "audit's statement names sequence 2 of stream client-client-1 of intake withheld, but"
        " the export holds no such withheld line",
    ]


def test_the_statement_reads_its_withheld_lines_and_one_without_them_as_before() -> None:
    extent = ExportExtent()
    statement = ExportStatement.of("case-1", AT, extent, lambda s: origin_of(AGENCY, s))
    assert "withheld" not in statement.body()
    assert ExportStatement.parse(statement.body()).withheld == {}
    named = ExportStatement("case-1", AT, 3, {}, {}, {(INTAKE, "client-client-1", 2): "ab" * 32})
    body = named.body()
    assert body.endswith(f"\nwithheld {INTAKE} client-client-1 2 {'ab' * 32}\n")
    assert ExportStatement.parse(body) == named
    assert named.origins == {INTAKE}


@pytest.mark.parametrize("withheld", [True, False])
async def test_casetrail_verify_reports_the_withheld_line_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], withheld: bool
) -> None:
    lines, verifiers = await export(tmp_path, name_withheld=withheld)
    exported = tmp_path / "case-1.jsonl"
    exported.write_text("".join(json.dumps(line) + "\n" for line in lines))
    keys = tmp_path / "published.keys"
    keys.write_text("".join(f"{key}\n" for key in verifiers.values()))
    assert casetrail_exit("verify", str(exported), "--keys", str(keys)) == (0 if withheld else 1)
    out = capsys.readouterr().out
    assert "2 of 3 events verified" in out
    told = "1 lines withheld from this reader, vouched for by audit's signed statement"
    assert (told in out) is withheld


def test_the_digest_is_of_the_line_as_shown() -> None:
    # The line's canonical bytes as a verifier recomputes them from the line.
    [registered_line] = logged("intake", [("client-client-1", 1, registered("client-1"))])
    line = to_structured(registered_line) | {REDACTED_ATTRIBUTE: OTHER_CASES_PATH}
    decoded: RecordedEvent = record_of(line, default_registry())
    assert withheld_digest(decoded) == withheld_digest(registered_line)
