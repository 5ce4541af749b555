"""``casetrail verify`` and an export line whose envelope text holds a lone surrogate (JSON's
``"\\ud800"`` escape: no Unicode text, no UTF-8 bytes). Its line fails named, the rest of the
export is checked, and nothing fails with a traceback (hashing its leaf raised
``UnicodeEncodeError`` out of the whole check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.ledger.export_check import verify_export
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import Checkpoint, origin_of
from events.catalog_registry import default_registry
from tests.support.cli import casetrail_exit
from tests.support.exported import (
    logged,
    opened,
    proven_line,
    registered,
    tree_root,
    with_extent,
)

AGENCY = "agency"
INTAKE, AUDIT = origin_of(AGENCY, "intake"), origin_of(AGENCY, "audit")


async def export(tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Case-1's export of intake's log (its client's registration, its opening) and the
    verifiers, with audit's statement of its extent."""
    intake = logged(
        "intake",
        [
            ("client-client-1", 1, registered("client-1")),
            ("case-case-1", 1, opened("case-1", "client-1")),
        ],
    )
    signer = FileSigner(INTAKE, tmp_path / "intake.key")
    audit = FileSigner(AUDIT, tmp_path / "audit.key")
    note = await signer.sign_checkpoint(Checkpoint(INTAKE, 2, tree_root(intake, 2)))
    lines = [proven_line(intake, recorded, INTAKE, 2, note) for recorded in intake]
    await with_extent(lines, audit, default_registry(), "case-1")
    return lines, {INTAKE: await signer.verifier(), AUDIT: await audit.verifier()}


def text_of(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.mark.parametrize("attribute", ["actorid", "stream", "source"])
async def test_casetrail_verify_names_the_line_and_its_attribute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], attribute: str
) -> None:
    lines, verifiers = await export(tmp_path)
    lines[0][attribute] = "\ud800"
    exported = tmp_path / "case-1.jsonl"
    exported.write_text(text_of(lines))
    assert "\\ud800" in exported.read_text()
    keys = tmp_path / "published.keys"
    keys.write_text("".join(f"{key}\n" for key in verifiers.values()))

    assert casetrail_exit("verify", str(exported), "--keys", str(keys)) == 1
    told = capsys.readouterr()
    assert told.err.startswith(
        "line 1: not a casetrail CloudEvent (invalid event 'casetrail.client.registered':"
        f" {attribute}: must be valid Unicode (no lone surrogates))"
    )
    assert "Traceback" not in told.err
    assert "1 of 2 events verified" in told.out


async def test_text_the_decoder_let_through_unencodable_fails_its_line_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the decoder let a lone surrogate through, the line has no canonical bytes: it
    fails named, not the check."""
    lines, verifiers = await export(tmp_path)
    lines[0]["actorid"] = "desk-\ud800"
    monkeypatch.setattr(
        "events.cloudevents.attribute_reader.envelope_text_problem", lambda text, bound: None
    )
    result = verify_export(text_of(lines), default_registry(), verifiers)
    assert not result.ok
    assert result.problems[0] == (
        "line 1: not a casetrail CloudEvent ('desk-\\ud800' is no Unicode text: surrogates not"
        " allowed)"
    )
    assert result.verified == 1


async def test_a_lone_surrogate_in_data_holding_a_sealed_value_fails_its_line_named(
    tmp_path: Path,
) -> None:
    """Data holding a sealed value was encoded before the catalog checked it: a lone surrogate
    in it failed the whole check with ``UnicodeEncodeError``."""
    lines, verifiers = await export(tmp_path)
    lines[0]["data"]["name"]["given_names"] = "ct1~client-1~1~" + "A" * 40
    lines[0]["data"]["preferred_language"] = "\ud800"
    result = verify_export(text_of(lines), default_registry(), verifiers)
    assert not result.ok
    assert result.problems[0] == (
        "line 1: not a casetrail CloudEvent (invalid event 'casetrail.client.registered':"
        " preferred_language: must be valid Unicode (no lone surrogates))"
    )
