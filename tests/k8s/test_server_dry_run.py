"""Every rendered manifest is accepted by a real kube-apiserver with the Strimzi,
CloudNativePG, KEDA and Prometheus Operator (PodMonitor, PrometheusRule) CRDs installed:
`kubectl apply --dry-run=server --server-side`. The server applies what schemas alone miss:
the CRDs' CEL rules, defaulting, admission, and field types the way the API server (not a JSON
schema) reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.apiserver import ApiServer
from tests.k8s.render import (
    PROFILES,
    RELEASE,
    Rendered,
    helm_template,
    kafka_pod_names,
    values_at_their_maxima,
)
from tests.k8s.tools import Tools

POD_SECURITY_WARNING = "would violate PodSecurity"


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


@pytest.mark.parametrize(
    ("release", "setting"),
    [
        # A subscriber named after the 2-1-1 helpline: its groups' prefix, 211., is a number.
        (RELEASE, "kafka.subscribers[0].name=211"),
        (RELEASE, "kafka.caseEventsTopic=2024"),
        (RELEASE, "kafka.cluster.storage.storageClass=1"),
        (RELEASE, "kafka.tls.caSecret=2024"),
        (RELEASE, "networkPolicy.kedaNamespace=2024"),
        (RELEASE, "database.name=on"),
        (RELEASE, "database.owner=yes"),
        (RELEASE, "secrets.database=2024"),
        (RELEASE, "database.cluster.storage.storageClass=1"),
        (RELEASE, "database.cluster.operatorNamespace=2024"),
        (RELEASE, "metrics.prometheusRule.alerts.deadLetters.for=0"),
        ("211", "logLevel=INFO"),
    ],
)
def test_the_server_accepts_names_yaml_would_read_as_numbers_or_booleans(
    helm: Tools, apiserver: ApiServer, release: str, setting: str
) -> None:
    """A name the schema takes is printed as a string wherever it goes: printed bare, 2024 or
    211. was read as a number and on or yes as a boolean, where the API server takes only a
    string (a KafkaUser's ACL, a KafkaTopic's topicName, a label's value), and the install
    failed."""
    result = helm_template(
        helm, PROFILES["large-production-monitored"], "--set-string", setting, release=release
    )
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


def _strimzi_pod(name: str, kafka: str) -> dict[str, Any]:
    """A Kafka pod as Strimzi makes it (WorkloadUtils.createStatefulPod): its name is also its
    hostname and a label value, under the brokers' headless Service."""
    labels = {"strimzi.io/pod-name": name, "statefulset.kubernetes.io/pod-name": name}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "hostname": name,
            "subdomain": f"{kafka}-kafka-brokers",
            "containers": [{"name": "kafka", "image": "quay.io/strimzi/kafka"}],
        },
    }


@pytest.mark.parametrize("profile", ["small", "large"])
def test_the_server_accepts_the_kafka_pods_of_a_long_release_name(
    helm: Tools, apiserver: ApiServer, profile: str
) -> None:
    """Under Helm's longest release name (53 characters) every pod Strimzi would make for the
    pools is one the API server takes; the pools' old names gave pods the server refused from
    a release name of 19 characters on (casetrail-production-kafka-casetrail-production-kafka-
    controllers-3: "must be no more than 63 characters")."""
    release = "westside-dss-casetrail-production-with-a-long-name-53"
    # No subscribers: their KafkaUsers have no room under a release name past 50 characters.
    unsubscribed = ("--set-json", "kafka.subscribers=[]")
    result = helm_template(helm, PROFILES[profile], *unsubscribed, release=release)
    assert result.returncode == 0, result.stderr
    rendered = Rendered(profile, result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d])
    (kafka,) = rendered.of_kind("Kafka")
    pods = [_strimzi_pod(name, kafka["metadata"]["name"]) for name in kafka_pod_names(rendered)]
    # A pod's service account must exist (admission); Strimzi's own is not the chart's.
    account = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default}\n"
    apiserver.must("apply", "-n", apiserver.namespace, "-f", "-", stdin=account)
    applied = apiserver.dry_run(yaml.safe_dump_all([*pods, *rendered.documents]), "--server-side")
    assert applied.returncode == 0, applied.stderr


def test_the_server_accepts_every_number_at_its_maximum(
    helm: Tools, apiserver: ApiServer, tmp_path: Path
) -> None:
    """Sizes in bytes were printed as 1.099511627776e+12 where the operators' resources take a
    quantity string; every number the schema bounds, at its maximum, is one the server takes."""
    values = tmp_path / "maxima.yaml"
    values.write_text(yaml.safe_dump(values_at_their_maxima()))
    result = helm_template(helm, (*PROFILES["large-production-monitored"], values))
    assert result.returncode == 0, result.stderr
    applied = apiserver.dry_run(result.stdout, "--server-side", "--field-manager=casetrail-check")
    assert applied.returncode == 0, applied.stderr
