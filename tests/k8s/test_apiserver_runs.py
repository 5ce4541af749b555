"""A run of the kube-apiserver check never meets a previous one.

A CI job killed mid-way (SIGKILL: no finalizer, no atexit) used to leave etcd and kube-apiserver
on their fixed ports, and the next run failed ("namespace already exists", or etcd unable to
bind). These tests kill a run for real and start the next one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.apiserver import clean_stale_runs, program, running_apiserver
from tests.k8s.tools import REPO, Tools, missing

# A run, started as its own process: it prints READY once the API server answers, then waits to
# be killed.
_RUN = """
import sys, time
from pathlib import Path
from tests.k8s.apiserver import running_apiserver
from tests.k8s.tools import tool_paths
with running_apiserver(tool_paths(), Path(sys.argv[1])) as server:
    print("READY", flush=True)
    time.sleep(600)
"""


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(map(program, pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(map(program, pids))


@pytest.fixture
def kube_tools(tools: Tools) -> Tools:
    missing(tools.kube_apiserver, tools.kubectl, tools.etcd)
    return tools


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a test saw started; any still an etcd or kube-apiserver at the end is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if program(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_run_killed_mid_way_leaves_nothing_and_the_next_run_passes(
    kube_tools: Tools, tmp_path: Path, leftovers: list[int]
) -> None:
    killed = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(tmp_path / "killed")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert killed.stdout is not None
        assert killed.stdout.readline().strip() == "READY"
        started = _children(killed.pid)
        leftovers.extend(started)
        assert sorted(filter(None, map(program, started))) == ["etcd", "kube-apiserver"]
    finally:
        killed.kill()
        killed.wait()
    # Killed with SIGKILL, the run stopped nothing itself: its processes die with it.
    assert _gone(started, timeout=15), [(pid, program(pid)) for pid in started]
    # The next run starts, on other ports and an empty etcd, and dry-runs into its namespace.
    with running_apiserver(kube_tools, tmp_path / "next") as server:
        assert server.must("get", "namespace", server.namespace, "-o", "name").strip() == (
            f"namespace/{server.namespace}"
        )
        config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata: {a: b}\n"
        server.must(
            "apply", "--dry-run=server", "-n", server.namespace, "-f", "-", stdin=config_map
        )


def test_the_next_run_stops_what_a_dead_run_listed(
    kube_tools: Tools, tmp_path: Path, leftovers: list[int]
) -> None:
    # A run whose processes outlived it (no parent-death signal: another OS, or the signal
    # lost in a race with the owner's death): an etcd in its own group, its owner gone.
    stale = subprocess.Popen(
        [
            str(kube_tools.etcd),
            f"--data-dir={tmp_path / 'stale-etcd'}",
            "--listen-client-urls=http://127.0.0.1:0",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        process_group=0,
    )
    # Not ours to stop: a live run's etcd, and a dead run's pid now held by another program.
    live = subprocess.Popen(
        [
            str(kube_tools.etcd),
            f"--data-dir={tmp_path / 'live-etcd'}",
            "--listen-client-urls=http://127.0.0.1:0",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        process_group=0,
    )
    other = subprocess.Popen(["sleep", "600"], process_group=0)
    leftovers.extend([stale.pid, live.pid])
    owner = subprocess.Popen(["true"])
    owner.wait()
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "dead.json").write_text(
        json.dumps(
            {
                "owner": owner.pid,
                "groups": [{"pgid": stale.pid}, {"pgid": other.pid}],
                "data_dir": str(tmp_path / "stale-etcd"),
            }
        )
    )
    (runs / "live.json").write_text(
        json.dumps({"owner": os.getpid(), "groups": [{"pgid": live.pid}]})
    )
    try:
        assert clean_stale_runs(runs) == [stale.pid]
        assert stale.wait(timeout=5) is not None
        assert live.poll() is None
        assert other.poll() is None
        assert not (runs / "dead.json").exists()
        assert (runs / "live.json").exists()
        assert not (tmp_path / "stale-etcd").exists()
    finally:
        for process in (stale, live, other):
            process.kill()
            process.wait()
