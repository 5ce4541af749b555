"""`helm install` and `helm upgrade` against a real kube-apiserver serving the operators' CRDs
(no operator runs: the objects are stored, nothing acts on them), for what only a live release
shows: templates/validate.yaml's `lookup` of the KafkaNodePools the release already has."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.k8s.apiserver import ApiServer
from tests.k8s.render import PROFILES, RELEASE
from tests.k8s.tools import CHART, Tools

LEGACY = ("--set", "kafka.cluster.legacyPoolNames=true")


@dataclass(frozen=True)
class LiveRelease:
    """The release RELEASE of ``chart`` in the API server's namespace, the large profile's."""

    tools: Tools
    apiserver: ApiServer
    chart: Path

    def helm(self, verb: str, *options: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.tools.helm), verb, RELEASE]
        if verb != "uninstall":
            command.append(str(self.chart))
            for values in PROFILES["large"]:
                command += ["--values", str(CHART / values)]
        command += ["--kubeconfig", str(self.apiserver.kubeconfig)]
        command += ["--namespace", self.apiserver.namespace, *options]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)

    def pools(self) -> set[str]:
        listed = self.apiserver.must(
            "get", "kafkanodepools", "-n", self.apiserver.namespace, "-o", "name"
        )
        return {line.removeprefix("kafkanodepool.kafka.strimzi.io/") for line in listed.split()}


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart, but for its kubeVersion: the API server built from source
    (infra/k8s/build-kube.sh) calls itself v0.0.0-master, below any version `helm install`
    checks the chart's >=1.30 against."""
    copy = tmp_path_factory.mktemp("chart") / CHART.name
    shutil.copytree(CHART, copy)
    manifest = copy / "Chart.yaml"
    lines = manifest.read_text().splitlines()
    manifest.write_text(
        "".join(f"{line}\n" for line in lines if not line.startswith("kubeVersion"))
    )
    return copy


@pytest.fixture
def release(helm: Tools, apiserver: ApiServer, chart: Path) -> Iterator[LiveRelease]:
    live = LiveRelease(helm, apiserver, chart)
    yield live
    uninstalled = live.helm("uninstall", "--ignore-not-found", "--wait")
    assert uninstalled.returncode == 0, uninstalled.stderr


def test_an_upgrade_never_deletes_a_live_kafka_pool(release: LiveRelease) -> None:
    """A KafkaNodePool the upgrade no longer renders is deleted, its pods with it (Strimzi's pod
    set belongs to the pool): a release installed with the pools' old names, upgraded to the
    short ones, would lose its brokers' partitions and its controllers' metadata, the new
    pools' nodes starting on empty volumes. `helm upgrade` refuses, naming the pool and the
    value that keeps it; with it the upgrade goes through."""
    installed = release.helm("install", *LEGACY)
    assert installed.returncode == 0, installed.stderr
    legacy = {f"{RELEASE}-kafka-brokers", f"{RELEASE}-kafka-controllers"}
    assert release.pools() == legacy

    renamed = release.helm("upgrade")
    assert renamed.returncode != 0
    assert f"KafkaNodePool {RELEASE}-kafka-brokers of Kafka {RELEASE}-kafka is live" in (
        renamed.stderr
    )
    assert "(the pools now: brokers, controllers)" in renamed.stderr
    assert "kafka.cluster.legacyPoolNames: true" in renamed.stderr
    # Brokers no longer dedicated are another pool (nodes), and the controllers' is deleted.
    merged = release.helm("upgrade", *LEGACY, "--set", "kafka.cluster.dedicatedControllers=false")
    assert merged.returncode != 0
    assert f"this upgrade would delete it (the pools now: {RELEASE}-kafka-nodes)" in merged.stderr
    assert release.pools() == legacy

    kept = release.helm("upgrade", *LEGACY)
    assert kept.returncode == 0, kept.stderr
    assert release.pools() == legacy


def test_a_new_release_is_upgraded_under_its_short_pool_names(release: LiveRelease) -> None:
    installed = release.helm("install")
    assert installed.returncode == 0, installed.stderr
    upgraded = release.helm("upgrade", "--set", "kafka.cluster.brokers=4")
    assert upgraded.returncode == 0, upgraded.stderr
    assert release.pools() == {"brokers", "controllers"}
