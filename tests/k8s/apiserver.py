"""A real kube-apiserver on etcd, on 127.0.0.1, for server-side dry runs.

No controllers, scheduler or kubelet run: the server stores and validates objects (schemas, CEL
rules, admission), which is all a dry run needs.

A run must never meet a previous one (a CI job killed mid-way used to leave etcd and
kube-apiserver on fixed ports; the next run's readiness check then reached the old server and
failed with "namespace already exists"):

- every port (etcd client and peer, the API server's secure port) is a free one chosen at run
  time, and the etcd data directory is a fresh one, removed at the end;
- each process is started in its own process group, asked to die with the test process (Linux's
  parent-death signal), and stopped by group in the fixture's finalizer and at exit;
- its process groups are written to a run file under the tool cache; a run file whose owner is
  no longer alive (a run killed with SIGKILL, a crashed runner) has its groups stopped at the
  next start, and only groups whose leader is still that etcd or kube-apiserver.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.k8s.tools import Tools, cache_dir

START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
# The programs a run file may stop, as /proc/<pid>/comm starts (it keeps 15 characters of the
# executable's name, e.g. "kube-apiserver-" of kube-apiserver-v1.37.2).
_PROGRAMS = ("etcd", "kube-apiserver")


@dataclass(frozen=True)
class ApiServer:
    kubeconfig: Path
    kubectl: Path
    # The namespace this run's objects go to, unique per run (casetrail-check-<random>).
    namespace: str = ""

    def run(self, *arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *arguments],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    def dry_run(self, manifest: str, *options: str) -> subprocess.CompletedProcess[str]:
        """``kubectl apply --dry-run=server`` of ``manifest`` (YAML text) in this run's
        namespace, with ``options`` (--server-side...)."""
        return self.run(
            "apply", "--dry-run=server", *options, "-n", self.namespace, "-f", "-", stdin=manifest
        )

    def must(self, *arguments: str, stdin: str | None = None) -> str:
        result = self.run(*arguments, stdin=stdin)
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(arguments)} failed:\n{result.stderr}")
        return result.stdout


def runs_dir() -> Path:
    """Where each run lists its process groups, shared by every run of this user."""
    return cache_dir() / "k8s-check-runs"


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, all different (held open together while chosen)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the rest are space-separated.
    return stat.rsplit(")", 1)[1].split()


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), which tells a reused pid apart."""
    fields = _stat(pid)
    return fields[19] if fields else None


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (which /proc and kill(pid, 0) still show)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def program(pid: int) -> str | None:
    """Etcd or kube-apiserver when the process runs one of them (and not a zombie), else None."""
    if not _running(pid):
        return None
    try:
        command = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return next((name for name in _PROGRAMS if command.startswith(name)), None)


def _alive(pid: int, start_time: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start_time is None or _start_time(pid) in (None, start_time)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _stop_group(pgid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the group, SIGKILL it after `timeout`; returns once its leader has exited.

    The leader is the whole group: etcd and kube-apiserver start no processes of their own.
    """
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _running(pgid):
        _signal_group(pgid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 5
        while _running(pgid) and time.monotonic() < kill_deadline:
            time.sleep(0.05)


def clean_stale_runs(directory: Path | None = None) -> list[int]:
    """Stop the process groups of runs whose owner died without stopping them; returns them.

    A group is stopped only when its leader is still the process the run started (same pid,
    same start time, an etcd or kube-apiserver): a pid reused since is never signalled.
    """
    stopped: list[int] = []
    for path in sorted((directory or runs_dir()).glob("*.json")):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if _alive(int(run["owner"]), run.get("owner_start")):
            continue
        for group in run.get("groups", []):
            pgid, start = int(group["pgid"]), group.get("start")
            if program(pgid) and _alive(pgid, start):
                _stop_group(pgid)
                stopped.append(pgid)
        data_dir = run.get("data_dir")
        if data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        path.unlink(missing_ok=True)
    return stopped


class _RunFile:
    """This run's entry in runs_dir(): its owner and the process groups it started."""

    def __init__(self, directory: Path, data_dir: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        owner = os.getpid()
        self.path = directory / f"{owner}-{time.time_ns()}.json"
        self._run: dict[str, object] = {
            "owner": owner,
            "owner_start": _start_time(owner),
            "data_dir": str(data_dir),
            "groups": [],
        }
        self._write()

    def _write(self) -> None:
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(self._run))
        partial.replace(self.path)

    def add(self, process: subprocess.Popen[bytes]) -> None:
        groups = self._run["groups"]
        assert isinstance(groups, list)
        groups.append({"pgid": process.pid, "start": _start_time(process.pid)})
        self._write()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _die_with_parent() -> None:
    """In the child before exec: its own process group, SIGKILL when the test process dies."""
    os.setpgid(0, 0)
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _start(command: list[str], log: Path, run_file: _RunFile) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    run_file.add(process)
    return process


def _stopper(processes: list[subprocess.Popen[bytes]]) -> Callable[[], None]:
    def stop() -> None:
        # The API server first: stopping etcd under it makes it retry for a long time.
        for process in reversed(processes):
            if process.returncode is None:
                _stop_group(process.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)

    return stop


def _log_tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-30:])


@contextmanager
def running_apiserver(tools: Tools, workdir: Path) -> Iterator[ApiServer]:
    clean_stale_runs()
    etcd_port, peer_port, api_port = free_ports(3)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="etcd-", dir=workdir))
    key = workdir / "service-accounts.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    token = "casetrail-check-admin-token"
    (workdir / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd_log = workdir / "etcd.log"
    api_log = workdir / "kube-apiserver.log"
    run_file = _RunFile(runs_dir(), data_dir)
    processes: list[subprocess.Popen[bytes]] = []
    stop = _stopper(processes)
    # Even when the fixture's finalizer never runs (an interrupted session, a fatal error).
    atexit.register(stop)
    try:
        etcd = _start(
            [
                str(tools.etcd),
                "--name=casetrail-check",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=casetrail-check={peer_url}",
                "--unsafe-no-fsync",
            ],
            etcd_log,
            run_file,
        )
        processes.append(etcd)
        apiserver = _start(
            [
                str(tools.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={workdir / 'certs'}",
                # Loopback has no routable address for the kubernetes Service's endpoints.
                "--endpoint-reconciler-type=none",
                "--service-cluster-ip-range=10.96.0.0/16",
                f"--token-auth-file={workdir / 'tokens.csv'}",
                "--authorization-mode=AlwaysAllow",
                f"--service-account-key-file={key}",
                f"--service-account-signing-key-file={key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--enable-priority-and-fairness=false",
            ],
            api_log,
            run_file,
        )
        processes.append(apiserver)
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            "clusters:\n- name: check\n  cluster:\n"
            f"    server: https://127.0.0.1:{api_port}\n"
            "    insecure-skip-tls-verify: true\n"
            "users:\n- name: admin\n  user:\n"
            f"    token: {token}\n"
            "contexts:\n- name: check\n  context: {cluster: check, user: admin}\n"
            "current-context: check\n"
        )
        server = ApiServer(kubeconfig, tools.kubectl, f"casetrail-check-{secrets.token_hex(4)}")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            # Ours must still run: a port taken since it was chosen makes one exit, and another
            # server answering on it must never be mistaken for this one.
            for process, log in ((etcd, etcd_log), (apiserver, api_log)):
                if process.poll() is not None:
                    raise RuntimeError(f"{log.name} exited:\n{_log_tail(log)}")
            if server.run("get", "--raw", "/readyz").returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-apiserver not ready:\n{_log_tail(api_log)}")
            time.sleep(1)
        server.must("create", "namespace", server.namespace)
        yield server
    finally:
        stop()
        atexit.unregister(stop)
        shutil.rmtree(data_dir, ignore_errors=True)
        run_file.remove()
