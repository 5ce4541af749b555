"""``bench.common.replace_section``: a script's run replaces its own section of RESULTS.md and
nothing else, and keeps the notes written by hand below ``KEPT_BELOW``."""

from __future__ import annotations

from pathlib import Path

from bench.common import KEPT_BELOW, replace_section

RESULTS = """# casetrail benchmark results

## Store

old table

## Barrier

old run

{kept}
**Reading (by hand).** Why the old run looked as it did.

## Kafka

kafka table
"""


def test_a_new_run_replaces_its_section_only(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(RESULTS.format(kept=""))
    replace_section("## Store", "new table", path)
    text = path.read_text()
    assert "new table" in text
    assert "old table" not in text
    assert "old run" in text
    assert text.endswith("## Kafka\n\nkafka table\n")


def test_notes_below_the_marker_stay_after_the_new_run(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(RESULTS.format(kept=KEPT_BELOW))
    replace_section("## Barrier", "new run", path)
    replace_section("## Barrier", "newer run", path)
    text = path.read_text()
    barrier = text[text.index("## Barrier") : text.index("## Kafka")]
    assert barrier == (
        f"## Barrier\n\nnewer run\n\n{KEPT_BELOW}\n"
        "**Reading (by hand).** Why the old run looked as it did.\n\n"
    )


def test_without_the_marker_the_whole_section_is_the_new_run(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(RESULTS.format(kept=""))
    replace_section("## Barrier", "new run", path)
    assert "Why the old run" not in path.read_text()


def test_a_new_section_goes_last(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(RESULTS.format(kept=""))
    replace_section("## Relay", "relay table", path)
    assert path.read_text().endswith("kafka table\n\n## Relay\n\nrelay table\n")
