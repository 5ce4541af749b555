"""The tables of the commands section, and the helpers the other sections share to format rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.common import fmt_rate, fmt_ratio, markdown_table
from bench.grpc_bench.plan import TARGET
from bench.grpc_bench.results import RowResult

COMMAND_NAMES = {
    "open_case": "intake OpenCase",
    "register_client": "intake RegisterClient",
    "make_referral": "coordination MakeReferral",
    "get_case_view": "planning GetCaseView",
}


def ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"


def cores(value: float) -> str:
    return f"{value:.2f}"


def main_table(results: Sequence[RowResult]) -> str:
    headers = [
        "setup",
        "command",
        "load",
        "commands/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "server process CPU (cores)",
        "of it main thread",
        "commands per server CPU-s",
        "load generator (cores)",
        "machine busy (of 2)",
        "vs target",
    ]
    table = []
    for r in results:
        server = r.spec.server
        failed = sum(r.errors.values())
        per_cpu = r.per_cpu_second(server)
        main_share = r.cpu.get(f"{server}/main", 0.0) / r.cpu[server] if r.cpu.get(server) else 0
        table.append(
            [
                r.spec.setup,
                COMMAND_NAMES[r.spec.command],
                r.spec.load(),
                fmt_rate(r.rate),
                ms(r.p50_ms),
                ms(r.p99_ms),
                str(failed) if not failed else f"{failed} ({_codes(r.errors)})",
                f"{cores(r.cores(server))} ({server})",
                f"{main_share:.0%}",
                fmt_rate(per_cpu),
                cores(r.cores("loadgen")),
                cores(r.cores("machine")),
                fmt_ratio(r.rate / TARGET) if r.spec.mode == "closed" else "-",
            ]
        )
    return markdown_table(headers, table)


def _codes(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{code} {count}" for code, count in sorted(errors.items()))


def cpu_split_table(results: Sequence[RowResult], labels: Sequence[str]) -> str:
    """Where the machine's CPU went in each window, in cores (CPU-seconds per second)."""
    headers = ["setup", "command", "load", *labels, "PostgreSQL", "Kafka", "load generator"]
    headers += ["anything else", "machine busy (of 2)"]
    table = []
    for r in results:
        ours = [r.cores(label) for label in labels]
        known = [*ours, r.cores("postgres"), r.cores("kafka"), r.cores("loadgen")]
        other = max(r.cores("machine") - sum(known), 0.0)
        table.append(
            [
                r.spec.setup,
                COMMAND_NAMES[r.spec.command],
                r.spec.load(),
                *(cores(value) for value in known),
                cores(other),
                cores(r.cores("machine")),
            ]
        )
    return markdown_table(headers, table)


def waits_table(results: Sequence[RowResult]) -> str:
    """What a durable write and a database round trip cost while each row ran."""
    headers = ["setup", "command", "load", "servers idle after (s)", "fdatasync p50 / p99 ms"]
    headers += ["PostgreSQL `SELECT 1` p50 / p99 ms", "database transactions per command"]
    headers += ["rows written per command"]
    table = []
    for r in results:
        found = r.samples
        written = r.database.get("tup_inserted", 0.0) + r.database.get("tup_updated", 0.0)
        table.append(
            [
                r.spec.setup,
                COMMAND_NAMES[r.spec.command],
                r.spec.load(),
                f"{r.settled:.1f}",
                pair(found, "fsync"),
                pair(found, "pg"),
                f"{r.database['xact_commit'] / r.ok:.1f}" if r.database and r.ok else "-",
                f"{written / r.ok:.1f}" if r.database and r.ok else "-",
            ]
        )
    return markdown_table(headers, table)


def pair(samples: Mapping[str, float], what: str) -> str:
    if f"{what} p50 ms" not in samples:
        return "-"
    return f"{samples[f'{what} p50 ms']:.2f} / {samples[f'{what} p99 ms']:.2f}"


def micros_per_command(row: RowResult, label: str) -> float | None:
    """CPU microseconds ``label`` spent per successful command of the row's window."""
    return row.cpu.get(label, 0.0) / row.ok * 1e6 if row.ok else None


def find(rows: Sequence[RowResult], command: str, mode: str = "closed") -> RowResult | None:
    return next((r for r in rows if r.spec.command == command and r.spec.mode == mode), None)
