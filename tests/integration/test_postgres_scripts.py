"""infra/postgres/start.sh and stop.sh on a cluster of their own (its own data dir and port,
never the servers the other tests use), after the postmaster died hard and its PID went to
another process of the cluster's OS user: `pg_ctl status` took that process for the server, so
start.sh never started the cluster (and failed with "Connection refused"), and stop.sh sent it
SIGINT. `make test` starts PostgreSQL through these scripts."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.support.servers import free_port, servers_required

SCRIPTS = Path(__file__).resolve().parents[2] / "infra" / "postgres"
# The scripts' own choice of OS user: PostgreSQL refuses to run as root (common.sh).
CLUSTER_USER = "postgres" if os.getuid() == 0 else None


@dataclass(frozen=True)
class Cluster:
    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "CASETRAIL_PG_DIR": str(self.directory),
            "CASETRAIL_PG_PORT": str(self.port),
            "CASETRAIL_PG_STOP_TIMEOUT": "10",
        }
        return subprocess.run(
            [str(SCRIPTS / script)], env=env, capture_output=True, text=True, timeout=180
        )

    def must(self, script: str) -> str:
        result = self.run(script)
        assert result.returncode == 0, f"{script}:\n{result.stderr}"
        return result.stderr

    def serves(self) -> bool:
        dsn = f"postgresql://postgres@127.0.0.1:{self.port}/casetrail"
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
        except psycopg.OperationalError:
            return False
        return True


def _postgres_installed() -> bool:
    return bool(os.environ.get("CASETRAIL_PG_BIN")) or bool(
        glob.glob("/usr/lib/postgresql/*/bin/initdb")
    )


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not _postgres_installed():
        message = "the PostgreSQL server is not installed (infra/postgres/install.sh)"
        if servers_required():
            pytest.fail(message)
        pytest.skip(message)
    # Under /tmp and open to search: as root the cluster belongs to `postgres`, which must
    # reach it (pytest's tmp_path is under a 0700 directory).
    parent = Path(tempfile.mkdtemp(prefix="casetrail-pg-scripts-"))
    parent.chmod(0o755)
    created = Cluster(parent / "cluster", free_port())
    try:
        yield created
    finally:
        created.run("stop.sh")
        shutil.rmtree(parent, ignore_errors=True)


def _processes_working_in(directory: Path) -> list[int]:
    """The postmaster and its backends work in the data dir."""
    found = []
    for process in Path("/proc").iterdir():
        if process.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(process / "cwd")) == directory.resolve():
                    found.append(int(process.name))
    return found


def _kill_hard(cluster: Cluster) -> str:
    """SIGKILL the postmaster, as the OOM killer or a container stop would; answers what its
    postmaster.pid said, once none of its processes remains."""
    pid_file = (cluster.data / "postmaster.pid").read_text()
    os.kill(int(pid_file.splitlines()[0]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _processes_working_in(cluster.data):
        assert time.monotonic() < deadline, "the cluster's backends outlived their postmaster"
        time.sleep(0.1)
    return pid_file


def _left_naming(cluster: Cluster, pid_file: str, pid: int) -> None:
    """The dead postmaster's postmaster.pid, its PID now another process's."""
    lines = pid_file.splitlines(keepends=True)
    (cluster.data / "postmaster.pid").write_text(f"{pid}\n" + "".join(lines[1:]))


def test_a_stale_postmaster_pid_reused_by_another_process_is_neither_signalled_nor_trusted(
    cluster: Cluster,
) -> None:
    cluster.must("start.sh")
    assert cluster.serves()
    pid_file = _kill_hard(cluster)
    with subprocess.Popen(["sleep", "300"], user=CLUSTER_USER) as reused:
        try:
            _left_naming(cluster, pid_file, reused.pid)
            stopped = cluster.must("stop.sh")
            assert "removing stale" in stopped
            assert reused.poll() is None, "stop.sh signalled the process that reused the PID"
            assert not (cluster.data / "postmaster.pid").exists()

            _left_naming(cluster, pid_file, reused.pid)
            started = cluster.must("start.sh")
            assert "removing stale" in started
            assert cluster.serves()
            assert reused.poll() is None
        finally:
            reused.kill()

    # And the cluster goes on as usual: stopped, started, stopped.
    cluster.must("stop.sh")
    assert not cluster.serves()
    cluster.must("start.sh")
    assert cluster.serves()
    assert "stopped" in cluster.must("stop.sh")
    assert not cluster.serves()


def test_a_running_cluster_is_told_by_a_caller_that_may_not_read_its_working_dir(
    cluster: Cluster,
) -> None:
    """Root without CAP_SYS_PTRACE (a container's default) cannot read the cwd of the cluster
    user's postmaster: it was taken for a stale postmaster.pid, which stop.sh removed (the
    cluster shuts itself down once its lock file is gone) and start.sh removed before failing
    on the port in use."""
    cluster.must("start.sh")
    without_ptrace = ["setpriv", "--bounding-set", "-sys_ptrace", "--inh-caps", "-sys_ptrace"]
    env = {
        **os.environ,
        "CASETRAIL_PG_DIR": str(cluster.directory),
        "CASETRAIL_PG_PORT": str(cluster.port),
    }
    again = subprocess.run(
        [*(without_ptrace if os.getuid() == 0 else []), str(SCRIPTS / "start.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert again.returncode == 0, again.stderr
    assert "removing stale" not in again.stderr
    assert (cluster.data / "postmaster.pid").exists()
    assert cluster.serves()
