"""Every rendered manifest is accepted by a real kube-apiserver with the Strimzi,
CloudNativePG, KEDA and Prometheus Operator (PodMonitor, PrometheusRule) CRDs installed:
`kubectl apply --dry-run=server --server-side`. The server applies what schemas alone miss:
the CRDs' CEL rules, defaulting, admission, and field types the way the API server (not a JSON
schema) reads them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.k8s.apiserver import ApiServer, running_apiserver
from tests.k8s.render import PROFILES, Rendered, helm_template
from tests.k8s.tools import Tools, missing

POD_SECURITY = "pod-security.kubernetes.io/warn"
POD_SECURITY_WARNING = "would violate PodSecurity"


@pytest.fixture(scope="module")
def apiserver(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    missing(tools.kube_apiserver, tools.kubectl, tools.etcd, tools.crd_dir / ".done")
    with running_apiserver(tools, tmp_path_factory.mktemp("kube")) as server:
        for crd in tools.crd_files():
            server.must("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        server.must("wait", "--for=condition=Established", "--timeout=120s", "crd", "--all")
        # The API server's PodSecurity admission warns of every pod template (Deployments, Jobs)
        # below the "restricted" standard applied to this namespace.
        server.must("label", "namespace", server.namespace, f"{POD_SECURITY}=restricted")
        yield server


def test_the_operators_crds_are_served(apiserver: ApiServer) -> None:
    resources = apiserver.must("api-resources", "-o", "name")
    for kind in (
        "kafkas.kafka.strimzi.io",
        "kafkanodepools.kafka.strimzi.io",
        "kafkatopics.kafka.strimzi.io",
        "kafkausers.kafka.strimzi.io",
        "clusters.postgresql.cnpg.io",
        "scaledobjects.keda.sh",
        "triggerauthentications.keda.sh",
        "podmonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ):
        assert kind in resources.split()


def test_the_server_accepts_every_manifest(rendered: Rendered, apiserver: ApiServer) -> None:
    result = apiserver.dry_run(rendered.text, "--server-side", "--field-manager=casetrail-check")
    assert result.returncode == 0, result.stderr
    # Non-root, no privilege escalation, every capability dropped, seccomp RuntimeDefault...
    assert POD_SECURITY_WARNING not in result.stderr, result.stderr
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(rendered.documents), result.stdout


@pytest.mark.parametrize(
    ("profile", "setting"),
    [
        # Upper case and a trailing dot are valid in a Kafka topic's name, not in an object's.
        ("small", "kafka.caseEventsTopic=Casetrail.Case_Events."),
        # SCRAM over TLS, KEDA included.
        ("large", "kafka.tls.enabled=true"),
    ],
)
def test_the_server_accepts_what_the_profiles_leave_out(
    helm: Tools, apiserver: ApiServer, profile: str, setting: str
) -> None:
    result = helm_template(helm, PROFILES[profile], "--set", setting)
    assert result.returncode == 0, result.stderr
    applied = apiserver.dry_run(result.stdout, "--server-side", "--field-manager=casetrail-check")
    assert applied.returncode == 0, applied.stderr


def test_the_server_refuses_what_helm_validate_lets_through(apiserver: ApiServer) -> None:
    bad = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\n"
        "spec:\n  replicas: two\n  selector: {matchLabels: {app: bad}}\n"
        "  template:\n    metadata: {labels: {app: bad}}\n"
        "    spec: {containers: [{name: bad, image: bad}]}\n"
    )
    result = apiserver.dry_run(bad, "--server-side")
    assert result.returncode != 0
    assert "replicas" in result.stderr


def test_the_server_checks_the_operators_cel_rules(apiserver: ApiServer) -> None:
    # Valid for the JSON schema (kubeconform), refused by a CEL rule of CloudNativePG's CRD.
    bad = (
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: bad}\n"
        "spec:\n  instances: 3\n  storage: {size: 1Gi}\n"
        "  postgresql:\n    synchronous:\n"
        "      {method: any, number: 1, dataDurability: preferred, standbyNamesPre: [a]}\n"
    )
    result = apiserver.dry_run(bad, "--server-side")
    assert result.returncode != 0
    assert "dataDurability set to 'preferred' requires empty 'standbyNamesPre'" in result.stderr


def test_the_server_warns_of_a_pod_below_the_restricted_standard(apiserver: ApiServer) -> None:
    # What makes the check above mean something: a root-capable, unconfined pod is reported.
    loose = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: loose}\n"
        "spec:\n  selector: {matchLabels: {app: loose}}\n"
        "  template:\n    metadata: {labels: {app: loose}}\n"
        "    spec: {containers: [{name: loose, image: loose}]}\n"
    )
    result = apiserver.dry_run(loose)
    assert result.returncode == 0, result.stderr
    assert POD_SECURITY_WARNING in result.stderr
    for rule in ("allowPrivilegeEscalation", "capabilities", "runAsNonRoot", "seccompProfile"):
        assert rule in result.stderr
