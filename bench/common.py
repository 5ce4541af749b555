"""Helpers shared by the benchmarks: machine facts, statistics, tables, the results file.

Benchmarks on a small, noisy machine compare contenders side by side in one run (alternating
their order round by round) and report ratios; absolute numbers are context, not proof.
"""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

RESULTS_FILE = Path(__file__).with_name("RESULTS.md")
RESULTS_TITLE = "# casetrail benchmark results"

T = TypeVar("T")


@dataclass(frozen=True)
class MachineInfo:
    cpus: int
    cpu_model: str
    ram_gib: float
    python: str
    sqlite: str
    system: str
    fsyncs_per_second: float
    """Measured ``fdatasync`` rate of a small file in the temp directory: the floor under
    every durable commit on this disk."""
    extra: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        facts = [
            f"CPUs (usable): {self.cpus} x {self.cpu_model}",
            f"RAM: {self.ram_gib:.1f} GiB",
            f"OS: {self.system}",
            f"Python: {self.python}",
            f"SQLite: {self.sqlite}",
            f"Disk: {self.fsyncs_per_second:,.0f} fdatasync/s on a small file in the temp dir",
        ]
        facts.extend(f"{name}: {value}" for name, value in self.extra.items())
        return facts


def machine_info(**extra: str) -> MachineInfo:
    return MachineInfo(
        cpus=len(os.sched_getaffinity(0)),
        cpu_model=_cpu_model(),
        ram_gib=_ram_gib(),
        python=platform.python_version(),
        sqlite=sqlite3.sqlite_version,
        system=f"{platform.system()} {platform.release()}",
        fsyncs_per_second=fsync_rate(),
        extra=dict(extra),
    )


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def _ram_gib() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024**2 if match else 0.0


def fsync_rate(writes: int = 300, directory: str | None = None) -> float:
    """``fdatasync`` calls per second after appending 200 bytes each time."""
    with tempfile.NamedTemporaryFile(dir=directory) as handle:
        descriptor = handle.fileno()
        started = time.perf_counter()
        for _ in range(writes):
            os.write(descriptor, b"x" * 200)
            os.fdatasync(descriptor)
        return writes / (time.perf_counter() - started)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def median_and_rounds(values: Sequence[float]) -> str:
    """The median, then each round's value in brackets, whole numbers: ``12 (11, 12, 15)``."""
    return f"{median(values):.0f} ({', '.join(f'{value:.0f}' for value in values)})"


def run_header(began: float, command: str, load_before: float) -> list[str]:
    """A section's first lines: when the run ended and how long it took (``began``: its
    ``time.perf_counter()``), the command, the machine, and its load at the start and now."""
    return [
        f"Run: {now_utc()}, {time.perf_counter() - began:.0f} s. Command: `{command}`.",
        "",
        *machine_info().lines(),
        "",
        f"Load average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
        "end.",
    ]


def rotations(items: Sequence[T], round_number: int) -> list[T]:
    """``items`` rotated by the round number: each contender goes first in turn, so drift
    in the machine's speed (other load, caches, thermal) is spread over all of them."""
    shift = round_number % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


def fmt_rate(value: float | None) -> str:
    """Events per second, rounded to three significant digits."""
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{_significant(value / 1000)}k"
    return _significant(value)


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _significant(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table padded to line up in a terminal too."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(headers), separator, *(line(row) for row in rows)])


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


KEPT_BELOW = "<!-- kept when the script writes this section again: notes by hand below -->"
"""A line in a section: what follows it, to the section's end, is written by hand (readings,
runs of other code) and stays when the script replaces the section with a new run."""


def replace_section(heading: str, body: str, path: Path = RESULTS_FILE) -> None:
    """Put ``heading`` + ``body`` in the results file, replacing that section if present and
    leaving every other benchmark's section as it is. ``heading`` is a ``## `` line. What the
    old section held below a ``KEPT_BELOW`` line stays, after the new body."""
    if not heading.startswith("## "):
        raise ValueError("sections are level-2 headings ('## ...')")
    section = f"{heading}\n\n{body.strip()}\n"
    text = path.read_text() if path.exists() else f"{RESULTS_TITLE}\n"
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        updated = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        old = lines[start:end]
        if KEPT_BELOW in old:
            kept = "\n".join(old[old.index(KEPT_BELOW) :]).strip("\n")
            section += f"\n{kept}\n"
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:]).strip("\n")
        updated = before + "\n\n" + section + ("\n" + after + "\n" if after else "")
    path.write_text(updated)
