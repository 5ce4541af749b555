"""The tools `make k8s-check` installs (infra/k8s/install.sh), found in the tool cache.

Versions come from infra/k8s/common.sh, the one place they are pinned. A missing tool fails
the test in CI (CASETRAIL_REQUIRE_SERVERS=1, set by make k8s-check) and skips it elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from tests.support.servers import servers_required

REPO = Path(__file__).resolve().parents[2]
COMMON_SH = REPO / "infra" / "k8s" / "common.sh"
CHART = REPO / "infra" / "helm" / "casetrail"


@cache
def versions() -> dict[str, str]:
    """``NAME=value`` assignments of common.sh (version pins only)."""
    pins = re.findall(r"^([A-Z_]+_VERSION)=([0-9][^\s#]*)", COMMON_SH.read_text(), re.MULTILINE)
    return dict(pins)


def cache_dir() -> Path:
    configured = os.environ.get("CASETRAIL_TOOLS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "casetrail"


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubeconform: Path
    promtool: Path
    kube_apiserver: Path
    kubectl: Path
    etcd: Path
    core_schemas: Path
    crd_dir: Path

    @property
    def kube_version(self) -> str:
        return versions()["KUBE_VERSION"]

    @property
    def crd_schemas(self) -> Path:
        return self.crd_dir / "schemas"

    def crd_files(self) -> list[Path]:
        return sorted(self.crd_dir.glob("*/*.yaml"))


def tool_paths() -> Tools:
    pins = versions()
    root = cache_dir()
    bin_dir = root / "bin"
    crds = (
        f"strimzi-{pins['STRIMZI_VERSION']}-cnpg-{pins['CNPG_VERSION']}-keda-{pins['KEDA_VERSION']}"
        f"-prometheus-operator-{pins['PROMETHEUS_OPERATOR_VERSION']}-rules"
    )
    return Tools(
        helm=bin_dir / f"helm-v{pins['HELM_VERSION']}",
        kubeconform=bin_dir / f"kubeconform-v{pins['KUBECONFORM_VERSION']}",
        promtool=bin_dir / "promtool-deb",  # Debian's (infra/k8s/install.sh)
        kube_apiserver=bin_dir / f"kube-apiserver-v{pins['KUBE_VERSION']}",
        kubectl=bin_dir / f"kubectl-v{pins['KUBE_VERSION']}",
        etcd=Path(shutil.which("etcd") or "/usr/bin/etcd"),
        core_schemas=root / "schemas" / f"kubernetes-v{pins['KUBE_VERSION']}",
        crd_dir=root / "crds" / crds,
    )


def missing(*paths: Path) -> None:
    """Fail (CI) or skip (developer machine) when a tool is not installed."""
    absent = [str(path) for path in paths if not path.exists()]
    if not absent:
        return
    message = f"not installed: {', '.join(absent)}; run `make k8s-install`"
    if servers_required():
        pytest.fail(message)
    pytest.skip(message)
