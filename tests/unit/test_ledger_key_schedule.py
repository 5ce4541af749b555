"""A log's keys as a schedule by tree size (README "Rotating a log's signing key"): the keys
file's ranges parsed and refused, and each note opened under the key valid for its size."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from casetrail_platform.ledger.keys import FileSigner, handover_note
from casetrail_platform.ledger.note import (
    Checkpoint,
    KeySchedule,
    NoteError,
    open_checkpoint,
    parse_verifiers,
)

ORIGIN = "casetrail/agency/intake"
AT = "2026-12-05T01:00:00Z"
N = 10


def checkpoint(size: int) -> Checkpoint:
    return Checkpoint(ORIGIN, size, bytes([size % 256]) * 32)


@pytest.fixture
async def keys(tmp_path: Path) -> tuple[FileSigner, FileSigner, KeySchedule]:
    old = FileSigner(ORIGIN, tmp_path / "old")
    new = FileSigner(ORIGIN, tmp_path / "new")
    text = f"{await old.verifier()}\n{await new.verifier()} from={N} at={AT}\n"
    return old, new, parse_verifiers(text)[ORIGIN]


async def test_a_keys_file_reads_as_an_ordered_schedule_and_prints_back(
    keys: tuple[FileSigner, FileSigner, KeySchedule],
) -> None:
    old, new, schedule = keys
    assert [key.verifier for key in schedule.keys] == [await old.verifier(), await new.verifier()]
    assert [(key.start, key.end) for key in schedule.keys] == [(0, N), (N, None)]
    assert schedule.keys[1].at == datetime(2026, 12, 5, 1, tzinfo=UTC)
    assert schedule.current == await new.verifier()
    assert schedule.valid_for(N - 1) == [await old.verifier()]
    assert schedule.valid_for(N) == [await old.verifier(), await new.verifier()]
    assert schedule.valid_for(N + 1) == [await new.verifier()]
    assert parse_verifiers(str(schedule)) == {ORIGIN: schedule}
    assert str(schedule).splitlines()[1].endswith(f" from={N} at={AT}")


async def test_a_file_of_one_key_per_log_reads_as_before(tmp_path: Path) -> None:
    key = await FileSigner(ORIGIN, tmp_path / "key").verifier()
    [scheduled] = parse_verifiers(f"\n{key}\n{key}\n")[ORIGIN].keys
    assert (scheduled.verifier, scheduled.start, scheduled.end, scheduled.at) == (
        key,
        0,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["{old}", "{new}"], "line 2: a second key for casetrail/agency/intake \\(line 1\\)"),
        (["{old}", "{new} from=0 at=" + AT], "line 2: .*overlaps the one of line 1"),
        (["{old} from=5 at=" + AT, "{new} from=3 at=" + AT], "line 2: .*out of order"),
        (["{old} from=5 at=" + AT, "{new}"], "line 2: .*out of order"),
        (["{old}", "{new} from=5 at=" + AT, "{old} from=9 at=" + AT], "line 3: the key of line 1"),
        (["{old} from=5"], "line 1: after the key comes nothing or"),
        (["{old} from=05 at=" + AT], "line 1: after the key comes"),
        (["{old} from=5 at=yesterday"], "line 1: at='yesterday' is not an RFC 3339 time"),
        (["{old} from=5 at=2026-12-05T01:00:00"], "line 1: .*not an RFC 3339 time with its offset"),
    ],
)
async def test_overlapping_unordered_or_unranged_keys_are_refused(
    tmp_path: Path, lines: list[str], problem: str
) -> None:
    old = await FileSigner(ORIGIN, tmp_path / "old").verifier()
    new = await FileSigner(ORIGIN, tmp_path / "new").verifier()
    text = "".join(line.format(old=old, new=new) + "\n" for line in lines)
    with pytest.raises(NoteError, match=problem):
        parse_verifiers(text)


async def test_each_note_opens_under_the_key_valid_for_its_size(
    keys: tuple[FileSigner, FileSigner, KeySchedule],
) -> None:
    old, new, schedule = keys
    below = await old.sign_checkpoint(checkpoint(N - 1))
    handover = await handover_note(checkpoint(N), old, new)
    above = await new.sign_checkpoint(checkpoint(N + 1))
    assert [open_checkpoint(note, schedule).size for note in (below, handover, above)] == [
        N - 1,
        N,
        N + 1,
    ]
    # Go's note.Open opens the handover note with either key alone.
    assert open_checkpoint(handover, await old.verifier()).size == N
    assert open_checkpoint(handover, await new.verifier()).size == N


async def test_a_note_signed_by_a_key_not_valid_for_its_size_is_refused(
    keys: tuple[FileSigner, FileSigner, KeySchedule],
) -> None:
    old, new, schedule = keys
    for signer, size in ((old, N + 1), (new, N - 1)):
        note = await signer.sign_checkpoint(checkpoint(size))
        with pytest.raises(NoteError, match=f"signed by a key not valid for size {size}"):
            open_checkpoint(note, schedule)
    # The handover size needs both: either key alone is refused.
    for signer in (old, new):
        with pytest.raises(NoteError, match="carries no signature by"):
            open_checkpoint(await signer.sign_checkpoint(checkpoint(N)), schedule)


async def test_a_note_of_an_unknown_key_is_still_refused(
    tmp_path: Path, keys: tuple[FileSigner, FileSigner, KeySchedule]
) -> None:
    _, _, schedule = keys
    stranger = FileSigner(ORIGIN, tmp_path / "stranger")
    for size in (0, N, N + 1):
        with pytest.raises(NoteError, match="carries no signature by"):
            open_checkpoint(await stranger.sign_checkpoint(checkpoint(size)), schedule)
    note = await stranger.sign_checkpoint(checkpoint(3))
    tampered = note.replace(base64.b64encode(checkpoint(3).root).decode(), "A" * 43 + "=")
    with pytest.raises(NoteError):
        open_checkpoint(tampered, schedule)


async def test_sizes_before_the_first_listed_key_have_no_key(tmp_path: Path) -> None:
    new = FileSigner(ORIGIN, tmp_path / "new")
    schedule = parse_verifiers(f"{await new.verifier()} from={N} at={AT}\n")[ORIGIN]
    with pytest.raises(NoteError, match=f"no key of {ORIGIN} is valid for size 3"):
        open_checkpoint(await new.sign_checkpoint(checkpoint(3)), schedule)
