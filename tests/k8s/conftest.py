"""Fixtures of the Kubernetes checks: the installed tools, the chart rendered per profile and a
kube-apiserver serving the operators' CRDs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.k8s.apiserver import ApiServer, running_apiserver
from tests.k8s.render import PROFILES, Rendered, render_profile
from tests.k8s.tools import Tools, missing, tool_paths

POD_SECURITY = "pod-security.kubernetes.io/warn"


@pytest.fixture(scope="session")
def tools() -> Tools:
    return tool_paths()


@pytest.fixture(scope="session")
def helm(tools: Tools) -> Tools:
    missing(tools.helm)
    return tools


@pytest.fixture(scope="session", params=sorted(PROFILES))
def rendered(request: pytest.FixtureRequest, helm: Tools) -> Rendered:
    """The chart rendered with one profile's values files."""
    return render_profile(helm, request.param)


@pytest.fixture(scope="module")
def apiserver(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """kube-apiserver and etcd with the Strimzi, CloudNativePG, KEDA and Prometheus Operator CRDs,
    one per test module."""
    missing(tools.kube_apiserver, tools.kubectl, tools.etcd, tools.crd_dir / ".done")
    with running_apiserver(tools, tmp_path_factory.mktemp("kube")) as server:
        for crd in tools.crd_files():
            server.must("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        server.must("wait", "--for=condition=Established", "--timeout=120s", "crd", "--all")
        # The API server's PodSecurity admission warns of every pod template (Deployments, Jobs)
        # below the "restricted" standard applied to this namespace.
        server.must("label", "namespace", server.namespace, f"{POD_SECURITY}=restricted")
        yield server
