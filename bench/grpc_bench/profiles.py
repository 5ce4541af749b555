"""What the cProfile statistics of a profiled row say, per command."""

from __future__ import annotations

from typing import Any

from bench.common import fmt_rate, markdown_table
from bench.grpc_bench.plan import REPO
from bench.grpc_bench.results import Profile

Key = tuple[str, int, str]


Entry = tuple[int, int, float, float, Any]


def raw_stats(profile: Profile) -> dict[Key, Entry]:
    stats: dict[Key, Entry] = profile.stats.stats  # type: ignore[attr-defined]
    return stats


def short_function(key: Key) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    path = filename
    for prefix in (str(REPO) + "/", "site-packages/", "/lib/python3"):
        if prefix in path:
            path = path.split(prefix, 1)[1]
    return f"{path}:{line} {name}"


def loop_time(profile: Profile) -> float:
    """Seconds the profiled thread spent in the window (wall clock, all functions' own time)."""
    return sum(entry[2] for entry in raw_stats(profile).values())


def profile_tables(profile: Profile) -> tuple[str, str]:
    """Top 15 functions by own time and top 15 casetrail functions by cumulative time, in
    microseconds per command."""
    raw = raw_stats(profile)
    commands = max(profile.row.ok, 1)
    total = loop_time(profile) or 1.0

    def row(key: Key, entry: Entry) -> list[str]:
        _, calls, own, cumulative, _ = entry
        return [
            f"`{short_function(key)}`",
            f"{calls / commands:.1f}",
            f"{own / commands * 1e6:.0f}",
            f"{cumulative / commands * 1e6:.0f}",
            f"{own / total:.1%}",
        ]

    headers = ["function", "calls/command", "own us/command", "cumulative us/command", "own share"]
    by_own = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:15]
    ours = [
        (key, entry)
        for key, entry in raw.items()
        if key[0].startswith(str(REPO)) and "/.venv/" not in key[0] and "/bench/" not in key[0]
    ]
    by_cumulative = sorted(ours, key=lambda item: item[1][3], reverse=True)[:15]
    return (
        markdown_table(headers, [row(key, entry) for key, entry in by_own]),
        markdown_table(headers, [row(key, entry) for key, entry in by_cumulative]),
    )


def per_command(profile: Profile, file_suffix: str, name: str) -> tuple[float, float, float]:
    """Calls, own microseconds and cumulative microseconds per command of the functions
    called ``name`` in files ending with ``file_suffix`` (``~`` for built-ins)."""
    commands = max(profile.row.ok, 1)
    calls = own = cumulative = 0.0
    for (filename, _line, function), entry in raw_stats(profile).items():
        if function == name and filename.endswith(file_suffix):
            calls += entry[1]
            own += entry[2]
            cumulative += entry[3]
    return calls / commands, own / commands * 1e6, cumulative / commands * 1e6


def share(profile: Profile, micros_per_command: float) -> str:
    total = loop_time(profile)
    return f"{micros_per_command * profile.row.ok / 1e6 / total:.0%}" if total else "n/a"


def profile_section(profile: Profile) -> list[str]:
    own, cumulative = profile_tables(profile)
    row = profile.row
    server = row.spec.server
    return [
        f"#### Profile: {profile.what}",
        "",
        f"OpenCase, {row.spec.concurrency} in flight, cProfile (wall clock) on the event loop's "
        f"thread for {row.seconds:.0f} s: {row.ok:,} commands ({fmt_rate(row.rate)}/s under "
        f"the profiler), {loop_time(profile):.1f} s of that thread's time. The main thread used "
        f"{row.cpu.get(f'{server}/main', 0.0):.1f} of the process's "
        f"{row.cpu.get(server, 0.0):.1f} CPU-seconds; the rest went to threads cProfile does "
        "not see (SQLite writer and readers, gRPC's own). Times are per command. Wall clock: "
        "a function's time includes the thread blocked in it (fsync, a send that wakes "
        "another process) or waiting for a core. A coroutine counts one call per resumption, "
        "and its time excludes the time it spent suspended. `Context.run`'s own time is "
        "mostly gRPC's Cython code, which cProfile cannot see into.",
        "",
        "Top 15 functions by own time:",
        "",
        own,
        "",
        "Top 15 casetrail functions by cumulative time:",
        "",
        cumulative,
    ]
