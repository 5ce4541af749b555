"""bench.stream_growth_bench's ``--sizes``: a size below ``SNAPSHOT_EVERY`` leaves the line
without the snapshot its restart columns start from, and the run crashed on an assert after
filling the store; now the argument is refused before anything runs."""

from __future__ import annotations

import pytest

from bench import stream_growth_bench
from bench.stream_growth_bench import parse
from casetrail_platform.folded import SNAPSHOT_EVERY


def test_the_default_sizes_are_taken() -> None:
    assert parse([]).sizes == [1000, 10000, 50000]


def test_sizes_from_one_snapshot_up_are_taken() -> None:
    assert parse(["--sizes", f"{SNAPSHOT_EVERY},20000"]).sizes == [SNAPSHOT_EVERY, 20000]


@pytest.mark.parametrize(
    ("sizes", "named"),
    [
        ("100", "at least 1,000"),
        (f"{SNAPSHOT_EVERY},{SNAPSHOT_EVERY - 1}", "at least 1,000"),
        ("1000,ten", "whole numbers"),
    ],
)
def test_sizes_below_one_snapshot_or_not_numbers_are_refused_naming_the_argument(
    sizes: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        parse(["--sizes", sizes])
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "--sizes" in error
    assert named in error


def test_the_stale_snapshot_column_follows_the_products_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last restart column, its filling and the smallest default size come from
    ``SNAPSHOT_EVERY``: the bench said "999 behind" whatever the interval was."""
    assert stream_growth_bench.headers()[-1] == (
        f"restart, snapshot {SNAPSHOT_EVERY - 1:,} behind ms"
    )
    monkeypatch.setattr(stream_growth_bench, "SNAPSHOT_EVERY", 2_000)
    assert stream_growth_bench.behind() == 1_999
    assert stream_growth_bench.headers()[-1] == "restart, snapshot 1,999 behind ms"
    assert parse([]).sizes == [2_000, 10_000, 50_000]
