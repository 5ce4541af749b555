"""Keying a duplicate lookup's candidates: what ``compare`` costs when they share long
identifiers, with invisible characters dropped one character at a time in Python (as until
12-07) and by ``matching.visible``'s one character class.

``python -m bench.matching_bench [--rounds N]`` writes the section "Keying long identifiers
(intake)" of ``bench/RESULTS.md``. The lookup of intake's defect: a probe sharing 100
identifiers of 500 characters (three bytes each in UTF-8, as many as a registration holds) with
each of 50 candidates. Side by side in rounds, each contender first in turn: before, every
identifier keyed with the per-character predicate (``_invisible_before``, the old
``matching.invisible``); after, ``compare`` as it is. The character class is built before the
rounds (once per process, at first use in the service).
"""

from __future__ import annotations

import argparse
import os
import time
import unicodedata
from collections.abc import Callable
from datetime import date

from bench.common import machine_info, markdown_table, median, now_utc, replace_section, rotations
from events.catalog.clients import PersonalIdentifier, PersonName
from services.intake.domain import matching
from services.intake.domain.matching import KnownClient, Probe, compare

HEADING = "## Keying long identifiers (intake)"
CANDIDATES = 50


def _invisible_before(char: str) -> bool:
    """``matching.invisible`` until 12-07: the category and 17 ranges looked at per character."""
    point = ord(char)
    category = unicodedata.category(char)
    return (
        category == "Cf"
        or (category == "Cc" and char not in "\t\n\r")
        or any(first <= point <= last for first, last in matching._DEFAULT_IGNORABLE)
    )


def _visible_before(text: str) -> str:
    return "".join(char for char in text if not _invisible_before(char))


def _lookup() -> tuple[Probe, list[KnownClient]]:
    wide = "\u6f22" * 498
    shared = tuple(
        PersonalIdentifier(scheme=f"registry-{index}", value=f"{index:02}{wide}")
        for index in range(100)
    )
    name = PersonName(given_names="Marco", family_name="Bellini")
    probe = Probe(name=name, date_of_birth=None, identifiers=shared)
    known = [
        KnownClient(f"c{position}", name, date(1941, 6, 2), shared, position)
        for position in range(CANDIDATES)
    ]
    return probe, known


def _timed(keying: Callable[[str], str], probe: Probe, known: list[KnownClient]) -> float:
    kept = matching.visible
    matching.visible = keying  # type: ignore[assignment]  # the contender's keying, this run
    try:
        started = time.perf_counter()
        for candidate in known:
            assert compare(probe, candidate) is not None
        return time.perf_counter() - started
    finally:
        matching.visible = kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.matching_bench")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    probe, known = _lookup()
    matching.visible("warm")  # the class is built at first use: not timed
    contenders: list[tuple[str, Callable[[str], str]]] = [
        ("before: per character", _visible_before),
        ("after: one character class", matching.visible),
    ]
    seconds: dict[str, list[float]] = {label: [] for label, _ in contenders}
    for round_number in range(options.rounds):
        for label, keying in rotations(contenders, round_number):
            seconds[label].append(_timed(keying, probe, known))
    before = median(seconds[contenders[0][0]])
    rows = [
        [
            label,
            f"{median(times) * 1000:.0f}",
            ", ".join(f"{value * 1000:.0f}" for value in times),
            f"{before / median(times):.1f}x",
        ]
        for label, times in seconds.items()
    ]
    body = "\n".join(
        [
            f"Run: {now_utc()}. Command: `python -m bench.matching_bench --rounds"
            f" {options.rounds}`. Load average (1 min) before / after: {load_before:.2f} /"
            f" {os.getloadavg()[0]:.2f}.",
            "",
            *machine_info().lines(),
            "",
            (__doc__ or "").split("\n\n", 1)[1].strip(),
            "",
            markdown_table(
                ["keying", "lookup median ms", "rounds ms", "speed-up over before"], rows
            ),
        ]
    )
    replace_section(HEADING, body)
    print(body)


if __name__ == "__main__":
    main()
