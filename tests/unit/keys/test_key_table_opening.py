"""Two processes opening one brand-new key file (or any casetrail SQLite file) at the same
moment both open it. Switching a new file to WAL from two processes at once can deadlock on
its locks, and SQLite then answers one of them "database is locked" at once, without waiting
its busy timeout (about one race in a hundred here; CI67 met it)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path

from casetrail_platform.keys.sqlite import KEYS_FILE_NAME, SqliteDataKeyTable
from casetrail_platform.store.sqlite_writer import connect

ROUNDS = 150


def _open_key_table(path: Path, start: Barrier) -> None:
    table = SqliteDataKeyTable(path)
    start.wait()
    table.client_of_case("case-1")


def _open_file(path: Path, start: Barrier) -> None:
    start.wait()
    mode = connect(str(path)).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def _race(opener: Callable[[Path, Barrier], None], tmp_path: Path) -> list[int | None]:
    context = multiprocessing.get_context("fork")
    codes: list[int | None] = []
    for round_ in range(ROUNDS):
        path = tmp_path / f"round-{round_}" / KEYS_FILE_NAME
        path.parent.mkdir()
        start = context.Barrier(2)
        both = [context.Process(target=opener, args=(path, start)) for _ in range(2)]
        for process in both:
            process.start()
        for process in both:
            process.join()
            codes.append(process.exitcode)
    return codes


def test_key_tables_opening_one_new_file_at_once_all_open(tmp_path: Path) -> None:
    assert set(_race(_open_key_table, tmp_path)) == {0}


def test_a_new_file_opened_at_once_by_two_processes_is_opened_in_wal_by_both(
    tmp_path: Path,
) -> None:
    assert set(_race(_open_file, tmp_path)) == {0}
