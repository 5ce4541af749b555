"""`casetrail ledger rotate SERVICE --new-key FILE` on the embedded default: the handover
checkpoint, the new key installed and published with its range, and verify-store and
`casetrail verify` (an export's lines, each under the key valid for its tree size) following
the log across the rotation."""

from __future__ import annotations

import asyncio
import fcntl
import json
from pathlib import Path

import pytest

from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.export_check import verify_lines
from casetrail_platform.ledger.export_file import export_lines
from casetrail_platform.ledger.hosting import key_path, open_ledger
from casetrail_platform.ledger.keys import FileSigner, handover_note
from casetrail_platform.ledger.note import Checkpoint, origin_of, parse_verifiers
from casetrail_platform.locking.serving import SERVING_FILE
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.support.cli import casetrail_exit
from tests.support.exported import case_notes, proven_line, tree_root, with_extent
from tests.support.ledger import append_notes
from tests.support.sample_events import sample_registry

ORIGIN = origin_of("example-agency", "intake")


async def grow(data_dir: Path, count: int, *, sign: bool, agency: str = "example-agency") -> None:
    infra = Infrastructure(data_dir=data_dir, agency=agency)
    store = await SqliteEventStore.open(data_dir / "intake" / "events.db", sample_registry())
    await append_notes(store, count)
    ledger = await open_ledger(infra, "intake")
    await (ledger.sign() if sign else ledger.catch_up())
    await ledger.store.close()
    await store.close()


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    """Intake's store of 12 events signed by its first key, and 3 more not yet signed."""
    await grow(tmp_path, 12, sign=True)
    await grow(tmp_path, 3, sign=False)
    return tmp_path


def test_rotate_hands_the_log_over_and_verify_store_follows(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_pub = key_path(data_dir, "intake").with_suffix(".pub").read_text()
    old_pem = key_path(data_dir, "intake").read_bytes()
    new_key = tmp_path / "new" / "ledger.key"
    new = FileSigner(ORIGIN, new_key)
    new_line = str(asyncio.run(new.verifier()))
    rotate = ["ledger", "rotate", "intake", "--new-key", str(new_key), "--data-dir", str(data_dir)]

    assert casetrail_exit(*rotate) == 0

    out = capsys.readouterr().out
    assert "handed over at tree size 15" in out
    line = next(line for line in out.splitlines() if line.startswith(f"{ORIGIN}+"))
    assert line.startswith(f"{new_line} from=15 at=")
    published = key_path(data_dir, "intake").with_suffix(".pub").read_text()
    assert published == old_pub + line + "\n"
    schedule = parse_verifiers(published)[ORIGIN]
    assert [(key.start, key.end) for key in schedule.keys] == [(0, 15), (15, None)]
    assert key_path(data_dir, "intake").read_bytes() == new_key.read_bytes()
    assert (data_dir / "intake" / "ledger.key.retired-15").read_bytes() == old_pem

    # The service, started again on the new key, signs on from the handover.
    asyncio.run(grow(data_dir, 2, sign=True))
    verify = ["verify-store", "intake", "--data-dir", str(data_dir)]
    assert casetrail_exit(*verify) == 0
    out = capsys.readouterr().out
    # The three stored, and the handover the rotation published (ledger.checkpoint) besides.
    assert "its log published a checkpoint of 15 events" in out
    assert "4 checkpoints checked" in out
    # The old key alone no longer verifies the log: its range ended at 15.
    old_only = tmp_path / "old-only.txt"
    old_only.write_text(old_pub)
    assert casetrail_exit(*verify, "--keys", str(old_only)) == 1
    assert "no signature by" in capsys.readouterr().out


async def test_the_commands_check_and_sign_under_the_agency_the_services_run_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CASETRAIL_AGENCY`` names each service's log (the chart always sets it): verify-store
    and rotate read it as the runner does. Without it a healthy store of another agency failed
    verify-store (no signature by ``casetrail/example-agency/intake``) and rotate refused."""
    await grow(tmp_path, 4, sign=True, agency="acme-agency")
    monkeypatch.setenv("CASETRAIL_AGENCY", "acme-agency")
    published = key_path(tmp_path, "intake").with_suffix(".pub")
    verify = ["verify-store", "intake", "--data-dir", str(tmp_path), "--workers", "1"]

    assert await asyncio.to_thread(casetrail_exit, *verify) == 0
    assert await asyncio.to_thread(casetrail_exit, *verify, "--keys", str(published)) == 0
    assert "OK: the store is the tree its checkpoints signed" in capsys.readouterr().out

    await grow(tmp_path, 1, sign=False, agency="acme-agency")
    new_key = tmp_path / "new" / "ledger.key"
    FileSigner(origin_of("acme-agency", "intake"), new_key)
    rotate = ["ledger", "rotate", "intake", "--new-key", str(new_key), "--data-dir", str(tmp_path)]
    assert await asyncio.to_thread(casetrail_exit, *rotate) == 0
    assert "casetrail/acme-agency/intake+" in capsys.readouterr().out

    monkeypatch.setenv("CASETRAIL_AGENCY", "Acme Agency")
    assert await asyncio.to_thread(casetrail_exit, *verify) == 2
    assert "ledger settings: origin 'casetrail/Acme Agency/intake'" in capsys.readouterr().err
    monkeypatch.setenv("CASETRAIL_AGENCY", "acme-agency")
    for every in ("soon", "nan", "inf", "0"):
        monkeypatch.setenv("CASETRAIL_LEDGER_SIGN_EVERY", every)
        assert await asyncio.to_thread(casetrail_exit, *verify) == 2
        assert "CASETRAIL_LEDGER_SIGN_EVERY must be a positive" in capsys.readouterr().err


def test_a_key_given_without_its_pub_file_is_published_with_its_successor(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    published = key_path(data_dir, "intake").with_suffix(".pub")
    old_line = published.read_text()
    published.unlink()  # a key the service was given (a Secret): it wrote no ledger.pub
    new_key = tmp_path / "new" / "ledger.key"
    FileSigner(ORIGIN, new_key)
    rotate = ["ledger", "rotate", "intake", "--new-key", str(new_key), "--data-dir", str(data_dir)]

    assert casetrail_exit(*rotate) == 0

    lines = published.read_text().splitlines()
    assert lines[0] == old_line.strip()
    assert " from=15 at=" in lines[1]
    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 0
    assert "OK: the store is the tree its checkpoints signed" in capsys.readouterr().out


def test_rotate_is_refused_while_the_service_runs_or_with_nothing_new_to_sign(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key = tmp_path / "new" / "ledger.key"
    FileSigner(ORIGIN, new_key)
    rotate = ["ledger", "rotate", "intake", "--new-key", str(new_key), "--data-dir", str(data_dir)]
    key_before = key_path(data_dir, "intake").read_bytes()

    # A running process's mark (locking.serving.mark_serving, embedded).
    with (data_dir / "intake" / SERVING_FILE).open("a+b") as serving:
        fcntl.flock(serving, fcntl.LOCK_SH)
        assert casetrail_exit(*rotate) == 2
    assert "intake is running: stop it first" in capsys.readouterr().err

    missing = ["ledger", "rotate", "intake", "--new-key", str(tmp_path / "typo.key")]
    assert casetrail_exit(*missing, "--data-dir", str(data_dir)) == 2
    assert not (tmp_path / "typo.key").exists()

    asyncio.run(grow(data_dir, 0, sign=True))  # the 15 events are signed by the old key alone
    assert casetrail_exit(*rotate) == 1
    assert "no event since the checkpoint of size 15" in capsys.readouterr().err
    assert key_path(data_dir, "intake").read_bytes() == key_before
    assert not list(data_dir.glob("intake/ledger.key.retired-*"))


def test_a_log_whose_key_is_not_at_hand_is_refused_and_no_key_made_up(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old key not where the command reads it (not copied there on the distributed
    backend, moved away): a key was generated in its place and published over ``ledger.pub``,
    then the handover refused as a tampered ledger, so verify-store failed the intact store."""
    new_key = tmp_path / "new" / "ledger.key"
    FileSigner(ORIGIN, new_key)
    key = key_path(data_dir, "intake")
    published = key.with_suffix(".pub").read_text()
    key.rename(tmp_path / "kept-elsewhere.key")
    rotate = ["ledger", "rotate", "intake", "--new-key", str(new_key), "--data-dir", str(data_dir)]

    assert casetrail_exit(*rotate) == 2
    assert f"{key}: no such file: the log's key" in capsys.readouterr().err
    assert not key.exists()
    assert key.with_suffix(".pub").read_text() == published
    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 0
    assert "OK: the store is the tree its checkpoints signed" in capsys.readouterr().out


def test_a_log_is_never_handed_back_to_a_key_it_retired(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Handed back to its first key, the log was signed by one key over two ranges, which no
    keys file holds (a key listed again is refused): ``ledger.pub`` became no keys file, read as
    no key, and verify-store then said OK with no signature checked."""
    first = tmp_path / "first.key"
    first.write_bytes(key_path(data_dir, "intake").read_bytes())
    first.chmod(0o600)
    second = tmp_path / "second" / "ledger.key"
    FileSigner(ORIGIN, second)
    rotate = ["ledger", "rotate", "intake", "--data-dir", str(data_dir), "--new-key"]
    assert casetrail_exit(*rotate, str(second)) == 0
    asyncio.run(grow(data_dir, 2, sign=False))
    published = key_path(data_dir, "intake").with_suffix(".pub").read_text()
    capsys.readouterr()

    assert casetrail_exit(*rotate, str(first)) == 2
    assert (
        f"--new-key {first}: the log was signed with this key before (sizes 0 to 15)"
        in capsys.readouterr().err
    )
    assert key_path(data_dir, "intake").read_bytes() == second.read_bytes()
    assert key_path(data_dir, "intake").with_suffix(".pub").read_text() == published
    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 0
    assert "OK: the store is the tree its checkpoints signed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe not text\n", "can't decode byte 0xff"),
        (b"#" * (64 * 1024 + 1), "larger than 65,536 bytes"),
    ],
)
def test_a_ledger_pub_that_is_no_keys_file_is_named_before_the_handover(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: str
) -> None:
    """``ledger.pub`` is read within the keys file's bound as every other reader of it reads it:
    one not UTF-8 ended the command with a traceback (after the handover was signed), one of any
    size was read whole; then, read as no key, the log was handed over and the new key left to
    install by hand. Named now as the directory names it, before anything is signed."""
    published = key_path(data_dir, "intake").with_suffix(".pub")
    published.write_bytes(content)
    key_before = key_path(data_dir, "intake").read_bytes()
    new_key = tmp_path / "new" / "ledger.key"
    FileSigner(ORIGIN, new_key)
    rotate = ["ledger", "rotate", "intake", "--new-key", str(new_key), "--data-dir", str(data_dir)]

    assert casetrail_exit(*rotate) == 2

    err = capsys.readouterr().err
    assert f"{published}: cannot read the public keys: " in err, err
    assert problem in err, err
    assert "Traceback" not in err
    assert key_path(data_dir, "intake").read_bytes() == key_before
    assert published.read_bytes() == content
    assert not (data_dir / "intake" / "ledger.checkpoint").exists()  # no handover published
    assert not list(data_dir.glob("intake/ledger.key.retired-*"))


@pytest.mark.parametrize(
    ("size", "signed_by", "problem"),
    [
        (2, "old", None),
        (3, "both", None),
        (5, "new", None),
        (5, "old", "signed by a key not valid for size 5"),
        (2, "new", "signed by a key not valid for size 2"),
        (3, "old", "carries no signature by"),
    ],
)
async def test_casetrail_verify_opens_each_export_under_the_key_of_its_tree_size(
    tmp_path: Path,
    size: int,
    signed_by: str,
    problem: str | None,
) -> None:
    old = FileSigner(ORIGIN, tmp_path / "old.key")
    new = FileSigner(ORIGIN, tmp_path / "new.key")
    keys_text = f"{await old.verifier()}\n{await new.verifier()} from=3 at=2026-12-05T02:00:00Z\n"
    events = case_notes(5)
    checkpoint = Checkpoint(ORIGIN, size, tree_root(events, size))
    signer = {"old": old, "new": new}.get(signed_by)
    signed = (
        await handover_note(checkpoint, old, new)
        if signer is None
        else await signer.sign_checkpoint(checkpoint)
    )
    audit = FileSigner(origin_of("example-agency", "audit"), tmp_path / "audit.key")
    keys_text += f"{await audit.verifier()}\n"
    lines = [proven_line(events, recorded, ORIGIN, size, signed) for recorded in events[:size]]
    await with_extent(lines, audit, sample_registry(), "case-1")
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))

    # What `casetrail verify FILE --keys` does (cli.ledger._verify_export), over test events.
    with export.open("rb") as file:
        result = verify_lines(export_lines(file), sample_registry(), parse_verifiers(keys_text))

    if problem is None:
        assert result.ok, result.problems
        assert result.verified == size
    else:
        assert result.verified == 0
        assert all(problem in found for found in result.problems), result.problems
