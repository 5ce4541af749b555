"""CPU accounting from ``/proc``: the servers (and their main threads), PostgreSQL, Kafka, the load
generator and the whole machine."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, thread: int | None = None) -> float | None:
    """User + system CPU seconds of a process (all its threads) or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after it do not.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_of(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes together (one that is gone counts 0)."""
    return sum(process_cpu(pid) or 0.0 for pid in pids)


def machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle (all cores) since boot."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / TICKS


def pids_where(test: Callable[[str, bytes], bool]) -> list[int]:
    """Pids whose (command name, command line) pass ``test``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if test(comm, cmdline):
            found.append(int(entry.name))
    return found


def postgres_pids() -> list[int]:
    return pids_where(lambda comm, _cmdline: comm == "postgres")


def kafka_pids() -> list[int]:
    return pids_where(lambda _comm, cmdline: b"kafka.Kafka" in cmdline)


@dataclass(frozen=True)
class CpuSnapshot:
    groups: dict[str, dict[int, float]]
    machine: float


class CpuProbe:
    """Snapshots of the CPU time of the servers (and their main threads), PostgreSQL, Kafka,
    this process and the machine."""

    def __init__(self, servers: Mapping[str, int]) -> None:
        self._servers = dict(servers)

    def snapshot(self) -> CpuSnapshot:
        groups: dict[str, dict[int, float]] = {}
        for label, pid in self._servers.items():
            groups[label] = _cpu_of([pid])
            main = process_cpu(pid, thread=pid)
            groups[f"{label}/main"] = {pid: main} if main is not None else {}
        groups["postgres"] = _cpu_of(postgres_pids())
        groups["kafka"] = _cpu_of(kafka_pids())
        groups["loadgen"] = _cpu_of([os.getpid()])
        return CpuSnapshot(groups, machine_busy())

    @staticmethod
    def spent(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
        spent = {
            label: sum(cpu - before.groups.get(label, {}).get(pid, 0.0) for pid, cpu in now.items())
            for label, now in after.groups.items()
        }
        spent["machine"] = after.machine - before.machine
        return spent


def _cpu_of(pids: Sequence[int]) -> dict[int, float]:
    cpu = {pid: process_cpu(pid) for pid in pids}
    return {pid: seconds for pid, seconds in cpu.items() if seconds is not None}
