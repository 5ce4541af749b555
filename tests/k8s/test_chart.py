"""What the rendered chart promises, per profile: probes, shutdown timing, least privilege on
the network and on Kafka, durable Kafka and PostgreSQL, secrets only referenced."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from faust.cli.base import LOGLEVELS
from faust.cli.params import CaseInsensitiveChoice
from psycopg.conninfo import conninfo_to_dict

from casetrail_platform.bus.kafka_dead_letters import replay_group
from casetrail_platform.bus.topics import (
    CASE_EVENTS_MAX_MESSAGE_BYTES,
    DEAD_LETTER_MAX_MESSAGE_BYTES,
    TopicSettings,
)
from casetrail_platform.health import LIVENESS_SERVICE
from casetrail_platform.ledger.postgres import READER_ROLE
from casetrail_platform.shutdown import (
    BACKGROUND_STOP_SECONDS,
    SERVER_STOP_GRACE_SECONDS,
    STOP_DEADLINE_SECONDS,
)
from casetrail_platform.typed_numbers import ascii_decimal
from events.topics import LEDGER_CHECKPOINTS_TOPIC, dead_letter_topic
from services.startup import postgres_name
from tests.k8s.render import (
    PROFILES,
    RELEASE,
    Rendered,
    helm_template,
    kafka_pod_names,
    release_pool_names,
    values_at_their_maxima,
)
from tests.k8s.tools import CHART, Tools

SERVICES = ("intake", "coordination", "planning", "audit")
TOPOLOGY = yaml.safe_load((CHART / "topology.yaml").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
MONITORING = yaml.safe_load(Path(PROFILES["large-production-monitored"][-1]).read_text())


def monitored(rendered: Rendered) -> bool:
    """The profile with metrics.podMonitor and networkPolicy.metricsScrapers set."""
    return rendered.profile.endswith("-monitored")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {
        item["name"]: item.get("value", item.get("valueFrom"))
        for item in container(deployment)["env"]
    }


def test_each_service_has_its_deployment_account_budget_and_policy(rendered: Rendered) -> None:
    for service in (*SERVICES, "caseload"):
        name = f"{RELEASE}-{service}"
        deployment = rendered.named("Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        assert rendered.named("ServiceAccount", name)["automountServiceAccountToken"] is False
        assert (
            rendered.named("PodDisruptionBudget", name)["spec"]["selector"]
            == deployment["spec"]["selector"]
        )
        assert rendered.named("NetworkPolicy", name)
        resources = container(deployment)["resources"]
        assert resources["requests"]["cpu"]
        assert resources["requests"]["memory"]
        assert resources["limits"]["memory"]
        security = container(deployment)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False


def test_services_are_probed_with_the_grpc_health_service(rendered: Rendered) -> None:
    for service in SERVICES:
        main = container(rendered.named("Deployment", f"{RELEASE}-{service}"))
        port = TOPOLOGY["services"][service]["grpcPort"]
        production = "production" in rendered.profile
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            # With TLS on the API port, kubelet (plaintext gRPC probes) asks the health port.
            assert main[probe]["grpc"]["port"] == (port + 200 if production else port), probe
        for probe in ("startupProbe", "readinessProbe"):
            assert "service" not in main[probe]["grpc"]  # the server's overall health
        # Liveness asks only whether the process answers: "" goes NOT_SERVING during a
        # database fail-over, which must not restart every replica.
        assert main["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE


def test_a_long_replay_at_start_does_not_get_the_pod_restarted(rendered: Rendered) -> None:
    """A service answers no probe until its own projections are caught up: the catch-up (a
    replay from zero after `casetrail rebuild` or a new projection) runs before the gRPC and
    health servers listen (casetrail_platform/hosting.py). The old budget, 2 minutes, restarted
    the pod in the middle of a large agency's replay, and each restart began it again."""
    for service in SERVICES:
        startup = container(rendered.named("Deployment", f"{RELEASE}-{service}"))["startupProbe"]
        window = startup["periodSeconds"] * startup["failureThreshold"]
        assert window >= 30 * 60, service
        assert window >= VALUES["startup"]["maxSeconds"], service


def test_the_start_budget_is_a_bounded_value(helm: Tools) -> None:
    for too_short in ("119", "0", "-5"):
        refused = helm_template(helm, PROFILES["small"], "--set", f"startup.maxSeconds={too_short}")
        assert refused.returncode != 0
        assert "/startup/maxSeconds" in refused.stderr
    accepted = helm_template(helm, PROFILES["small"], "--set", "startup.maxSeconds=3601")
    assert accepted.returncode == 0, accepted.stderr
    deployments = [
        document
        for document in yaml.safe_load_all(accepted.stdout)
        if document and document["kind"] == "Deployment"
    ]
    for service in SERVICES:
        (deployment,) = [d for d in deployments if d["metadata"]["name"] == f"{RELEASE}-{service}"]
        startup = container(deployment)["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 3601


def test_no_pod_can_fill_its_nodes_disk(rendered: Rendered) -> None:
    """Every emptyDir of the release's pods is bounded: unbounded, a process writing without
    end (a bug, a compromised one) filled the node's disk, and the kubelet evicted whatever
    other pods the node ran, not only this one."""
    templates = [*rendered.of_kind("Deployment"), *rendered.of_kind("Job")]
    assert len(templates) == 6  # four services, caseload, migration
    for workload in templates:
        volumes = workload["spec"]["template"]["spec"]["volumes"]
        scratch = [volume for volume in volumes if "emptyDir" in volume]
        assert scratch, workload["metadata"]["name"]
        for volume in scratch:
            assert volume["emptyDir"].get("sizeLimit"), (workload["metadata"]["name"], volume)


def test_scratch_limits_are_quantities(helm: Tools) -> None:
    for bad in ("0Mi", "lots", "1Ti", "-1Gi"):
        refused = helm_template(helm, PROFILES["small"], "--set", f"scratch.tmpSizeLimit={bad}")
        assert refused.returncode != 0, bad
        assert "/scratch/tmpSizeLimit" in refused.stderr


def test_kubernetes_waits_longer_than_the_service_drains(rendered: Rendered) -> None:
    assert TOPOLOGY["shutdown"]["serverGraceSeconds"] == SERVER_STOP_GRACE_SECONDS
    assert TOPOLOGY["shutdown"]["backgroundStopSeconds"] == BACKGROUND_STOP_SECONDS
    for service in SERVICES:
        deployment = rendered.named("Deployment", f"{RELEASE}-{service}")
        pod = deployment["spec"]["template"]["spec"]
        pre_stop = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = pre_stop + SERVER_STOP_GRACE_SECONDS + BACKGROUND_STOP_SECONDS
        assert pod["terminationGracePeriodSeconds"] > drain
        # The process ends by STOP_DEADLINE_SECONDS whatever hangs: before SIGKILL.
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + STOP_DEADLINE_SECONDS + 1


def test_kubernetes_waits_longer_than_the_caseload_worker_may_take(rendered: Rendered) -> None:
    from services.caseload.__main__ import STOP_DEADLINE_SECONDS as CASELOAD_STOP_DEADLINE

    pod = rendered.named("Deployment", f"{RELEASE}-caseload")["spec"]["template"]["spec"]
    # No preStop sleep: the grace period runs from SIGTERM.
    assert "lifecycle" not in pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] >= CASELOAD_STOP_DEADLINE + 5


def test_the_schema_refuses_a_grace_period_shorter_than_the_processes_take(helm: Tools) -> None:
    """Below these, SIGKILL comes before a process's own deadline ends it (the margin covers
    what follows the background stop: CANCEL_SECONDS, CLOSE_SECONDS, EXIT_SECONDS, 1 s)."""
    from services.caseload.__main__ import STOP_DEADLINE_SECONDS as CASELOAD_STOP_DEADLINE

    margin = STOP_DEADLINE_SECONDS - SERVER_STOP_GRACE_SECONDS - BACKGROUND_STOP_SECONDS + 1
    for setting, shortest in (
        ("shutdown.closeMarginSeconds", margin),
        ("shutdown.caseloadGracePeriodSeconds", CASELOAD_STOP_DEADLINE + 5),
    ):
        refused = helm_template(helm, PROFILES["small"], "--set", f"{setting}={shortest - 1:.0f}")
        assert refused.returncode != 0
        assert setting.split(".")[1] in refused.stderr
        accepted = helm_template(helm, PROFILES["small"], "--set", f"{setting}={shortest:.0f}")
        assert accepted.returncode == 0, accepted.stderr


def test_services_are_configured_with_the_variables_the_code_reads(rendered: Rendered) -> None:
    for service in SERVICES:
        deployment = rendered.named("Deployment", f"{RELEASE}-{service}")
        main = container(deployment)
        assert main["command"] == ["python", "-m", "services.runner"]
        assert main["args"][:4] == ["--backend", "distributed", "--service", service]
        env = env_of(deployment)
        assert env["CASETRAIL_PG_DSN"].startswith("postgresql://")
        assert "@" not in env["CASETRAIL_PG_DSN"]  # credentials come from the Secret
        assert env["CASETRAIL_PG_PASSWORD_FILE"] == "/etc/casetrail/database/password"
        assert env["CASETRAIL_KAFKA_BOOTSTRAP"].startswith(f"{RELEASE}-kafka-kafka-bootstrap:")
        assert env["CASETRAIL_CASE_EVENTS_TOPIC"] == "casetrail.case-events"
        assert env["CASETRAIL_KAFKA_FETCH_MAX_WAIT_MS"] == "20"
        assert env["CASETRAIL_OIDC_ISSUER"].startswith("https://")
        assert env["CASETRAIL_OIDC_AUDIENCE"]
        assert env["CASETRAIL_AGENCY_TIME_ZONE"] == "UTC"
        # Whose staff every service serves: the example agency's, as its agency file.
        assert env["CASETRAIL_HOME_AGENCY"] == "eastbay-dss"


def test_processes_create_missing_topics_as_the_kafka_topics_say(rendered: Rendered) -> None:
    """A process that reaches the brokers before the Topic Operator creates the topics itself:
    with the KafkaTopics' partitions and replication, never the development defaults."""
    topics = {topic["spec"]["topicName"]: topic["spec"] for topic in rendered.of_kind("KafkaTopic")}
    case_events = topics["casetrail.case-events"]
    dead_letters = topics[dead_letter_topic(TOPOLOGY["services"]["intake"]["groups"][0])]
    for workload in (*SERVICES, "caseload"):
        env = env_of(rendered.named("Deployment", f"{RELEASE}-{workload}"))
        settings = TopicSettings.from_env(env)
        assert settings.partitions == case_events["partitions"], workload
        assert settings.dead_letter_partitions == dead_letters["partitions"], workload
        assert settings.replication_factor == case_events["replicas"] == 3, workload
        assert settings.min_insync_replicas == case_events["config"]["min.insync.replicas"] == 2


def test_private_keys_are_mounted_owner_read_only(rendered: Rendered) -> None:
    """The gRPC TLS key, the Kafka client key, the signing key and the KEK: 0400."""
    private = {"grpc-tls", "kafka-user", "signing-keys", "key-encryption-key"}
    for workload in (*SERVICES, "caseload"):
        deployment = rendered.named("Deployment", f"{RELEASE}-{workload}")
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        for name in private & set(volumes):
            assert volumes[name]["secret"]["defaultMode"] == 0o400, (workload, name)
        if "production" in rendered.profile:
            assert {"grpc-tls", "kafka-user"} <= set(volumes), workload


def _ca_volumes(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every CA volume (named ``*-ca``) of the release's Deployments and Jobs."""
    return {
        (workload["metadata"]["name"], volume["name"]): volume
        for workload in documents
        if workload["kind"] in ("Deployment", "Job")
        for volume in workload["spec"]["template"]["spec"]["volumes"]
        if volume["name"].endswith("-ca")
    }


def _only_the_certificate(volume: dict[str, Any]) -> bool:
    secret: dict[str, Any] = volume["secret"]
    return secret.get("items") == [{"key": "ca.crt", "path": "ca.crt"}] and (
        secret.get("defaultMode") == 0o444
    )


def test_of_a_cas_secret_only_its_certificate_is_mounted(rendered: Rendered) -> None:
    """CloudNativePG's <cluster>-ca Secret also holds ca.key, which signs the server's and the
    replication user's certificates; mounted whole, any compromised pod could impersonate the
    database or join it as a replica. Each CA volume carries ca.crt alone, read-only."""
    volumes = _ca_volumes(rendered.documents)
    if "production" in rendered.profile:
        assert {name for _, name in volumes} == {"kafka-ca", "postgres-ca"}
        assert (f"{RELEASE}-migrate-1", "postgres-ca") in volumes
    for where, volume in volumes.items():
        assert _only_the_certificate(volume), where


def test_of_the_token_issuers_ca_secret_only_its_certificate_is_mounted(helm: Tools) -> None:
    """authentication.caSecret may name a cert-manager Secret, which holds tls.key too."""
    result = helm_template(
        helm, PROFILES["small-production"], "--set", "authentication.caSecret=issuer-ca"
    )
    assert result.returncode == 0, result.stderr
    volumes = _ca_volumes([doc for doc in yaml.safe_load_all(result.stdout) if doc])
    issuer = {where: volume for where, volume in volumes.items() if where[1] == "oidc-ca"}
    assert len(issuer) == len(SERVICES) + 1  # the services and the caseload views
    for where, volume in issuer.items():
        assert _only_the_certificate(volume), where


def test_the_database_password_is_a_file_never_a_variable(rendered: Rendered) -> None:
    """A variable is in /proc/<pid>/environ and every child process's environment; the
    password is mounted owner-read only from the Secret, and read by the code
    (CASETRAIL_PG_PASSWORD_FILE, casetrail_platform/store/pg_password.py)."""
    workloads = [
        *(rendered.named("Deployment", f"{RELEASE}-{service}") for service in SERVICES),
        *rendered.of_kind("Job"),
    ]
    assert len(workloads) == 5
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        for variable in main["env"]:
            reference = variable.get("valueFrom", {}).get("secretKeyRef", {})
            if reference.get("name") == "casetrail-db-owner":
                assert reference["key"] == "username", variable["name"]
        env = {variable["name"]: variable.get("value") for variable in main["env"]}
        assert "PGPASSWORD" not in env
        path = Path(env["CASETRAIL_PG_PASSWORD_FILE"])
        (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == str(path.parent)]
        assert mount["readOnly"] is True
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"] == {
            "secretName": "casetrail-db-owner",
            "defaultMode": 0o400,
            "items": [{"key": "password", "path": path.name}],
        }


def test_no_password_is_in_a_variable(rendered: Rendered) -> None:
    """The database's and the KafkaUsers' (SCRAM, outside production): a Secret is referenced
    by an environment variable only for the database owner's name."""
    for workload in [*rendered.of_kind("Deployment"), *rendered.of_kind("Job")]:
        (main,) = workload["spec"]["template"]["spec"]["containers"]
        for variable in main["env"]:
            if "secretKeyRef" in variable.get("valueFrom", {}):
                assert variable["name"] == "PGUSER", (workload["metadata"]["name"], variable)
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        env = {variable["name"]: variable.get("value") for variable in main["env"]}
        if "production" in rendered.profile or workload["kind"] == "Job":
            continue  # mutual TLS to Kafka (the key's mode: above), or no Kafka
        assert env["CASETRAIL_KAFKA_SASL_PASSWORD_FILE"] == "/etc/casetrail/kafka-user/password"
        assert volumes["kafka-user"]["secret"] == {
            "secretName": workload["metadata"]["name"],
            "defaultMode": 0o400,
            "items": [{"key": "password", "path": "password"}],
        }


def test_no_secret_is_rendered(rendered: Rendered) -> None:
    assert rendered.of_kind("Secret") == []
    assert "pa55" not in rendered.text


def test_kafka_is_kraft_with_three_brokers_and_two_insync_replicas(rendered: Rendered) -> None:
    kafka = rendered.named("Kafka", f"{RELEASE}-kafka")
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["unclean.leader.election.enable"] is False
    brokers = [
        pool for pool in rendered.of_kind("KafkaNodePool") if "broker" in pool["spec"]["roles"]
    ]
    assert sum(pool["spec"]["replicas"] for pool in brokers) == 3
    assert any("controller" in pool["spec"]["roles"] for pool in rendered.of_kind("KafkaNodePool"))


def test_topics_are_the_case_events_and_each_groups_dead_letters(rendered: Rendered) -> None:
    topics = {topic["spec"]["topicName"]: topic["spec"] for topic in rendered.of_kind("KafkaTopic")}
    groups = [group for service in SERVICES for group in TOPOLOGY["services"][service]["groups"]]
    assert set(topics) == {
        "casetrail.case-events",
        LEDGER_CHECKPOINTS_TOPIC,
        *(dead_letter_topic(g) for g in groups),
    }
    assert topics[LEDGER_CHECKPOINTS_TOPIC]["partitions"] == 1
    for spec in topics.values():
        assert spec["replicas"] == 3
        assert spec["config"]["min.insync.replicas"] == 2
        assert spec["config"]["retention.ms"] == -1
    # A record the case-event topic took is dead-lettered whole, with the headers saying why.
    sizes = {name: spec["config"]["max.message.bytes"] for name, spec in topics.items()}
    assert sizes.pop("casetrail.case-events") == CASE_EVENTS_MAX_MESSAGE_BYTES
    assert sizes.pop(LEDGER_CHECKPOINTS_TOPIC) == CASE_EVENTS_MAX_MESSAGE_BYTES
    assert set(sizes.values()) == {DEAD_LETTER_MAX_MESSAGE_BYTES}


OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _topic_objects(helm: Tools, topic: str) -> dict[str, str]:
    """Topic name to KafkaTopic object name, the case-event topic being ``topic``."""
    result = helm_template(helm, PROFILES["small"], "--set", f"kafka.caseEventsTopic={topic}")
    assert result.returncode == 0, result.stderr
    return {
        document["spec"]["topicName"]: document["metadata"]["name"]
        for document in yaml.safe_load_all(result.stdout)
        if document and document["kind"] == "KafkaTopic"
    }


@pytest.mark.parametrize(
    "topic", ["Casetrail.CaseEvents", "case-events.", "case..events", "Case_Events-", "a" * 249]
)
def test_every_topic_the_schema_takes_gets_a_valid_object_name(helm: Tools, topic: str) -> None:
    """The schema takes any Kafka topic name (^[A-Za-z0-9._-]{1,249}$); the API server takes a
    KafkaTopic only under a DNS subdomain name (lower case, labels that start and end with a
    letter or digit, at most 253 characters)."""
    objects = _topic_objects(helm, topic)
    assert topic in objects
    for name in objects.values():
        assert OBJECT_NAME.fullmatch(name), name
        assert len(name) <= 253, name
    assert len(set(objects.values())) == len(objects)
    other = _topic_objects(helm, topic.swapcase())
    assert other[topic.swapcase()] != objects[topic] or topic == topic.swapcase()


def test_the_topics_objects_keep_their_names(helm: Tools) -> None:
    """A renamed KafkaTopic is a deleted one, whose topic Strimzi deletes with it."""
    objects = _topic_objects(helm, "casetrail.case-events")
    assert objects["casetrail.case-events"] == f"{RELEASE}-kafka-casetrail.case-events"
    assert (
        objects["casetrail.planning.staff.dlq"] == f"{RELEASE}-kafka-casetrail.planning.staff.dlq"
    )


def acls(rendered: Rendered, user: str) -> dict[tuple[str, str, str], set[str]]:
    spec = rendered.named("KafkaUser", f"{RELEASE}-{user}")["spec"]
    return {
        (acl["resource"]["type"], acl["resource"]["name"], acl["resource"]["patternType"]): set(
            acl["operations"]
        )
        for acl in spec["authorization"]["acls"]
    }


def test_each_service_may_touch_only_its_own_groups_and_dead_letters(rendered: Rendered) -> None:
    for service in SERVICES:
        granted = acls(rendered, service)
        groups = TOPOLOGY["services"][service]["groups"]
        expected = {
            ("topic", "casetrail.case-events", "literal"),
            ("topic", LEDGER_CHECKPOINTS_TOPIC, "literal"),
        }
        expected |= {("group", group, "literal") for group in groups}
        expected |= {("topic", dead_letter_topic(group), "literal") for group in groups}
        expected |= {("group", replay_group(group), "literal") for group in groups}
        assert set(granted) == expected
        for group in groups:
            assert "Write" not in granted[("group", group, "literal")]
            # `casetrail dlq list|replay GROUP`, run in the service's pod, reads its letters
            # and commits what it put back under the replay's group.
            assert {"Read", "Write"} <= granted[("topic", dead_letter_topic(group), "literal")]
            assert granted[("group", replay_group(group), "literal")] == {"Describe", "Read"}
        # Its own published checkpoints are read back on start, without a consumer group
        # (the groups above are the service's subscriptions only).
        assert {"Read", "Write"} <= granted[("topic", LEDGER_CHECKPOINTS_TOPIC, "literal")]


def test_the_caseload_processor_and_subscribers_cannot_write_case_events(
    rendered: Rendered,
) -> None:
    caseload = acls(rendered, "caseload")
    assert "Write" not in caseload[("topic", "casetrail.case-events", "literal")]
    assert "Write" not in caseload[("topic", LEDGER_CHECKPOINTS_TOPIC, "literal")]
    subscribers = [
        user for user in rendered.of_kind("KafkaUser") if "-subscriber-" in user["metadata"]["name"]
    ]
    for user in subscribers:
        for acl in user["spec"]["authorization"]["acls"]:
            assert set(acl["operations"]) <= {"Describe", "Read"}


def test_postgres_has_three_instances_and_synchronous_replication(rendered: Rendered) -> None:
    cluster = rendered.named("Cluster", f"{RELEASE}-db")["spec"]
    assert cluster["instances"] == 3
    assert cluster["postgresql"]["synchronous"]["method"] in {"any", "first"}
    assert cluster["postgresql"]["synchronous"]["number"] >= 1
    assert cluster["bootstrap"]["initdb"]["secret"]["name"] == "casetrail-db-owner"
    assert cluster["enableSuperuserAccess"] is False


def test_audit_can_assume_the_ledger_reader_role(rendered: Rendered) -> None:
    """The witness connects with ``-c role=casetrail_ledger_reader``: the operator creates the
    role and makes the login every service uses (the owner) a member of it."""
    roles = {
        role["name"]: role
        for role in rendered.named("Cluster", f"{RELEASE}-db")["spec"]["managed"]["roles"]
    }
    reader = roles[READER_ROLE]
    assert reader["login"] is False
    assert reader.get("superuser", False) is False
    owner = roles["casetrail"]
    assert owner["inRoles"] == [READER_ROLE]
    assert owner["passwordSecret"] == {"name": "casetrail-db-owner"}


def test_network_policies_deny_by_default(rendered: Rendered) -> None:
    deny = rendered.named("NetworkPolicy", f"{RELEASE}-default-deny")["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny
    scrapers = MONITORING["networkPolicy"]["metricsScrapers"] if monitored(rendered) else []
    for service in SERVICES:
        policy = rendered.named("NetworkPolicy", f"{RELEASE}-{service}")["spec"]
        grpc_port = TOPOLOGY["services"][service]["grpcPort"]
        clients, *metrics = policy["ingress"]
        assert [port["port"] for port in clients["ports"]] == [grpc_port]
        if not scrapers:
            assert metrics == []  # the metrics port admits nobody
            continue
        # The scrapers reach the metrics port only, and only they do.
        assert metrics == [
            {"from": scrapers, "ports": [{"port": grpc_port + 100, "protocol": "TCP"}]}
        ]
        assert not any(peer in clients["from"] for peer in scrapers)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions In) picks ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_only_the_pods_that_use_the_database_may_reach_it(rendered: Rendered) -> None:
    """The database's port admits the pods whose own policy lets them reach it (the four
    services, the migration Job), not every pod of the release: before, the caseload views,
    which never use it, were admitted too."""
    policy = rendered.named("NetworkPolicy", f"{RELEASE}-db")["spec"]
    # The rule of the release's pods (the other is the instances' and the operator's).
    (clients,) = [
        rule
        for rule in policy["ingress"]
        if any(
            "app.kubernetes.io/instance" in peer.get("podSelector", {}).get("matchLabels", {})
            for peer in rule["from"]
        )
    ]
    assert [port["port"] for port in clients["ports"]] == [5432]

    def admitted(component: str) -> bool:
        labels = {
            "app.kubernetes.io/name": "casetrail",
            "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": component,
        }
        return any(_selects(peer["podSelector"], labels) for peer in clients["from"])

    for workload in (*SERVICES, "migrate", "caseload"):
        try:
            own = rendered.named("NetworkPolicy", f"{RELEASE}-{workload}")
        except KeyError:
            continue  # not part of this profile (caseload.enabled false)
        egress = own["spec"]["egress"]
        uses = any(port["port"] == 5432 for rule in egress for port in rule["ports"])
        assert admitted(workload) == uses, workload
    assert not admitted("caseload")
    for other in ("ledger-keys", "metrics", "kafka"):
        assert not admitted(other), other


def test_only_the_token_verifiers_may_reach_the_token_issuer(rendered: Rendered) -> None:
    """The four services and the caseload views fetch the issuer's keys; before, no profile but
    production let them (no token could be verified), and production's rule (extraEgress) let
    the migration Job reach the issuer too."""
    # The profiles' placeholder issuer (values-small.yaml, values-large.yaml).
    issuer = {
        "to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}],
        "ports": [{"port": 443, "protocol": "TCP"}],
    }
    for workload in (*SERVICES, "caseload"):
        egress = rendered.named("NetworkPolicy", f"{RELEASE}-{workload}")["spec"]["egress"]
        assert issuer in egress, workload
    # The migration Job reaches DNS and PostgreSQL, nothing else.
    migrate = rendered.named("NetworkPolicy", f"{RELEASE}-migrate")["spec"]["egress"]
    assert {port["port"] for rule in migrate for port in rule["ports"]} == {53, 5432}


def test_the_pod_monitor_scrapes_the_four_services_metrics_port(rendered: Rendered) -> None:
    monitors = rendered.of_kind("PodMonitor")
    if not monitored(rendered):
        assert monitors == []
        return
    (monitor,) = monitors
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    selector = monitor["spec"]["selector"]
    (expression,) = selector["matchExpressions"]

    def selected(labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector["matchLabels"].items()) and (
            labels.get(expression["key"]) in expression["values"]
        )

    for workload in (*SERVICES, "caseload"):
        deployment = rendered.named("Deployment", f"{RELEASE}-{workload}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selected(labels) is (workload != "caseload"), workload
        if workload == "caseload":
            continue
        ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
        env = env_of(deployment)
        assert env["CASETRAIL_METRICS_ADDRESS"] == f"0.0.0.0:{ports['metrics']}"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (
        "metrics",
        "/metrics",
        "15s",
    )


def test_a_pod_monitor_without_admitted_scrapers_is_refused(helm: Tools) -> None:
    """Scrapes that the chart's own NetworkPolicies refuse would only show targets down."""
    result = helm_template(
        helm, PROFILES["small-production"], "--set", "metrics.podMonitor.enabled=true"
    )
    assert result.returncode != 0
    assert "networkPolicy.metricsScrapers" in result.stderr


def test_production_uses_tls_everywhere(rendered: Rendered) -> None:
    if "production" not in rendered.profile:
        return
    listener = rendered.named("Kafka", f"{RELEASE}-kafka")["spec"]["kafka"]["listeners"][0]
    assert listener["tls"] is True
    assert listener["authentication"]["type"] == "tls"
    assert rendered.named("Cluster", f"{RELEASE}-db")["spec"]["postgresql"]["pg_hba"] == [
        "hostnossl all all all reject"
    ]
    for service in SERVICES:
        env = env_of(rendered.named("Deployment", f"{RELEASE}-{service}"))
        assert env["PGSSLMODE"] == "verify-full"
        assert env["CASETRAIL_KAFKA_SECURITY_PROTOCOL"] == "SSL"
        assert env["CASETRAIL_TLS_CERT"] == "/etc/casetrail/grpc-tls/tls.crt"
        assert env["CASETRAIL_TLS_CLIENT_CA"] == "/etc/casetrail/grpc-tls/ca.crt"


def _scram_over_tls(helm: Tools, tmp_path: Path, values: dict[str, Any]) -> Rendered:
    custom = tmp_path / "scram-over-tls.yaml"
    custom.write_text(yaml.safe_dump(values))
    result = helm_template(helm, (*PROFILES["large"], custom))
    assert result.returncode == 0, result.stderr
    return Rendered("large", result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d])


def test_scram_may_go_over_tls(helm: Tools, tmp_path: Path) -> None:
    """kafka.tls.enabled with SCRAM: SASL_SSL (casetrail_platform/bus/kafka_security.py) to the
    chart's TLS listener, the brokers verified against the cluster CA's ca.crt alone, and KEDA
    reading the lag the same way. Before, SCRAM was always SASL_PLAINTEXT."""
    rendered = _scram_over_tls(
        helm, tmp_path, {"kafka": {"authentication": "scram-sha-512", "tls": {"enabled": True}}}
    )
    (listener,) = rendered.named("Kafka", f"{RELEASE}-kafka")["spec"]["kafka"]["listeners"]
    assert (listener["tls"], listener["port"]) == (True, 9093)
    assert listener["authentication"]["type"] == "scram-sha-512"
    ca_secret = f"{RELEASE}-kafka-cluster-ca-cert"
    for workload in (*SERVICES, "caseload"):
        deployment = rendered.named("Deployment", f"{RELEASE}-{workload}")
        env = env_of(deployment)
        assert env["CASETRAIL_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", workload
        assert env["CASETRAIL_KAFKA_BOOTSTRAP"].endswith(":9093"), workload
        cafile = Path(env["CASETRAIL_KAFKA_SSL_CAFILE"])
        (mount,) = [m for m in container(deployment)["volumeMounts"] if m["name"] == "kafka-ca"]
        assert mount["mountPath"] == str(cafile.parent), workload
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == ca_secret, workload
        assert _only_the_certificate(volumes["kafka-ca"]), workload
        egress = rendered.named("NetworkPolicy", f"{RELEASE}-{workload}")["spec"]["egress"]
        assert {"port": 9093, "protocol": "TCP"} in [p for r in egress for p in r["ports"]]
    for service in SERVICES:
        authentication = rendered.named("TriggerAuthentication", f"{RELEASE}-{service}")
        assert {"parameter": "ca", "name": ca_secret, "key": "ca.crt"} in authentication["spec"][
            "secretTargetRef"
        ]
        for trigger in rendered.named("ScaledObject", f"{RELEASE}-{service}")["spec"]["triggers"]:
            assert trigger["metadata"]["tls"] == "enable"
            assert trigger["metadata"]["sasl"] == "scram_sha512"


def test_scram_over_tls_to_an_outside_kafka_needs_its_ca(helm: Tools, tmp_path: Path) -> None:
    tls: dict[str, Any] = {"enabled": True}
    outside = {
        "kafka": {
            "authentication": "scram-sha-512",
            "tls": tls,
            "bootstrapServers": "kafka.agency.internal:9096",
            "cluster": {"create": False},
        },
        "networkPolicy": {
            "kafkaEgress": [
                {"to": [{"ipBlock": {"cidr": "10.30.0.0/24"}}], "ports": [{"port": 9096}]}
            ]
        },
    }
    custom = tmp_path / "outside.yaml"
    custom.write_text(yaml.safe_dump(outside))
    refused = helm_template(helm, (*PROFILES["small"], custom))
    assert refused.returncode != 0
    assert "kafka.tls.caSecret" in refused.stderr
    tls["caSecret"] = "agency-kafka-ca"
    rendered = _scram_over_tls(helm, tmp_path, outside)
    intake = rendered.named("Deployment", f"{RELEASE}-intake")
    assert env_of(intake)["CASETRAIL_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env_of(intake)["CASETRAIL_KAFKA_BOOTSTRAP"] == "kafka.agency.internal:9096"
    volumes = {v["name"]: v for v in intake["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-ca"]["secret"]["secretName"] == "agency-kafka-ca"


def test_large_agencies_scale_consumers_on_lag(rendered: Rendered) -> None:
    scaled = rendered.of_kind("ScaledObject")
    if not rendered.profile.startswith("large"):
        assert scaled == []
        return
    assert {item["spec"]["scaleTargetRef"]["name"] for item in scaled} == {
        f"{RELEASE}-{service}" for service in SERVICES
    }
    for item in scaled:
        service = item["metadata"]["name"].removeprefix(f"{RELEASE}-")
        triggers = item["spec"]["triggers"]
        assert {t["metadata"]["consumerGroup"] for t in triggers} == set(
            TOPOLOGY["services"][service]["groups"]
        )
        assert item["spec"]["maxReplicaCount"] <= 6  # never more consumers than partitions
        deployment = rendered.named("Deployment", f"{RELEASE}-{service}")
        assert "replicas" not in deployment["spec"]  # KEDA's HPA owns it


def test_each_service_signs_with_its_own_key_from_the_secret(rendered: Rendered) -> None:
    for service in SERVICES:
        deployment = rendered.named("Deployment", f"{RELEASE}-{service}")
        mount = next(
            m for m in container(deployment)["volumeMounts"] if m["name"] == "signing-keys"
        )
        assert mount["mountPath"] == f"/var/lib/casetrail/{service}/ledger.key"
        assert mount["subPath"] == f"{service}.key"
        volume = next(
            v
            for v in deployment["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "signing-keys"
        )
        assert volume["secret"]["secretName"] == "casetrail-signing-keys"


def test_the_caseload_views_reach_audit_and_only_audit(rendered: Rendered) -> None:
    audit_port = TOPOLOGY["services"]["audit"]["grpcPort"]
    caseload = rendered.named("Deployment", f"{RELEASE}-caseload")
    env = env_of(caseload)
    assert env["CASETRAIL_AUDIT_ADDRESS"] == f"{RELEASE}-audit:{audit_port}"
    if "production" in rendered.profile:
        assert env["CASETRAIL_TLS_CA"] == "/etc/casetrail/grpc-tls/ca.crt"
        assert env["CASETRAIL_TLS_CLIENT_CERT"] == "/etc/casetrail/grpc-tls/tls.crt"
        mounts = {m["name"]: m["mountPath"] for m in container(caseload)["volumeMounts"]}
        assert mounts["grpc-tls"] == "/etc/casetrail/grpc-tls"
        assert "CASETRAIL_GRPC_ALLOW_PLAINTEXT" not in env
    else:
        assert "CASETRAIL_TLS_CA" not in env
        # Without CASETRAIL_TLS_CA the worker refuses to dial audit beyond loopback unless
        # plain text is allowed, as the services' servers (a trial install keeps working).
        assert env["CASETRAIL_GRPC_ALLOW_PLAINTEXT"] == "1"
        assert env["CASETRAIL_CASELOAD_ALLOW_PLAINTEXT"] == "1"

    def selected(peer: dict[str, Any]) -> str | None:
        labels: dict[str, str] = peer.get("podSelector", {}).get("matchLabels", {})
        return labels.get("app.kubernetes.io/component")

    policy = rendered.named("NetworkPolicy", f"{RELEASE}-caseload")["spec"]
    to_audit = [
        rule for rule in policy["egress"] if any(selected(p) == "audit" for p in rule["to"])
    ]
    assert [port["port"] for rule in to_audit for port in rule["ports"]] == [audit_port]
    audit = rendered.named("NetworkPolicy", f"{RELEASE}-audit")["spec"]
    assert "caseload" in [selected(peer) for rule in audit["ingress"] for peer in rule["from"]]
    for service in ("intake", "coordination", "planning"):
        other = rendered.named("NetworkPolicy", f"{RELEASE}-{service}")["spec"]
        assert "caseload" not in [
            selected(peer) for rule in other["ingress"] for peer in rule["from"]
        ]


def test_every_token_verifier_trusts_the_issuers_ca_when_one_is_given(helm: Tools) -> None:
    """The four services and the caseload views verify bearer tokens: each gets the issuer's
    CA (``authentication.caSecret``), mounted where ``CASETRAIL_OIDC_CA_FILE`` points."""
    result = helm_template(
        helm, PROFILES["small-production"], "--set", "authentication.caSecret=issuer-ca"
    )
    assert result.returncode == 0, result.stderr
    rendered = Rendered("small-production", result.stdout, list(yaml.safe_load_all(result.stdout)))
    for workload in (*SERVICES, "caseload"):
        deployment = rendered.named("Deployment", f"{RELEASE}-{workload}")
        assert env_of(deployment)["CASETRAIL_OIDC_CA_FILE"] == "/etc/casetrail/oidc-ca/ca.crt"
        mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
        assert mounts["oidc-ca"] == "/etc/casetrail/oidc-ca", workload
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["oidc-ca"]["secret"]["secretName"] == "issuer-ca", workload


def test_during_a_kek_rotation_every_service_also_reads_the_previous_kek(helm: Tools) -> None:
    """``secrets.previousKeyEncryptionKey`` (optional): mounted beside the current KEK and named
    by ``CASETRAIL_PREVIOUS_KEY_ENCRYPTION_KEY_FILES``; absent, neither is rendered."""
    previous = "/etc/casetrail/kek-previous/agency-key-encryption-key.bin"
    result = helm_template(
        helm,
        PROFILES["small-production"],
        "--set",
        "secrets.previousKeyEncryptionKey=casetrail-kek-2026",
    )
    assert result.returncode == 0, result.stderr
    rendered = Rendered("small-production", result.stdout, list(yaml.safe_load_all(result.stdout)))
    for service in SERVICES:
        deployment = rendered.named("Deployment", f"{RELEASE}-{service}")
        assert env_of(deployment)["CASETRAIL_PREVIOUS_KEY_ENCRYPTION_KEY_FILES"] == previous
        mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
        assert mounts["previous-key-encryption-key"] == "/etc/casetrail/kek-previous"
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        secret = volumes["previous-key-encryption-key"]["secret"]
        assert secret["secretName"] == "casetrail-kek-2026"
    default = helm_template(helm, PROFILES["small-production"])
    assert "PREVIOUS_KEY_ENCRYPTION_KEY" not in default.stdout
    assert "kek-previous" not in default.stdout


def test_audit_witnesses_the_logs_with_the_published_keys(helm: Tools, tmp_path: Path) -> None:
    """``ledger.publicKeys`` (``casetrail ledger public-keys``): a ConfigMap mounted into audit
    only, named by ``CASETRAIL_LEDGER_PUBLIC_KEYS``; a malformed key is refused by the schema."""
    keys = "\n".join(
        f"casetrail/agency/{service}+0a1b2c3d+AT3bm0tCgRu{i}1yqMz1Y9sSUSCNm/1jw2UVvQEgQ+UbZb"
        for i, service in enumerate(SERVICES)
    )
    # A rotated log's next key, with its range (casetrail ledger rotate).
    keys += "\ncasetrail/agency/intake+4e5f6a7b+AT3bm0tCgRu91yqMz1Y9sSUSCNm/1jw2UVvQEgQ+UbZb"
    keys += " from=1200 at=2026-12-05T02:00:00Z"
    values = tmp_path / "keys.yaml"
    values.write_text(yaml.safe_dump({"ledger": {"publicKeys": keys + "\n"}}))
    result = helm_template(helm, (*PROFILES["small-production"], values))
    assert result.returncode == 0, result.stderr
    rendered = Rendered("small-production", result.stdout, list(yaml.safe_load_all(result.stdout)))
    config = rendered.named("ConfigMap", f"{RELEASE}-ledger-keys")
    assert config["data"]["keys"].splitlines() == keys.splitlines()
    for service in SERVICES:
        deployment = rendered.named("Deployment", f"{RELEASE}-{service}")
        mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
        env = env_of(deployment)
        if service == "audit":
            assert mounts["ledger-keys"] == "/etc/casetrail/ledger-keys"
            assert env["CASETRAIL_LEDGER_PUBLIC_KEYS"] == "/etc/casetrail/ledger-keys/keys"
        else:
            assert "ledger-keys" not in mounts
            assert "CASETRAIL_LEDGER_PUBLIC_KEYS" not in env
    for wrong in ("not a key", keys.splitlines()[0] + " from=5"):
        bad = helm_template(
            helm, PROFILES["small-production"], "--set", f"ledger.publicKeys={wrong}"
        )
        assert bad.returncode != 0
        assert "publicKeys" in bad.stderr


def test_outside_kafka_and_postgres_are_reached_through_their_egress_rules(
    helm: Tools, tmp_path: Path
) -> None:
    kafka_rule = {"to": [{"ipBlock": {"cidr": "10.30.0.0/24"}}], "ports": [{"port": 9093}]}
    database_rule = {"to": [{"ipBlock": {"cidr": "10.40.0.0/24"}}], "ports": [{"port": 5432}]}
    values = tmp_path / "outside.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrapServers": "kafka.example:9093", "cluster": {"create": False}},
                "database": {"host": "db.example", "cluster": {"create": False}},
                "networkPolicy": {"kafkaEgress": [kafka_rule], "databaseEgress": [database_rule]},
            }
        )
    )
    result = helm_template(helm, (*PROFILES["small"], values))
    assert result.returncode == 0, result.stderr
    rendered = Rendered("small", result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d])
    for workload in (*SERVICES, "caseload", "migrate"):
        egress = rendered.named("NetworkPolicy", f"{RELEASE}-{workload}")["spec"]["egress"]
        assert (kafka_rule in egress) is (workload != "migrate"), workload
        assert (database_rule in egress) is (workload != "caseload"), workload


@pytest.mark.parametrize(
    ("host", "port"),
    [("fd00:10::5", 5432), ("::ffff:10.40.0.5", 6432), ("10.40.0.5", 5432), ("db.example", 5432)],
)
def test_the_services_and_the_migration_reach_the_database_host_as_given(
    helm: Tools, tmp_path: Path, host: str, port: int
) -> None:
    """An IPv6 address unbracketed in the URL was read by libpq as host `fd00`, port
    `10::5:5432`: every process retried an unreachable database for ever."""
    values = tmp_path / "outside.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "database": {
                    "host": host,
                    "port": port,
                    "cluster": {"create": False},
                    "tls": {"caSecret": "postgres-ca"},
                },
                "networkPolicy": {
                    "databaseEgress": [{"to": [{"ipBlock": {"cidr": "fd00:10::/64"}}]}]
                },
            }
        )
    )
    result = helm_template(helm, (*PROFILES["large-production"], values))
    assert result.returncode == 0, result.stderr
    rendered = Rendered("large", result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d])
    workloads = [
        *(rendered.named("Deployment", f"{RELEASE}-{service}") for service in SERVICES),
        *rendered.of_kind("Job"),
    ]
    assert len(workloads) == 5
    for workload in workloads:
        dsn = env_of(workload)["CASETRAIL_PG_DSN"]
        assert conninfo_to_dict(dsn) == {
            "host": host,
            "port": str(port),
            "dbname": VALUES["database"]["name"],
        }, dsn
        assert postgres_name(dsn) == f"PostgreSQL at {host}:{port}"


def _sized(resources: dict[str, Any] | None) -> bool:
    return bool(
        resources
        and resources["requests"]["cpu"]
        and resources["requests"]["memory"]
        and resources["limits"]["memory"]
    )


def test_every_pod_the_operators_run_has_requests_and_limits(rendered: Rendered) -> None:
    """Kafka's brokers and dedicated controllers, Strimzi's Topic and User Operators and the
    PostgreSQL instances: none BestEffort (the first evicted under memory pressure)."""
    for pool in rendered.of_kind("KafkaNodePool"):
        assert _sized(pool["spec"].get("resources")), pool["metadata"]["name"]
    for kafka in rendered.of_kind("Kafka"):
        operators = kafka["spec"]["entityOperator"]
        for operator in ("topicOperator", "userOperator"):
            assert _sized(operators[operator].get("resources")), operator
    for cluster in rendered.of_kind("Cluster"):
        assert _sized(cluster["spec"].get("resources")), cluster["metadata"]["name"]


def _restricted_container(security: dict[str, Any]) -> bool:
    return (
        security.get("allowPrivilegeEscalation") is False
        and security.get("runAsNonRoot") is True
        and security.get("readOnlyRootFilesystem") is True
        and security.get("capabilities", {}).get("drop") == ["ALL"]
    )


def test_the_pods_strimzi_runs_are_as_restricted_as_ours(rendered: Rendered) -> None:
    """Brokers, controllers and the entity operator: the operator's default (baseline) security
    provider leaves their containers' privileges open, so their templates ask for them. A node
    pool's template replaces the Kafka resource's, so each pool's carries them."""
    pools = rendered.of_kind("KafkaNodePool")
    for kafka in rendered.of_kind("Kafka"):
        for template, containers in (
            *(
                (pool["spec"].get("template", {}), ("kafkaContainer", "initContainer"))
                for pool in pools
            ),
            (
                kafka["spec"]["entityOperator"].get("template", {}),
                ("topicOperatorContainer", "userOperatorContainer"),
            ),
        ):
            pod = template.get("pod", {}).get("securityContext", {})
            assert pod.get("runAsNonRoot") is True
            assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}
            for name in containers:
                security = template.get(name, {}).get("securityContext", {})
                assert _restricted_container(security), name


def test_replicated_workloads_spread_over_nodes_and_survive_a_drain(rendered: Rendered) -> None:
    """Every Deployment of more than one replica: its replicas on different nodes (required,
    not preferred), spread over zones, and a budget that keeps some serving during a drain."""
    for deployment in rendered.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        replicas = deployment["spec"].get("replicas")
        scaled = [
            scaled["spec"]["minReplicaCount"]
            for scaled in rendered.of_kind("ScaledObject")
            if scaled["spec"]["scaleTargetRef"]["name"] == name
        ]
        least = scaled[0] if scaled else replicas
        if least is None or least < 2:
            continue
        pod = deployment["spec"]["template"]["spec"]
        spread = {c["topologyKey"]: c for c in pod.get("topologySpreadConstraints", [])}
        node = spread.get("kubernetes.io/hostname", {})
        assert node.get("whenUnsatisfiable") == "DoNotSchedule", name
        assert node["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert "topology.kubernetes.io/zone" in spread, name
        budget = rendered.named("PodDisruptionBudget", name)["spec"]
        assert budget["maxUnavailable"] < least, name


def test_kafka_spreads_over_nodes_and_zones_where_the_services_do(rendered: Rendered) -> None:
    """With topologySpread (infra/kafka/PRODUCTION.md): each broker's broker.rack is its zone,
    so a partition's three replicas are in three zones, and a pool's nodes are on different
    nodes (required, as the PostgreSQL instances), so no node takes two replicas down at once.
    Before, three brokers could share one node and every replica with it."""
    profile = yaml.safe_load((CHART / PROFILES[rendered.profile][0]).read_text())
    spread = profile.get("topologySpread", VALUES["topologySpread"])
    (kafka,) = rendered.of_kind("Kafka")
    rack = kafka["spec"]["kafka"].get("rack")
    assert rack == ({"topologyKey": "topology.kubernetes.io/zone"} if spread else None)
    (cluster,) = rendered.of_kind("Cluster")
    assert cluster["spec"]["affinity"]["podAntiAffinityType"] == (
        "required" if spread else "preferred"
    )
    for pool in rendered.of_kind("KafkaNodePool"):
        name = pool["metadata"]["name"]
        pod = pool["spec"]["template"]["pod"]
        if not spread:
            assert "affinity" not in pod, name
            continue
        members = {"strimzi.io/cluster": kafka["metadata"]["name"], "strimzi.io/pool-name": name}
        (node,) = pod["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert node == {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": members},
        }
        (zone,) = pod["topologySpreadConstraints"]
        assert zone["topologyKey"] == "topology.kubernetes.io/zone", name
        assert zone["labelSelector"] == {"matchLabels": members}, name


def test_every_pod_goes_to_the_nodes_the_agency_set_aside(rendered: Rendered) -> None:
    """``nodeSelector`` and ``tolerations`` reach every pod of the release, those the operators
    run too: the PostgreSQL instances (CloudNativePG's affinity) and Kafka's brokers,
    controllers and entity operator (Strimzi's pod templates, which have no nodeSelector: a
    required node affinity). Before, only the chart's own Deployments and Job took them, and an
    agency's dedicated nodes held every pod but the ones keeping the records."""
    selected: dict[str, str] = {}
    tolerated: list[dict[str, str]] = []
    for values in PROFILES[rendered.profile]:
        path = values if Path(values).is_absolute() else CHART / values
        profile = yaml.safe_load(Path(path).read_text())
        selected = profile.get("nodeSelector", selected)
        tolerated = profile.get("tolerations", tolerated)
    required = [
        {"key": key, "operator": "In", "values": [value]} for key, value in selected.items()
    ]
    for kind in ("Deployment", "Job"):
        for workload in rendered.of_kind(kind):
            pod = workload["spec"]["template"]["spec"]
            assert pod.get("nodeSelector", {}) == selected, workload["metadata"]["name"]
            assert pod.get("tolerations", []) == tolerated, workload["metadata"]["name"]
    for cluster in rendered.of_kind("Cluster"):
        assert cluster["spec"]["affinity"].get("nodeSelector", {}) == selected
        assert cluster["spec"]["affinity"].get("tolerations", []) == tolerated
    strimzi_pods = [pool["spec"]["template"]["pod"] for pool in rendered.of_kind("KafkaNodePool")]
    strimzi_pods += [
        k["spec"]["entityOperator"]["template"]["pod"] for k in rendered.of_kind("Kafka")
    ]
    for pod in strimzi_pods:
        assert pod.get("tolerations", []) == tolerated
        node = pod.get("affinity", {}).get("nodeAffinity")
        if not selected:
            assert node is None
            continue
        (term,) = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert term == {"matchExpressions": required}


def test_the_caseload_processor_is_ready_only_once_its_tables_are_recovered(
    rendered: Rendered,
) -> None:
    """Readiness asks the page that is 503 until table recovery ends (services/caseload/web.py),
    so no view answers from half a table; startup and liveness ask the page that answers
    whenever the process does, so a long recovery (a start, a rebalance) restarts nothing."""
    main = container(rendered.named("Deployment", f"{RELEASE}-caseload"))
    assert main["readinessProbe"]["httpGet"]["path"] == "/caseload-status/ready/"
    for probe in ("startupProbe", "livenessProbe"):
        assert main[probe]["httpGet"]["path"] == "/caseload-status/", probe


def _ingress_of(documents: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    for document in documents:
        if document["kind"] == "NetworkPolicy" and document["metadata"]["name"] == (
            f"{RELEASE}-{component}"
        ):
            ingress: list[dict[str, Any]] = document["spec"]["ingress"]
            return ingress
    raise KeyError(component)


def test_no_clients_admits_nobody_never_everybody(helm: Tools, tmp_path: Path) -> None:
    """An ingress rule with an empty `from` admits every source in the cluster: with
    `networkPolicy.clients: []` the gRPC ports must admit nobody (but the caseload views' own
    calls to audit), not everyone."""
    values = tmp_path / "no-clients.yaml"
    values.write_text("networkPolicy:\n  clients: []\n")
    for caseload in ("false", "true"):
        result = helm_template(
            helm, (*PROFILES["small"], values), "--set", f"caseload.enabled={caseload}"
        )
        assert result.returncode == 0, result.stderr
        documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        for component in (*SERVICES, *(("caseload",) if caseload == "true" else ())):
            for rule in _ingress_of(documents, component):
                assert rule.get("from"), (component, caseload, rule)
        assert _ingress_of(documents, "intake") == []


def test_the_audit_console_may_reach_audit_and_only_audit(helm: Tools, tmp_path: Path) -> None:
    console = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "console"}}}
    values = tmp_path / "console.yaml"
    values.write_text(yaml.safe_dump({"networkPolicy": {"serviceClients": {"audit": [console]}}}))
    result = helm_template(helm, (*PROFILES["small-production"], values))
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    for service in SERVICES:
        admitted = [peer for rule in _ingress_of(documents, service) for peer in rule["from"]]
        assert (console in admitted) is (service == "audit"), service
    audit_port = TOPOLOGY["services"]["audit"]["grpcPort"]
    [clients] = [rule for rule in _ingress_of(documents, "audit") if console in rule["from"]]
    assert clients["ports"] == [{"port": audit_port, "protocol": "TCP"}]


def test_the_caseload_views_speak_https_whenever_grpc_does(rendered: Rendered) -> None:
    """The views take bearer tokens: with grpcTls (always in production) they are served over
    HTTPS with the services' certificate, and kubelet probes them so."""
    main = container(rendered.named("Deployment", f"{RELEASE}-caseload"))
    env = {item["name"]: item.get("value") for item in main["env"]}
    production = "production" in rendered.profile
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"]["scheme"] == ("HTTPS" if production else "HTTP"), probe
    if production:
        assert env["CASETRAIL_TLS_CERT"] == "/etc/casetrail/grpc-tls/tls.crt"
        assert env["CASETRAIL_TLS_KEY"] == "/etc/casetrail/grpc-tls/tls.key"
        # A view forwarded to the pod owning its worker is checked against the Service's
        # name, which the certificate carries, not the pod's IP it dials (review h-web).
        assert env["CASETRAIL_CASELOAD_TLS_NAME"] == f"{RELEASE}-caseload"
        assert env["CASETRAIL_TLS_CA"] == "/etc/casetrail/grpc-tls/ca.crt"
    else:
        assert "CASETRAIL_TLS_CERT" not in env
        assert "CASETRAIL_CASELOAD_TLS_NAME" not in env


def _rendered(name: str, result: subprocess.CompletedProcess[str]) -> Rendered:
    assert result.returncode == 0, result.stderr
    return Rendered(name, result.stdout, [doc for doc in yaml.safe_load_all(result.stdout) if doc])


@pytest.mark.parametrize("level", SCHEMA["properties"]["logLevel"]["enum"])
def test_the_caseload_processor_is_given_a_log_level_faust_takes(helm: Tools, level: str) -> None:
    """The worker reads its level from Faust's --loglevel, whose choices (read here from the
    installed faust) are crit, error, warn, info and debug: logLevel WARNING gave it `warning`,
    and it exited 2 at every start, a crash loop. Each level the schema takes is given as the
    choice naming the same severity."""
    result = helm_template(helm, PROFILES["small"], "--set", f"logLevel={level}")
    args = container(_rendered(level, result).named("Deployment", f"{RELEASE}-caseload"))["args"]
    given = args[args.index("--loglevel") + 1]
    faust_level = CaseInsensitiveChoice(LOGLEVELS).convert(given, None, None)
    severities = logging.getLevelNamesMapping()
    assert severities[faust_level.upper()] == severities[level]


def test_no_number_is_printed_as_a_float(helm: Tools, tmp_path: Path) -> None:
    """Helm reads a values file's numbers as floats and prints one of a million or more as 1e+06:
    KEDA took lagThreshold "1e+06" for no int64 and scaled nothing, a storage size in bytes was
    no quantity, an alert's threshold was PromQL by luck. Every number the schema bounds, at its
    maximum, with every option that prints one on (autoscaling, dedicated controllers, the
    alert rules), prints as the whole number it is."""
    values = tmp_path / "maxima.yaml"
    values.write_text(yaml.safe_dump(values_at_their_maxima()))
    result = helm_template(helm, (*PROFILES["large-production-monitored"], values))
    rendered = _rendered("maxima", result)
    assert re.findall(r".*\d[eE]\+\d.*", rendered.text) == []
    for scaled in rendered.of_kind("ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["metadata"]["lagThreshold"] == "1000000"
    # A quantity is a string to the operators' resources: a number there is refused.
    sizes = [
        volume["size"]
        for pool in rendered.of_kind("KafkaNodePool")
        for volume in pool["spec"]["storage"].get("volumes", [])
    ]
    sizes += [
        cluster["spec"][storage]["size"]
        for cluster in rendered.of_kind("Cluster")
        for storage in ("storage", "walStorage")
    ]
    assert sizes == ["1099511627776"] * 3


# Each decimal setting the chart prints: its values path, its variable, its container.
DECIMAL_SETTINGS = (
    (("emergencyReviewHours",), "CASETRAIL_EMERGENCY_REVIEW_HOURS", "intake"),
    (("ledger", "signEverySeconds"), "CASETRAIL_LEDGER_SIGN_EVERY", "audit"),
)


def _decimals_from(minimum: float, maximum: float) -> list[float]:
    """The minimum, the maximum, and in each power of ten between numbers of 17 significant
    digits (the most a float's shortest form has) with the decade's first digits."""
    numbers = [minimum, maximum]
    decade = minimum
    while decade <= maximum:
        numbers += [decade * 1.2345678901234567, decade * 9.8765432109876543]
        decade *= 10
    return [number for number in numbers if minimum <= number <= maximum]


@pytest.mark.parametrize(("path", "variable", "service"), DECIMAL_SETTINGS)
def test_every_decimal_setting_is_printed_as_its_setting_reads_it(
    helm: Tools, tmp_path: Path, path: tuple[str, ...], variable: str, service: str
) -> None:
    """Helm prints a float as Go's %v: 0.00001 as 1e-05 and 0.0012345678901234567 with 19
    decimals, each refused by the setting (ASCII digits, one point, at most 18 after it), so
    the service never started. From the schema's minimum to its maximum, each value the chart
    prints is read back by the setting's own parser as the value given."""
    bounds = SCHEMA
    for key in path:
        bounds = bounds["properties"][key]
    for number in _decimals_from(bounds["minimum"], bounds["maximum"]):
        values: dict[str, Any] = {path[-1]: number}
        for key in reversed(path[:-1]):
            values = {key: values}
        given = tmp_path / "decimal.yaml"
        given.write_text(yaml.safe_dump(values))
        rendered = _rendered(str(number), helm_template(helm, (*PROFILES["small"], given)))
        deployment = rendered.named("Deployment", f"{RELEASE}-{service}")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (printed,) = [e["value"] for e in container["env"] if e["name"] == variable]
        assert ascii_decimal(printed) == number, printed


@pytest.mark.parametrize(("path", "variable", "service"), DECIMAL_SETTINGS)
def test_a_decimal_setting_helm_would_print_in_exponent_form_is_refused(
    helm: Tools, tmp_path: Path, path: tuple[str, ...], variable: str, service: str
) -> None:
    values: dict[str, Any] = {path[-1]: 0.00001}
    for key in reversed(path[:-1]):
        values = {key: values}
    given = tmp_path / "decimal.yaml"
    given.write_text(yaml.safe_dump(values))
    result = helm_template(helm, (*PROFILES["small"], given))
    assert result.returncode != 0, f"{variable} of {service} printed as 1e-05"
    assert f"/{'/'.join(path)}" in result.stderr
    assert "minimum" in result.stderr


# Names the reviewer's Kafka pods were refused under, and Helm's longest (53 characters).
LONG_RELEASES = (
    "casetrail-production",
    "westside-dss-casetrail",
    "westside-dss-casetrail-production-with-a-long-name-53",
)


@pytest.mark.parametrize("profile", ["small", "large"])
@pytest.mark.parametrize("release", LONG_RELEASES)
def test_every_kafka_pod_name_is_a_hostname(helm: Tools, release: str, profile: str) -> None:
    """Each pool's name was <release>-kafka-<pool>, so its pods' <release>-kafka-<release>-kafka-
    <pool>-<id>: past 63 characters from a release name of 19 (dedicated controllers) or 22, and
    the API server refused every one, Kafka never starting. A pool's own name is at most 18
    characters, room beside the longest Kafka name (40) for a node id of 3 digits (the schema's
    most brokers)."""
    brokers = SCHEMA["properties"]["kafka"]["properties"]["cluster"]["properties"]["brokers"]
    # No subscribers: a release name past 50 characters leaves their KafkaUsers no room
    # (test_a_release_name_leaving_a_subscriber_user_no_room_is_refused).
    unsubscribed = ("--set-json", "kafka.subscribers=[]")
    for extra in ((), ("--set", f"kafka.cluster.brokers={brokers['maximum']}")):
        result = helm_template(helm, PROFILES[profile], *unsubscribed, *extra, release=release)
        rendered = _rendered(release, result)
        pools = {pool["metadata"]["name"] for pool in rendered.of_kind("KafkaNodePool")}
        expected = ("brokers", "controllers") if profile == "large" else ("nodes",)
        assert pools == release_pool_names(release, *expected)
        for pod in kafka_pod_names(rendered):
            assert len(pod) <= 63, pod


# Pairs of release names sharing the characters a pool name keeps: the second pair's first 6
# hex digits of SHA-256 are one (ed6525), as a search of a few thousand names finds.
SHARING_RELEASES = (("agency-north-a", "agency-north-b"), ("casetrail-1336", "casetrail-2942"))


@pytest.mark.parametrize("profile", ["small", "large"])
@pytest.mark.parametrize("releases", SHARING_RELEASES)
def test_releases_sharing_their_first_characters_have_pools_of_their_own(
    helm: Tools, profile: str, releases: tuple[str, str]
) -> None:
    """A KafkaNodePool is a namespaced object: the pools were plain nodes, brokers,
    controllers, so a second release in the namespace could not be installed (its pools the
    first's). Two releases whose names share the characters a pool name keeps differ by the
    hash of their whole names, 40 bits of it: 24 were shared by casetrail-1336 and
    casetrail-2942."""
    named = {}
    for release in releases:
        rendered = _rendered(release, helm_template(helm, PROFILES[profile], release=release))
        named[release] = {pool["metadata"]["name"] for pool in rendered.of_kind("KafkaNodePool")}
    first, second = releases
    assert all(name.startswith(f"{first[:5]}-") for name in named[first])
    assert not named[first] & named[second]


@pytest.mark.parametrize("release", LONG_RELEASES)
def test_the_migration_jobs_name_leaves_room_for_any_revision(helm: Tools, release: str) -> None:
    """The Job is named <release>-migrate-<revision> and its name is its pods' job-name label
    (63 characters at most): a 53-character release's was 64 from revision 10 on, and the API
    server refused the upgrade's Job. Room is left for a revision of 10 digits."""
    rendered = _rendered(release, helm_template(helm, PROFILES["small"], release=release))
    (job,) = rendered.of_kind("Job")
    name = job["metadata"]["name"]
    assert name.endswith("-1")
    assert len(name.removesuffix("-1")) + len("-") + 10 <= 63, name
