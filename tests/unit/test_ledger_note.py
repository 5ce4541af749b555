"""Checkpoint notes as an outside verifier (Go's ``note.Open`` and checkpoint parsing) reads
them: the same notes accepted and refused, every refusal a ``NoteError``."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import (
    Checkpoint,
    NoteError,
    Verifier,
    open_checkpoint,
    origin_of,
    schedule_of,
)
from tests.support.ledger import GO_ACCEPTS, signature_variants

ORIGIN = "casetrail/agency/intake"
ROOT = base64.b64encode(b"r" * 32).decode()


@pytest.mark.parametrize(
    ("body", "size"),
    [
        (f"{ORIGIN}\n5\n{ROOT}\n", 5),
        # C2SP tlog-checkpoint: extension lines after the root are signed, and ignored.
        (f"{ORIGIN}\n0\n{ROOT}\nan extension\n", 0),
    ],
)
async def test_a_checkpoint_note_is_read_as_go_reads_it(
    tmp_path: Path, body: str, size: int
) -> None:
    signer = FileSigner(ORIGIN, tmp_path / "key")
    note = await signer.sign_note(body)
    assert open_checkpoint(note, await signer.verifier()).size == size


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (f"{ORIGIN}\n5\n", "origin, size and root hash"),
        (f"casetrail/other/intake\n5\n{ROOT}\n", "is not the key's name"),
        (f"{ORIGIN}\n05\n{ROOT}\n", "not a decimal number"),
        (f"{ORIGIN}\n+5\n{ROOT}\n", "not a decimal number"),
        # Digits that str.isdigit takes: read as 12, or a bare ValueError.
        (f"{ORIGIN}\n\u0661\u0662\n{ROOT}\n", "not a decimal number"),
        (f"{ORIGIN}\n\u00b2\n{ROOT}\n", "not a decimal number"),
        (f"{ORIGIN}\n{2**64}\n{ROOT}\n", "not a decimal number"),
        (f"{ORIGIN}\n5\n{ROOT}\n\x07bell\n", "control characters"),
    ],
)
async def test_a_note_go_refuses_is_refused_with_a_note_error(
    tmp_path: Path, body: str, problem: str
) -> None:
    signer = FileSigner(ORIGIN, tmp_path / "key")
    note = await signer.sign_note(body)
    with pytest.raises(NoteError, match=problem):
        open_checkpoint(note, await signer.verifier())
    if "control" not in problem and "key's name" not in problem:
        with pytest.raises(NoteError, match=problem):
            Checkpoint.parse(body)


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda note: note.replace("\n\n", "\n\ud800\n\n"),  # in the body (an extension line)
        lambda note: note + "\u2014 other\udfff AAAAAAAA\n",  # another key's line: accepted
    ],
    ids=["body", "signature line"],
)
async def test_a_note_that_is_not_utf_8_text_is_refused_with_a_note_error(
    tmp_path: Path, rewrite: Callable[[str], str]
) -> None:
    # A lone surrogate, which JSON's "\ud800" gives: encoding the body to check its signature
    # raised UnicodeEncodeError, and `casetrail verify` ended with a traceback. Go's note.Open
    # refuses text that is not valid UTF-8.
    signer = FileSigner(ORIGIN, tmp_path / "key")
    note = rewrite(await signer.sign_note(f"{ORIGIN}\n5\n{ROOT}\n"))
    verifier = await signer.verifier()
    for keys in (verifier, schedule_of(verifier)):
        with pytest.raises(NoteError, match="a signed note is UTF-8 text"):
            open_checkpoint(note, keys)


async def test_base64_with_letters_beyond_ascii_is_refused_with_a_note_error(
    tmp_path: Path,
) -> None:
    # base64.b64decode raises a bare ValueError, not binascii.Error, for a str not ASCII: it
    # went past every NoteError catcher (`casetrail verify` ended with a traceback).
    signer = FileSigner(ORIGIN, tmp_path / "key")
    verifier = await signer.verifier()
    note = await signer.sign_note(f"{ORIGIN}\n5\n{ROOT}\n")
    accented = "\u00e9" * 44
    for text, problem in [
        (note + f"\u2014 other {accented[:8]}\n", "signature of other is not base64"),
        (await signer.sign_note(f"{ORIGIN}\n5\n{accented}\n"), "root hash is not base64"),
    ]:
        for keys in (verifier, schedule_of(verifier)):
            with pytest.raises(NoteError, match=problem):
                open_checkpoint(text, keys)
    with pytest.raises(NoteError, match="not base64"):
        Verifier.parse(str(verifier)[:-4] + "\u00e9\u00e9\u00e9=")


async def test_two_keys_under_one_name_are_refused_not_one_silently_kept(tmp_path: Path) -> None:
    # A retired key beside its successor: the last one was kept, and every note the first
    # signed failed as "no signature" although its key was given.
    from casetrail_platform.ledger.note import parse_verifiers, schedule_of

    retired = await FileSigner(ORIGIN, tmp_path / "retired").verifier()
    current = await FileSigner(ORIGIN, tmp_path / "current").verifier()
    assert parse_verifiers(f"{retired}\n{retired}\n") == {ORIGIN: schedule_of(retired)}
    with pytest.raises(NoteError, match=f"line 2: a second key for {ORIGIN} \\(line 1\\)"):
        parse_verifiers(f"{retired}\n{current}\n")


async def test_signature_lines_are_read_as_go_reads_them(tmp_path: Path) -> None:
    """Lines Go's note.Open refuses as malformed or invalid passed here when they were not
    the verifier's valid line: a truncated line of the key before a valid one, another key's
    line too short, not base64, or named with a '+', more than 100 lines."""
    signer = FileSigner(ORIGIN, tmp_path / "key")
    verifier = await signer.verifier()
    note = await signer.sign_note(f"{ORIGIN}\n5\n{ROOT}\n")
    verdicts = {}
    for case, variant in signature_variants(note).items():
        try:
            open_checkpoint(variant, verifier)
            verdicts[case] = True
        except NoteError:
            verdicts[case] = False
    assert verdicts == GO_ACCEPTS


@pytest.mark.parametrize(("agency", "service"), [("agency", "intake\n"), ("Agency", "intake")])
def test_an_origin_is_refused_unless_it_is_whole_an_origin(agency: str, service: str) -> None:
    # "intake\n" passed "$", which matches before a final line feed, and ended the note's line.
    with pytest.raises(ValueError, match="must be lower-case names"):
        origin_of(agency, service)
