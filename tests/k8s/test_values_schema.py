"""Bad values make `helm template` fail with a message naming what is wrong
(infra/helm/casetrail/values.schema.json), before anything reaches a cluster."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.render import PROFILES, RELEASE, helm_template
from tests.k8s.tools import CHART, Tools


def refused(helm: Tools, tmp_path: Path, values: str, *extra: str, release: str = RELEASE) -> str:
    custom = tmp_path / "values.yaml"
    custom.write_text(values)
    result = helm_template(helm, ("values-small.yaml", custom), *extra, release=release)
    assert result.returncode != 0, f"helm accepted:\n{values}"
    return result.stderr


def test_a_missing_database_secret_is_refused(helm: Tools, tmp_path: Path) -> None:
    message = refused(helm, tmp_path, "secrets:\n  database: ''\n  signingKeys: keys\n")
    assert "/secrets/database" in message
    assert "minLength" in message


def test_the_secrets_are_required_even_without_a_values_file(helm: Tools) -> None:
    result = helm_template(helm, ())
    assert result.returncode != 0
    assert "/secrets/database" in result.stderr
    assert "/secrets/signingKeys" in result.stderr


def test_a_secret_value_in_place_of_a_secret_name_is_refused(helm: Tools, tmp_path: Path) -> None:
    message = refused(
        helm, tmp_path, "secrets:\n  database: 'postgres://u:pa55@db/x'\n  signingKeys: k\n"
    )
    assert "/secrets/database" in message


@pytest.mark.parametrize("where", ["services.intake.replicas", "caseload.replicas"])
def test_zero_replicas_are_refused(helm: Tools, tmp_path: Path, where: str) -> None:
    message = refused(helm, tmp_path, "", "--set", f"{where}=0")
    assert f"/{where.replace('.', '/')}" in message
    assert "minimum" in message


def test_replicas_that_are_not_a_number_are_refused(helm: Tools, tmp_path: Path) -> None:
    message = refused(helm, tmp_path, "services:\n  planning:\n    replicas: two\n")
    assert "/services/planning/replicas" in message


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ("replicaCount: 3\n", "replicaCount"),
        ("services:\n  intake:\n    replica: 2\n", "replica"),
        ("kafka:\n  cluster:\n    broker: 5\n", "broker"),
        ("services:\n  billing:\n    replicas: 1\n", "billing"),
    ],
)
def test_an_unknown_option_is_refused(helm: Tools, tmp_path: Path, values: str, where: str) -> None:
    message = refused(helm, tmp_path, values)
    assert "additional properties" in message
    assert f"'{where}'" in message


def test_grpc_tls_without_its_secret_is_refused(helm: Tools, tmp_path: Path) -> None:
    message = refused(helm, tmp_path, "grpcTls:\n  enabled: true\n")
    assert "/grpcTls" in message


def test_an_outside_kafka_needs_its_address(helm: Tools, tmp_path: Path) -> None:
    message = refused(helm, tmp_path, "kafka:\n  cluster:\n    create: false\n")
    assert "bootstrapServers" in message


def test_the_token_issuer_is_required(helm: Tools, tmp_path: Path) -> None:
    message = refused(helm, tmp_path, "authentication:\n  issuerUrl: ''\n  audience: x\n")
    assert "/authentication/issuerUrl" in message


def test_a_plaintext_token_issuer_is_refused(helm: Tools, tmp_path: Path) -> None:
    message = refused(
        helm, tmp_path, "authentication:\n  issuerUrl: http://issuer\n  audience: x\n"
    )
    assert "/authentication/issuerUrl" in message


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        # Every acks=all write refused / one lost broker stops every write.
        ("kafka.minInsyncReplicas=4", "kafka.minInsyncReplicas"),
        ("kafka.minInsyncReplicas=3", "kafka.minInsyncReplicas"),
        # Topics that could never be created.
        ("kafka.cluster.brokers=1", "kafka.cluster.brokers"),
    ],
)
def test_kafka_settings_that_cannot_work_are_refused(
    helm: Tools, tmp_path: Path, setting: str, named: str
) -> None:
    message = refused(helm, tmp_path, "", "--set", setting)
    assert named in message


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ("services: {audit: {autoscaling: {minReplicas: 5, maxReplicas: 2}}}", "maxReplicas (2)"),
        # maxReplicaCount is capped at the partitions (keda.yaml): min 3 against max 2.
        ("kafka: {caseEventsPartitions: 2}", "kafka.caseEventsPartitions (2)"),
    ],
)
def test_autoscaling_that_keda_would_refuse_is_refused(
    helm: Tools, tmp_path: Path, values: str, named: str
) -> None:
    """A ScaledObject whose minReplicaCount is above its maxReplicaCount is refused by KEDA,
    after the release was installed; helm names the service's value instead."""
    custom = tmp_path / "values.yaml"
    custom.write_text(values + "\n")
    result = helm_template(helm, ("values-large.yaml", custom))
    assert result.returncode != 0, values
    assert "services." in result.stderr
    assert ".autoscaling: minReplicas" in result.stderr
    assert named in result.stderr


def test_autoscaling_is_checked_only_where_it_is_enabled(helm: Tools, tmp_path: Path) -> None:
    custom = tmp_path / "values.yaml"
    custom.write_text("services: {audit: {autoscaling: {minReplicas: 5, maxReplicas: 2}}}\n")
    result = helm_template(helm, ("values-small.yaml", custom))
    assert result.returncode == 0, result.stderr


def test_another_database_port_is_refused_for_the_charts_own_cluster(
    helm: Tools, tmp_path: Path
) -> None:
    """CloudNativePG listens on 5432 and the NetworkPolicies admit 5432: the DSN alone used
    database.port, so no process could reach the database."""
    message = refused(helm, tmp_path, "database: {port: 6432}\n")
    assert "database.port (6432)" in message
    outside = tmp_path / "outside.yaml"
    outside.write_text(
        "database: {port: 6432, host: db.agency.internal, cluster: {create: false}}\n"
        "networkPolicy:\n  databaseEgress:\n"
        "    - to: [{ipBlock: {cidr: 10.40.0.0/24}}]\n"
        "      ports: [{port: 6432, protocol: TCP}]\n"
    )
    accepted = helm_template(helm, ("values-small.yaml", outside))
    assert accepted.returncode == 0, accepted.stderr
    assert "postgresql://db.agency.internal:6432/" in accepted.stdout


@pytest.mark.parametrize(
    "host",
    [
        # Parameters of the DSN's own: sslmode=disable overrode production's PGSSLMODE.
        "db/casetrail?sslmode=disable&application_name=",
        "db.agency.internal:6432",
        "[fd00:10::5]",
        "user@db.agency.internal",
        "db#x",
        "db agency",
        "-db",
    ],
)
def test_a_database_host_that_is_no_hostname_or_address_is_refused(
    helm: Tools, tmp_path: Path, host: str
) -> None:
    """database.host is the host of the services' and the migration's PostgreSQL URL: anything
    but a DNS name or an IP address would add to the URL (a port, a path, parameters), under
    production's verify-full too."""
    custom = tmp_path / "outside.yaml"
    custom.write_text(
        yaml.safe_dump(
            {
                "database": {"host": host, "cluster": {"create": False}},
                "networkPolicy": {
                    "databaseEgress": [
                        {"to": [{"ipBlock": {"cidr": "10.40.0.0/24"}}], "ports": [{"port": 5432}]}
                    ]
                },
            }
        )
    )
    result = helm_template(helm, (*PROFILES["small-production"], custom))
    assert result.returncode != 0, f"helm accepted {host!r}"
    assert "/database/host" in result.stderr
    assert "does not match pattern" in result.stderr


def test_an_agency_configuration_that_is_not_json_is_refused(helm: Tools, tmp_path: Path) -> None:
    message = refused(helm, tmp_path, "agencyConfig: 'workers: [ann]'\n")
    assert "agencyConfig is not a JSON object" in message


def test_the_agency_configured_is_the_home_agency(helm: Tools, tmp_path: Path) -> None:
    """Coordination does not start when its agency file is of another agency than the one the
    services serve: refused when rendered, naming both (without ``agencyConfig``, the built-in
    example agency is eastbay-dss's)."""
    from services.coordination.adapters.example_agency import example_agency

    west = example_agency().model_dump(mode="json") | {"agency_id": "westside-dss"}
    agency = yaml.safe_dump({"agencyConfig": json.dumps(west)})
    message = refused(helm, tmp_path, agency)
    assert "agencyConfig's agency_id (westside-dss) is not homeAgency (eastbay-dss)" in message
    message = refused(helm, tmp_path, "homeAgency: westside-dss\n")
    assert "homeAgency (westside-dss) with no agencyConfig" in message
    custom = tmp_path / "west.yaml"
    custom.write_text(agency + "homeAgency: westside-dss\n")
    accepted = helm_template(helm, ("values-small.yaml", custom))
    assert accepted.returncode == 0, accepted.stderr
    assert "/homeAgency" in refused(helm, tmp_path, "homeAgency: 'west side'\n")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ("kafka:\n  bootstrapServers: k:9092\n  cluster:\n    create: false\n", "kafkaEgress"),
        ("database:\n  host: db\n  cluster:\n    create: false\n", "databaseEgress"),
    ],
)
def test_outside_servers_need_their_egress_rules(
    helm: Tools, tmp_path: Path, values: str, named: str
) -> None:
    """Otherwise the NetworkPolicies would let the pods reach nothing but DNS."""
    message = refused(helm, tmp_path, values)
    assert f"networkPolicy.{named}" in message


def test_network_policies_without_a_way_to_the_token_issuer_are_refused(
    helm: Tools, tmp_path: Path
) -> None:
    """Otherwise no service could fetch the issuer's keys, and every token would be refused."""
    message = refused(helm, tmp_path, "networkPolicy:\n  issuerEgress: []\n")
    assert "networkPolicy.issuerEgress" in message
    accepted = helm_template(
        helm,
        PROFILES["small"],
        "--set-json",
        "networkPolicy.issuerEgress=[]",
        "--set",
        "networkPolicy.enabled=false",
    )
    assert accepted.returncode == 0, accepted.stderr


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ("networkPolicy:\n  issuerEgress: [{to: [], ports: [{port: 443}]}]\n", "issuerEgress"),
        (
            "kafka:\n  bootstrapServers: k:9093\n  cluster:\n    create: false\n"
            "networkPolicy:\n  kafkaEgress: [{to: []}]\n",
            "kafkaEgress",
        ),
        (
            "database:\n  host: db\n  cluster:\n    create: false\n"
            "networkPolicy:\n  databaseEgress: [{to: [], ports: [{port: 5432}]}]\n",
            "databaseEgress",
        ),
    ],
)
def test_an_egress_rule_to_no_peer_is_refused(
    helm: Tools, tmp_path: Path, values: str, named: str
) -> None:
    """An egress rule whose `to` is empty matches every destination: the token issuer's rule
    given `to: []` let every service and the caseload views reach any address on 443, and
    Kafka's all of them on every port, where the rule was to name the one server."""
    message = refused(helm, tmp_path, values)
    assert f"/networkPolicy/{named}/0/to" in message
    assert "minItems" in message


@pytest.mark.parametrize("where", ["commonLabels", "metrics.podMonitor.labels"])
@pytest.mark.parametrize(
    "labels",
    [
        {"cost centre": "east"},
        {"cost-centre": "east / social services"},
        {"app.kubernetes.io/instance": "agency"},
        {"strimzi.io/cluster": "reporting"},
    ],
)
def test_labels_the_api_server_or_the_chart_would_refuse_are_refused(
    helm: Tools, tmp_path: Path, where: str, labels: dict[str, str]
) -> None:
    """Labels beside the chart's own: a key or value that is no label's was refused by the API
    server on every object, and a key the chart sets itself was printed twice in one manifest
    (kubeconform -strict: key "app.kubernetes.io/instance" already set in map; kubectl keeping
    the last)."""
    *parents, last = where.split(".")
    values: dict[str, object] = {last: labels}
    for parent in reversed(parents):
        values = {parent: values}
    message = refused(helm, tmp_path, yaml.safe_dump(values))
    (key,) = labels
    assert f"'{key}'" in message or f"/{where.replace('.', '/')}/{key}" in message
    accepted = {"cost-centre": "east", "example.org/team": "intake_a"}
    custom = tmp_path / "accepted.yaml"
    custom.write_text(yaml.safe_dump({"commonLabels": accepted}))
    result = helm_template(helm, ("values-small.yaml", custom))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("hours", ["0", "721", "-1", "soon"])
def test_an_emergency_review_delay_out_of_range_is_refused(
    helm: Tools, tmp_path: Path, hours: str
) -> None:
    # The bounds intake itself refuses to start with (services/intake/bootstrap.py).
    message = refused(helm, tmp_path, f"emergencyReviewHours: {hours}\n")
    assert "/emergencyReviewHours" in message


def test_an_unknown_log_format_is_refused(helm: Tools, tmp_path: Path) -> None:
    message = refused(helm, tmp_path, "logFormat: xml\n")
    assert "/logFormat" in message


def test_production_refuses_the_profiles_placeholder_issuer(helm: Tools) -> None:
    # values-small.yaml's login.agency.example kept under values-production.yaml: every token
    # would be refused at run time, so the install is refused now, naming the value.
    result = helm_template(helm, ("values-small.yaml", "values-production.yaml"))
    assert result.returncode != 0
    assert "/authentication/issuerUrl" in result.stderr
    # Outside production the placeholder still renders (a trial install, the chart's tests).
    assert helm_template(helm, ("values-small.yaml",)).returncode == 0


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        # The development issuer of `make run` listens on loopback (casetrail_platform/identity).
        ("issuerUrl=https://127.0.0.1:8088", "issuerUrl"),
        ("issuerUrl=https://localhost/realms/casetrail", "issuerUrl"),
        ("issuerUrl=https://[::1]:9000", "issuerUrl"),
        ("issuerUrl=https://sso.casetrail.test", "issuerUrl"),
        ("issuerUrl=https://LOGIN.EXAMPLE.COM/x", "issuerUrl"),
        ("jwksUrl=https://keys.localhost/jwks", "jwksUrl"),
    ],
)
def test_production_refuses_a_development_issuer(helm: Tools, setting: str, where: str) -> None:
    result = helm_template(helm, PROFILES["small-production"], "--set", f"authentication.{setting}")
    assert result.returncode != 0, setting
    assert f"/authentication/{where}" in result.stderr


def test_production_takes_the_agencys_issuer(helm: Tools) -> None:
    result = helm_template(helm, PROFILES["small-production"])
    assert result.returncode == 0, result.stderr
    assert "https://login.county-social-services.gov/realms/casetrail" in result.stdout


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        # SASL over plaintext: every event and each KafkaUser's SCRAM exchange in the clear.
        ("kafka.authentication=scram-sha-512", "/kafka/tls/enabled"),
        ("database.tls.enabled=false", "/database/tls/enabled"),
    ],
)
def test_production_refuses_a_later_values_file_turning_tls_off(
    helm: Tools, setting: str, where: str
) -> None:
    """A values file layered after values-production.yaml rendered SASL_PLAINTEXT or
    PGSSLMODE=prefer without a word."""
    result = helm_template(helm, PROFILES["small-production"], "--set", setting)
    assert result.returncode != 0, setting
    assert where in result.stderr


def test_production_takes_scram_over_tls(helm: Tools) -> None:
    result = helm_template(
        helm,
        PROFILES["small-production"],
        "--set",
        "kafka.authentication=scram-sha-512,kafka.tls.enabled=true",
    )
    assert result.returncode == 0, result.stderr
    assert "SASL_SSL" in result.stdout
    assert "SASL_PLAINTEXT" not in result.stdout


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("podSecurityContext.seccompProfile.type=Unconfined", "seccompProfile/type"),
        ("podSecurityContext.seccompProfile=null", "podSecurityContext"),
        ("podSecurityContext.runAsUser=0", "runAsUser"),
        ("podSecurityContext.runAsNonRoot=false", "runAsNonRoot"),
    ],
)
def test_a_pod_security_context_below_restricted_is_refused(
    helm: Tools, tmp_path: Path, setting: str, where: str
) -> None:
    # Every casetrail pod takes podSecurityContext as given: a values file must not be able to
    # run them as root or unconfined (Pod Security "restricted"; the dry run checks the rest).
    message = refused(helm, tmp_path, "", "--set", setting)
    assert where in message


def test_other_pod_security_fields_stay_free(helm: Tools) -> None:
    result = helm_template(helm, ("values-small.yaml",), "--set", "podSecurityContext.fsGroup=2000")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "where",
    [
        "kafka.cluster.resources",
        "kafka.cluster.controllerResources",
        "kafka.cluster.entityOperatorResources",
        "database.cluster.resources",
    ],
)
def test_the_operators_pods_cannot_lose_their_resources(
    helm: Tools, tmp_path: Path, where: str
) -> None:
    message = refused(helm, tmp_path, "", "--set", f"{where}=null")
    assert "missing property" in message
    assert where.rsplit(".", 1)[1] in message


@pytest.mark.parametrize("seconds", ["0", "599", "604801", "'a day'"])
def test_signing_keys_kept_too_short_or_too_long_are_refused(
    helm: Tools, tmp_path: Path, seconds: str
) -> None:
    message = refused(helm, tmp_path, f"authentication:\n  keysMaxAgeSeconds: {seconds}\n")
    assert "/authentication/keysMaxAgeSeconds" in message


def test_production_refuses_grpc_without_tls(helm: Tools) -> None:
    result = helm_template(helm, PROFILES["small-production"], "--set", "grpcTls.enabled=false")
    assert result.returncode != 0
    assert "/grpcTls/enabled" in result.stderr


def test_only_grpc_without_tls_is_allowed_plaintext(helm: Tools) -> None:
    """A trial install's plaintext gRPC is allowed by name (the services refuse it beyond
    loopback otherwise); never with TLS on."""
    for profile, allowed in (("small", True), ("small-production", False)):
        result = helm_template(helm, PROFILES[profile])
        assert result.returncode == 0, result.stderr
        assert ("CASETRAIL_GRPC_ALLOW_PLAINTEXT" in result.stdout) is allowed, profile
        # The caseload views' own setting, exactly when the services' (they refused nothing).
        assert ("CASETRAIL_CASELOAD_ALLOW_PLAINTEXT" in result.stdout) is allowed, profile


DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_the_image_may_be_pinned_by_digest(helm: Tools) -> None:
    """A tag can be pushed again; a digest names the one image that was reviewed."""
    result = helm_template(
        helm,
        PROFILES["small"],
        "--set",
        "image.repository=registry.agency.gov:5000/casetrail/app",
        "--set",
        f"image.digest={DIGEST}",
    )
    assert result.returncode == 0, result.stderr
    pods = [
        document["spec"]["template"]["spec"]
        for document in yaml.safe_load_all(result.stdout)
        if document and document["kind"] in ("Deployment", "Job")
    ]
    assert len(pods) == 6  # four services, caseload, migration
    for pod in pods:
        for container in pod["containers"]:
            assert container["image"] == f"registry.agency.gov:5000/casetrail/app@{DIGEST}"


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("image.digest=sha256:abc", "/image/digest"),
        (f"image.digest={DIGEST.upper()}", "/image/digest"),
        ("image.repository=casetrail:latest", "/image/repository"),
        ("image.repository=casetrail app", "/image/repository"),
        ("image.tag=1.0 --privileged", "/image/tag"),
        ("image.tag=:latest", "/image/tag"),
    ],
)
def test_a_malformed_image_reference_is_refused(
    helm: Tools, tmp_path: Path, setting: str, where: str
) -> None:
    message = refused(helm, tmp_path, "", "--set", setting)
    assert where in message


@pytest.mark.parametrize(
    "name",
    [
        "PGSSLMODE",
        "PGPASSWORD",
        "CASETRAIL_KAFKA_SECURITY_PROTOCOL",
        "CASETRAIL_OIDC_ISSUER",
        "POD_IP",
    ],
)
def test_extra_env_cannot_override_what_the_chart_sets(helm: Tools, name: str) -> None:
    """The last of a name wins in a container's environment: extraEnv PGSSLMODE=disable undid
    production's verify-full, a development issuer got past the production check."""
    result = helm_template(
        helm,
        PROFILES["small-production"],
        "--set-json",
        f'extraEnv=[{{"name":"{name}","value":"x"}}]',
    )
    assert result.returncode != 0, f"helm accepted extraEnv {name}"
    assert f"extraEnv[0]: {name}" in result.stderr


def test_extra_env_takes_other_variables(helm: Tools) -> None:
    result = helm_template(
        helm,
        PROFILES["small-production"],
        "--set-json",
        'extraEnv=[{"name":"HTTPS_PROXY","value":"http://proxy:3128"}]',
    )
    assert result.returncode == 0, result.stderr
    for document in yaml.safe_load_all(result.stdout):
        if document and document["kind"] in ("Deployment",):
            (main,) = document["spec"]["template"]["spec"]["containers"]
            assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in main["env"]


def test_an_extra_env_name_that_is_no_variable_name_is_refused(helm: Tools, tmp_path: Path) -> None:
    message = refused(helm, tmp_path, "extraEnv:\n  - {name: 'A B', value: x}\n")
    assert "/extraEnv/0/name" in message


def _unbounded(node: dict[str, Any], path: str) -> list[str]:
    """Where the schema lets a value grow without end: a number without both bounds, a string
    without maxLength, a list without maxItems (an enum, a const or a $ref are bounded where
    they are defined)."""
    found: list[str] = []
    for combinator in ("anyOf", "oneOf", "allOf"):
        for index, branch in enumerate(node.get(combinator, [])):
            found += _unbounded(branch, f"{path}<{combinator} {index}>")
    if {"$ref", "enum", "const"} & node.keys():
        return found
    kind = node.get("type")
    if kind in ("integer", "number"):
        if not {"minimum", "exclusiveMinimum"} & node.keys() or "maximum" not in node:
            found.append(path)
    elif kind == "string" and "maxLength" not in node:
        found.append(path)
    elif kind == "array":
        if "maxItems" not in node:
            found.append(path)
        found += _unbounded(node.get("items", {}), f"{path}[]")
    for name, child in node.get("properties", {}).items():
        found += _unbounded(child, f"{path}/{name}")
    return found


def test_every_value_is_bounded() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    unbounded = _unbounded(schema, "")
    for name, definition in schema["$defs"].items():
        unbounded += _unbounded(definition, f"#/$defs/{name}")
    assert unbounded == []


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("services.intake.replicas=5000", "/services/intake/replicas"),
        ("migration.activeDeadlineSeconds=999999999", "/migration/activeDeadlineSeconds"),
        ("migration.backoffLimit=100000", "/migration/backoffLimit"),
        # A checkpoint a day: a day of history the ledger signs nothing for.
        ("ledger.signEverySeconds=86400", "/ledger/signEverySeconds"),
        ("grpc.maxCalls=10000000", "/grpc/maxCalls"),
        ("kafka.caseEventsPartitions=100000", "/kafka/caseEventsPartitions"),
        (f"authentication.audience={'a' * 300}", "/authentication/audience"),
    ],
)
def test_a_value_past_its_bound_is_refused(
    helm: Tools, tmp_path: Path, setting: str, where: str
) -> None:
    message = refused(helm, tmp_path, "", "--set", setting)
    assert where in message
    assert "maximum" in message or "maxLength" in message


def _pools(result: subprocess.CompletedProcess[str]) -> set[str]:
    assert result.returncode == 0, result.stderr
    return {
        document["metadata"]["name"]
        for document in yaml.safe_load_all(result.stdout)
        if document and document["kind"] == "KafkaNodePool"
    }


def test_an_installed_release_keeps_its_kafka_pools_names(helm: Tools) -> None:
    """A KafkaNodePool renamed is deleted, and its pods with it: a release installed when the
    pools were named <release>-kafka-<pool> keeps those names (kafka.cluster.legacyPoolNames),
    and one installed when they were nodes, brokers, controllers keeps those
    (kafka.cluster.barePoolNames)."""
    legacy = ("--set", "kafka.cluster.legacyPoolNames=true")
    assert _pools(helm_template(helm, PROFILES["small"], *legacy)) == {"casetrail-kafka-nodes"}
    assert _pools(helm_template(helm, PROFILES["large"], *legacy)) == {
        "casetrail-kafka-brokers",
        "casetrail-kafka-controllers",
    }
    bare = ("--set", "kafka.cluster.barePoolNames=true")
    assert _pools(helm_template(helm, PROFILES["small"], *bare)) == {"nodes"}
    assert _pools(helm_template(helm, PROFILES["large"], *bare)) == {"brokers", "controllers"}
    # Spelled out: a change of the naming would rename, so delete, every installed pool.
    assert _pools(helm_template(helm, PROFILES["large"])) == {
        "caset-9f262f1362-b",
        "caset-9f262f1362-c",
    }


def test_only_one_older_naming_of_the_pools_is_kept(helm: Tools, tmp_path: Path) -> None:
    both = "kafka:\n  cluster:\n    legacyPoolNames: true\n    barePoolNames: true\n"
    message = refused(helm, tmp_path, both)
    assert "kafka.cluster.legacyPoolNames and kafka.cluster.barePoolNames are both true" in message


@pytest.mark.parametrize(
    ("release", "profile", "pod"),
    [
        ("casetrail-production", "large", "casetrail-production-kafka-controllers-5"),
        ("westside-dss-casetrail", "small", "westside-dss-casetrail-kafka-nodes-2"),
    ],
)
def test_a_release_name_too_long_for_its_kafka_pods_is_refused(
    helm: Tools, release: str, profile: str, pod: str
) -> None:
    """Under the old pool names a release name of 19 characters (dedicated controllers) or 22
    made pod names past 63 characters, which the API server refuses: `helm template` names the
    release, the pod and the limit instead of a Kafka that never starts."""
    result = helm_template(
        helm, PROFILES[profile], "--set", "kafka.cluster.legacyPoolNames=true", release=release
    )
    assert result.returncode != 0
    assert f"release name {release}:" in result.stderr
    assert f"a Kafka pod {release}-kafka-{pod}" in result.stderr
    assert "over the 63" in result.stderr
    shorter = release.removeprefix("casetrail-").removeprefix("westside-")
    legacy = ("--set", "kafka.cluster.legacyPoolNames=true")
    assert _pools(helm_template(helm, PROFILES[profile], *legacy, release=shorter))


def test_a_subscriber_may_take_no_consumer_group_of_casetrails(helm: Tools, tmp_path: Path) -> None:
    """A subscriber's groups are those under `<name>.`: `casetrail` took in every service's
    (casetrail.<service>.<projection>), so a read-only subscriber could join one and commit its
    offsets, and the service's projection skip the events passed over."""
    values = "kafka:\n  subscribers:\n    - name: reporting\n    - name: casetrail\n"
    message = refused(helm, tmp_path, values)
    assert "kafka.subscribers[1].name (casetrail)" in message
    assert "would take in casetrail.intake.intake.case-closures" in message


def test_a_subscriber_named_after_casetrails_parts_keeps_to_its_own_groups(
    helm: Tools, tmp_path: Path
) -> None:
    """A name is refused only for the groups its prefix covers: `casetrail-caseload-v2.` is not
    the caseload processor's group (casetrail-caseload-v2), nor `casetrail-intake.` intake's."""
    custom = tmp_path / "values.yaml"
    names = ["casetrail-caseload-v2", "casetrail-intake", "reporting"]
    custom.write_text(yaml.safe_dump({"kafka": {"subscribers": [{"name": n} for n in names]}}))
    result = helm_template(helm, ("values-small.yaml", custom))
    assert result.returncode == 0, result.stderr
    prefixes = [
        acl["resource"]["name"]
        for document in yaml.safe_load_all(result.stdout)
        if document and document["kind"] == "KafkaUser"
        for acl in document["spec"]["authorization"]["acls"]
        if acl["resource"]["type"] == "group" and acl["resource"]["patternType"] == "prefix"
    ]
    assert prefixes == [f"{name}." for name in names]


# 39 characters: <release>-subscriber- leaves 12 of a KafkaUser's 63 to the subscriber's name.
LONG_RELEASE = "casetrail-production-eu-west-agency-one"


def _subscribers(*names: str) -> str:
    return yaml.safe_dump({"kafka": {"subscribers": [{"name": name} for name in names]}})


def test_two_subscribers_sharing_a_kafka_user_once_cut_are_refused(
    helm: Tools, tmp_path: Path
) -> None:
    """A KafkaUser is <release>-subscriber-<name> cut to 63 characters: from a 39-character
    release, reporting-warehouse-a and -b were one user, the install failing half done, or an
    upgrade leaving the user with b's ACL only (a's groups unauthorised, one credential for
    both)."""
    names = _subscribers("reporting", "reporting-warehouse-a", "reporting-warehouse-b")
    message = refused(helm, tmp_path, names, release=LONG_RELEASE)
    assert (
        "kafka.subscribers[1].name (reporting-warehouse-a) and kafka.subscribers[2].name "
        "(reporting-warehouse-b) would share the KafkaUser "
        f"{LONG_RELEASE}-subscriber-reporting-wa"
    ) in message
    assert "differs within the first 12 characters" in message


def test_a_subscriber_named_twice_is_refused(helm: Tools, tmp_path: Path) -> None:
    message = refused(helm, tmp_path, _subscribers("reporting", "warehouse", "reporting"))
    assert "kafka.subscribers[2].name (reporting) is kafka.subscribers[0].name too" in message


def test_subscribers_whose_kafka_users_differ_keep_their_names(helm: Tools, tmp_path: Path) -> None:
    """Only a clash is refused: a name cut, unshared, keeps its KafkaUser (a renamed user is a
    new credential, the subscriber's old one refused)."""
    custom = tmp_path / "values.yaml"
    custom.write_text(_subscribers("reporting-warehouse-a", "reporting-wb"))
    result = helm_template(helm, ("values-small.yaml", custom), release=LONG_RELEASE)
    assert result.returncode == 0, result.stderr
    users = [
        document["metadata"]["name"]
        for document in yaml.safe_load_all(result.stdout)
        if document
        and document["metadata"]["labels"].get("app.kubernetes.io/component") == "subscriber"
    ]
    assert users == [
        f"{LONG_RELEASE}-subscriber-reporting-wa",
        f"{LONG_RELEASE}-subscriber-reporting-wb",
    ]


def _longest_release_with_subscribers() -> int:
    """<release>-subscriber-<name> within 63 characters, the name at its schema's shortest."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    subscriber = schema["properties"]["kafka"]["properties"]["subscribers"]["items"]
    return 63 - len("-subscriber-") - int(subscriber["properties"]["name"]["minLength"])


@pytest.mark.parametrize("extra", [1, 2, 3])
def test_a_release_name_leaving_a_subscriber_user_no_room_is_refused(
    helm: Tools, tmp_path: Path, extra: int
) -> None:
    """From a 51-character release, <release>-subscriber- fills the 63 characters of a
    KafkaUser: every subscriber's was one user, and the clash message asked for a name that
    "differs within the first -1 characters". Refused with two subscribers or more, giving
    the longest release name that leaves room; one subscriber alone keeps its user (named
    <release>-subscriber), as installs made before have it."""
    longest = _longest_release_with_subscribers()
    release = "r" * (longest + extra)
    message = refused(helm, tmp_path, _subscribers("reporting", "billing"), release=release)
    assert (
        f"release name {release} ({len(release)} characters) is too long for kafka.subscribers"
    ) in message
    assert f"a release name of at most {longest} characters" in message


def test_the_longest_release_name_given_keeps_its_subscribers(helm: Tools, tmp_path: Path) -> None:
    custom = tmp_path / "values.yaml"
    custom.write_text(_subscribers("a", "b"))
    release = "r" * _longest_release_with_subscribers()
    result = helm_template(helm, ("values-small.yaml", custom), release=release)
    assert result.returncode == 0, result.stderr
    assert f"name: {release}-subscriber-a\n" in result.stdout
    without = helm_template(helm, ("values-small.yaml",), release=f"{release}rrr")
    assert without.returncode == 0, without.stderr
    alone = tmp_path / "alone.yaml"
    alone.write_text(_subscribers("reporting"))
    one = helm_template(helm, ("values-small.yaml", alone), release=f"{release}rrr")
    assert one.returncode == 0, one.stderr
    user = f"{release}rrr-subscriber-reporting"[:63].rstrip("-")
    assert f"name: {user}\n" in one.stdout


def test_the_case_events_are_no_topic_of_the_caseload_processors(
    helm: Tools, tmp_path: Path
) -> None:
    """The caseload processor may write every topic under `<application id>-` (its changelogs):
    case events there would be its to write."""
    message = refused(helm, tmp_path, "kafka:\n  caseEventsTopic: casetrail-caseload-v2-events\n")
    assert "kafka.caseEventsTopic (casetrail-caseload-v2-events)" in message
    assert "prefix casetrail-caseload-v2-" in message
