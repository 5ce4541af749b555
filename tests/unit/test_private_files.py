"""``private_replacement`` after a writer killed mid-write: its temporary file (a part of a key,
a token, an export) is removed by the next write of the same file, and only once no one holds
it (a writer still writing keeps its own)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from casetrail_platform import private_files
from casetrail_platform.private_files import private_replacement

KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from casetrail_platform.private_files import private_replacement
with private_replacement(Path(sys.argv[1])) as file:
    file.write(b"half a secret")
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def age(directory: Path, seconds: float) -> None:
    past = time.time() - seconds
    for name in leftovers(directory):
        os.utime(directory / name, (past, past))


def test_a_writer_killed_mid_write_leaves_nothing_after_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    path.write_bytes(b"old")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_WRITE, str(path)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert killed.returncode == -9
    assert path.read_bytes() == b"old"
    assert len(leftovers(tmp_path)) == 1  # no clean-up runs in a killed process
    with private_replacement(path) as file:  # too recent: maybe a writer about to lock it
        file.write(b"new")
    assert len(leftovers(tmp_path)) == 1
    age(tmp_path, private_files.STALE_AFTER + 1)
    with private_replacement(path) as file:
        file.write(b"newer")
    assert path.read_bytes() == b"newer"
    assert leftovers(tmp_path) == []


def test_a_temporary_file_still_being_written_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    other = tmp_path / "other.jsonl"
    with private_replacement(path) as slow:
        slow.write(b"a long export, ")
        age(tmp_path, private_files.STALE_AFTER + 1)
        with private_replacement(path) as file:
            file.write(b"another")
        with private_replacement(other) as file:
            file.write(b"another file")
        assert len(leftovers(tmp_path)) == 1
        slow.write(b"whole")
    assert path.read_bytes() == b"a long export, whole"
    assert leftovers(tmp_path) == []
