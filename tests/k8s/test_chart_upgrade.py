"""`helm install` and `helm upgrade` against a real kube-apiserver serving the operators' CRDs
(no operator runs: the objects are stored, nothing acts on them), for what only a live release
shows: templates/validate.yaml's `lookup` of the KafkaNodePools the release already has, another
release's objects in the namespace, an upgrade over the objects an install made."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.k8s.apiserver import ApiServer
from tests.k8s.render import PROFILES, RELEASE, release_pool_names
from tests.k8s.tools import CHART, Tools

LEGACY = ("--set", "kafka.cluster.legacyPoolNames=true")
BARE = ("--set", "kafka.cluster.barePoolNames=true")


@dataclass(frozen=True)
class LiveRelease:
    """The release ``name`` of ``chart`` in the API server's namespace, the large profile's."""

    tools: Tools
    apiserver: ApiServer
    chart: Path
    name: str = RELEASE

    def helm(self, verb: str, *options: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.tools.helm), verb, self.name]
        if verb != "uninstall":
            command.append(str(self.chart))
            for values in PROFILES["large"]:
                command += ["--values", str(CHART / values)]
        command += ["--kubeconfig", str(self.apiserver.kubeconfig)]
        command += ["--namespace", self.apiserver.namespace, *options]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)

    def pools(self) -> set[str]:
        return self._listed("kafkanodepools", f"strimzi.io/cluster={self.name}-kafka")

    def subscriber_groups(self) -> dict[str, list[str]]:
        """Each subscriber KafkaUser of the release, and the consumer groups its ACLs grant."""
        users = json.loads(
            self.apiserver.must(
                "get",
                "kafkausers",
                "-n",
                self.apiserver.namespace,
                "-l",
                f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=subscriber",
                "-o",
                "json",
            )
        )["items"]
        return {
            user["metadata"]["name"]: [
                acl["resource"]["name"]
                for acl in user["spec"]["authorization"]["acls"]
                if acl["resource"]["type"] == "group"
            ]
            for user in users
        }

    def _listed(self, kind: str, selector: str) -> set[str]:
        listed = self.apiserver.must(
            "get", kind, "-n", self.apiserver.namespace, "-l", selector, "-o", "name"
        )
        return {line.split("/", 1)[1] for line in listed.split()}


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


def _uninstalled(live: LiveRelease) -> None:
    uninstalled = live.helm("uninstall", "--ignore-not-found", "--wait")
    assert uninstalled.returncode == 0, uninstalled.stderr


@pytest.fixture
def release(helm: Tools, apiserver: ApiServer, chart: Path) -> Iterator[LiveRelease]:
    live = LiveRelease(helm, apiserver, chart)
    yield live
    _uninstalled(live)


@pytest.fixture
def other_release(helm: Tools, apiserver: ApiServer, chart: Path) -> Iterator[LiveRelease]:
    """A second release in the same namespace."""
    live = LiveRelease(helm, apiserver, chart, name="agency-b")
    yield live
    _uninstalled(live)


@pytest.fixture
def long_release(helm: Tools, apiserver: ApiServer, chart: Path) -> Iterator[LiveRelease]:
    """A release of 39 characters: <release>-subscriber- leaves a subscriber's name 12 of its
    KafkaUser's 63."""
    live = LiveRelease(helm, apiserver, chart, name="casetrail-production-eu-west-agency-one")
    yield live
    _uninstalled(live)


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
    ours = release_pool_names(RELEASE, "brokers", "controllers")
    assert f"(the pools now: {', '.join(sorted(ours))})" in renamed.stderr
    assert "kafka.cluster.legacyPoolNames: true" in renamed.stderr
    # Brokers no longer dedicated are another pool (nodes), and the controllers' is deleted.
    merged = release.helm("upgrade", *LEGACY, "--set", "kafka.cluster.dedicatedControllers=false")
    assert merged.returncode != 0
    assert f"this upgrade would delete it (the pools now: {RELEASE}-kafka-nodes)" in merged.stderr
    assert release.pools() == legacy

    kept = release.helm("upgrade", *LEGACY)
    assert kept.returncode == 0, kept.stderr
    assert release.pools() == legacy


def test_an_upgrade_keeps_the_plain_pool_names_of_an_install_before(
    release: LiveRelease,
) -> None:
    """The chart before named the pools nodes, brokers, controllers: a release it installed is
    refused an upgrade to its own names, which would delete those pools, until it keeps them
    (kafka.cluster.barePoolNames; the install here renders what that chart did)."""
    installed = release.helm("install", *BARE)
    assert installed.returncode == 0, installed.stderr
    assert release.pools() == {"brokers", "controllers"}

    renamed = release.helm("upgrade")
    assert renamed.returncode != 0
    assert f"KafkaNodePool brokers of Kafka {RELEASE}-kafka is live" in renamed.stderr
    assert "kafka.cluster.barePoolNames: true" in renamed.stderr
    assert release.pools() == {"brokers", "controllers"}

    kept = release.helm("upgrade", *BARE, "--set", "kafka.cluster.brokers=4")
    assert kept.returncode == 0, kept.stderr
    assert release.pools() == {"brokers", "controllers"}


def test_a_new_release_is_upgraded_under_its_own_pool_names(release: LiveRelease) -> None:
    installed = release.helm("install")
    assert installed.returncode == 0, installed.stderr
    upgraded = release.helm("upgrade", "--set", "kafka.cluster.brokers=4")
    assert upgraded.returncode == 0, upgraded.stderr
    assert release.pools() == release_pool_names(RELEASE, "brokers", "controllers")


def test_two_releases_in_one_namespace_have_pools_of_their_own(
    release: LiveRelease, other_release: LiveRelease
) -> None:
    """A KafkaNodePool is a namespaced object: named plain brokers and controllers, the
    second release's were the first's, and its install failed (KafkaNodePool "brokers" exists,
    owned by the first). Each upgrade then sees only its own pools."""
    for live in (release, other_release):
        installed = live.helm("install")
        assert installed.returncode == 0, installed.stderr
    assert release.pools() == release_pool_names(release.name, "brokers", "controllers")
    assert other_release.pools() == release_pool_names(other_release.name, "brokers", "controllers")
    for live in (release, other_release):
        upgraded = live.helm("upgrade")
        assert upgraded.returncode == 0, upgraded.stderr


def test_an_upgrade_adding_a_subscriber_sharing_a_kafka_user_is_refused(
    long_release: LiveRelease,
) -> None:
    """reporting-warehouse-a and -b are one KafkaUser once cut to 63 characters: the upgrade
    adding b gave that user b's ACL only, so a's groups were unauthorised and both shared one
    credential. It is refused, and a's user keeps its groups."""
    first = ("--set", "kafka.subscribers[0].name=reporting-warehouse-a")
    installed = long_release.helm("install", *first)
    assert installed.returncode == 0, installed.stderr
    user = f"{long_release.name}-subscriber-reporting-wa"
    assert long_release.subscriber_groups() == {user: ["reporting-warehouse-a."]}

    second = ("--set", "kafka.subscribers[1].name=reporting-warehouse-b")
    upgraded = long_release.helm("upgrade", *first, *second)
    assert upgraded.returncode != 0
    assert f"would share the KafkaUser {user}" in upgraded.stderr
    assert long_release.subscriber_groups() == {user: ["reporting-warehouse-a."]}


# A name of 37 characters, whose <release>-db is 40: one more character, cut.
AT_THE_DATABASE_CUT = "casetrail-eastbay-county-social-svc-a"
# A name of 34 characters, whose <release>-audit is 40: another release's <release>-db, cut.
AT_THE_AUDIT_CUT = "casetrail-eastbay-county-social-sv"
# Each pair of releases in one namespace whose second would render an object of the first's:
# both releases' values, the object, and the message's fix.
CLASHES = {
    # <release>-kafka cut to 40: casetrail-eastbay-county-social-services, each a Kafka.
    "kafka": (
        "casetrail-eastbay-county-social-services-a",
        "casetrail-eastbay-county-social-services-b",
        (),
        "Kafka casetrail-eastbay-county-social-services",
        "differs from casetrail-eastbay-county-social-services-a within its first 34 characters",
    ),
    # <release>-db cut to 40, where the Kafkas (34 characters kept) differ.
    "database": (
        AT_THE_DATABASE_CUT,
        f"{AT_THE_DATABASE_CUT}-db-two",
        (),
        f"Cluster {AT_THE_DATABASE_CUT}-db",
        f"differs from {AT_THE_DATABASE_CUT} within its first 37 characters",
    ),
    # The second's database NetworkPolicy, <release>-db cut to 40, is the first's audit one.
    "network policy": (
        AT_THE_AUDIT_CUT,
        f"{AT_THE_AUDIT_CUT}-audit-two",
        (),
        f"NetworkPolicy {AT_THE_AUDIT_CUT}-audit",
        f"differs from {AT_THE_AUDIT_CUT} within its first 37 characters",
    ),
    # The plain pool names an older chart gave: one release's of the namespace only.
    "kafka pool": (
        "agency-a",
        "agency-b",
        BARE,
        "KafkaNodePool brokers",
        "kafka.cluster.barePoolNames keeps the pools of the one release",
    ),
}


@pytest.mark.parametrize("clash", sorted(CLASHES))
def test_a_release_rendering_another_releases_object_is_refused_before_anything_is_applied(
    helm: Tools, apiserver: ApiServer, chart: Path, clash: str
) -> None:
    """The Kafka and PostgreSQL clusters are <release>-kafka and <release>-db cut to 40
    characters (renaming a live one would replace it): two release names agreeing that far
    shared them and their NetworkPolicy: Helm refused the second install saying only that the
    object "cannot be imported", and with --take-ownership took it from the first release.
    validate.yaml looks the objects up and refuses, naming both releases, the object and a
    release name that would not clash; nothing of the second is applied, even so."""
    first_name, second_name, values, shared, fix = CLASHES[clash]
    first = LiveRelease(helm, apiserver, chart, name=first_name)
    second = LiveRelease(helm, apiserver, chart, name=second_name)
    try:
        installed = first.helm("install", *values)
        assert installed.returncode == 0, installed.stderr
        refused = second.helm("install", *values, "--take-ownership")
        assert refused.returncode != 0
        assert (
            f"{shared} is release {first_name}'s, and release {second_name} would render it too"
        ) in refused.stderr
        assert fix in refused.stderr
        applied = apiserver.must(
            "get",
            "kafkas,kafkanodepools,clusters.postgresql.cnpg.io,networkpolicies,jobs,deployments",
            "-n",
            apiserver.namespace,
            "-l",
            f"app.kubernetes.io/instance={second_name}",
            "-o",
            "name",
        )
        assert applied == ""
        owner = apiserver.must(
            "get",
            shared.replace(" ", "/", 1),
            "-n",
            apiserver.namespace,
            "-o",
            "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}",
        )
        assert owner == first_name
    finally:
        for live in (second, first):
            _uninstalled(live)
