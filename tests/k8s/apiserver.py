"""A real kube-apiserver on etcd, on 127.0.0.1, for server-side dry runs.

Ports come from CASETRAIL_K8S_API_PORT (16443), CASETRAIL_ETCD_PORT (16479) and
CASETRAIL_ETCD_PEER_PORT (16480). No controllers, scheduler or kubelet run: the server stores
and validates objects (schemas, CEL rules, admission), which is all a dry run needs.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.k8s.tools import Tools

START_TIMEOUT = 120.0


@dataclass(frozen=True)
class ApiServer:
    kubeconfig: Path
    kubectl: Path

    def run(self, *arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *arguments],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    def must(self, *arguments: str, stdin: str | None = None) -> str:
        result = self.run(*arguments, stdin=stdin)
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(arguments)} failed:\n{result.stderr}")
        return result.stdout


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-30:])


@contextmanager
def running_apiserver(tools: Tools, workdir: Path) -> Iterator[ApiServer]:
    api_port = _port("CASETRAIL_K8S_API_PORT", 16443)
    etcd_port = _port("CASETRAIL_ETCD_PORT", 16479)
    peer_port = _port("CASETRAIL_ETCD_PEER_PORT", 16480)
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "service-accounts.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    token = "casetrail-check-admin-token"
    (workdir / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd_log = workdir / "etcd.log"
    api_log = workdir / "kube-apiserver.log"
    with etcd_log.open("wb") as etcd_out:
        etcd = subprocess.Popen(
            [
                str(tools.etcd),
                "--name=casetrail-check",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=casetrail-check={peer_url}",
                "--unsafe-no-fsync",
            ],
            stdout=etcd_out,
            stderr=subprocess.STDOUT,
        )
    try:
        with api_log.open("wb") as api_out:
            apiserver = subprocess.Popen(
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
                stdout=api_out,
                stderr=subprocess.STDOUT,
            )
        try:
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
            server = ApiServer(kubeconfig, tools.kubectl)
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                for process, log in ((etcd, etcd_log), (apiserver, api_log)):
                    if process.poll() is not None:
                        raise RuntimeError(f"{log.name} exited:\n{_log_tail(log)}")
                if server.run("get", "--raw", "/readyz").returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"kube-apiserver not ready:\n{_log_tail(api_log)}")
                time.sleep(1)
            yield server
        finally:
            # The API server first: stopping etcd under it makes it retry for a long time.
            _stop(apiserver)
    finally:
        _stop(etcd)
