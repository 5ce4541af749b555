"""Rendering the chart with Helm, as `helm template` would for an install."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.tools import CHART, Tools

RELEASE = "casetrail"
NAMESPACE = "casetrail-check"

# Each profile: the values files given to helm, in order (later ones override).
# Production needs the agency's own token issuer (values-production.yaml refuses the placeholder).
ISSUER = Path(__file__).with_name("values-issuer.yaml")
PROFILES: dict[str, tuple[str | Path, ...]] = {
    "small": ("values-small.yaml",),
    "large": ("values-large.yaml",),
    "small-production": ("values-small.yaml", "values-production.yaml", ISSUER),
    "large-production": ("values-large.yaml", "values-production.yaml", ISSUER),
    "large-production-monitored": (
        "values-large.yaml",
        "values-production.yaml",
        ISSUER,
        Path(__file__).with_name("values-monitoring.yaml"),
    ),
}


@dataclass(frozen=True)
class Rendered:
    profile: str
    text: str
    documents: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [document for document in self.documents if document["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        for document in self.of_kind(kind):
            if document["metadata"]["name"] == name:
                return document
        raise KeyError(f"{kind} {name} is not rendered ({self.profile})")


def helm_template(
    tools: Tools, values_files: tuple[str | Path, ...], *extra: str, release: str = RELEASE
) -> subprocess.CompletedProcess[str]:
    command = [
        str(tools.helm),
        "template",
        release,
        str(CHART),
        "--namespace",
        NAMESPACE,
        # Without it helm assumes Kubernetes 1.20 for .Capabilities and kubeVersion checks.
        "--kube-version",
        tools.kube_version,
    ]
    for values in values_files:
        command += ["--values", str(values if Path(values).is_absolute() else CHART / values)]
    return subprocess.run(
        [*command, *extra], capture_output=True, text=True, check=False, timeout=120
    )


@cache
def _render(tools: Tools, profile: str) -> Rendered:
    result = helm_template(tools, PROFILES[profile])
    if result.returncode != 0:
        raise AssertionError(f"helm template ({profile}) failed:\n{result.stderr}")
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return Rendered(profile, result.stdout, documents)


def render_profile(tools: Tools, profile: str) -> Rendered:
    return _render(tools, profile)


def kafka_pod_names(rendered: Rendered) -> list[str]:
    """The pods Strimzi makes for the rendered KafkaNodePools: <kafka>-<pool>-<node id>, node ids
    counted from 0 over every pool, the name also the pod's hostname and its strimzi.io/pod-name
    label (Strimzi's WorkloadUtils.createStatefulPod)."""
    (kafka,) = rendered.of_kind("Kafka")
    pools = rendered.of_kind("KafkaNodePool")
    node_ids = iter(range(sum(pool["spec"]["replicas"] for pool in pools)))
    return [
        f"{kafka['metadata']['name']}-{pool['metadata']['name']}-{next(node_ids)}"
        for pool in pools
        for _ in range(pool["spec"]["replicas"])
    ]


def release_pool_names(release: str, *pools: str) -> set[str]:
    """The names templates/_helpers.tpl (casetrail.kafkaPool) gives the release's
    KafkaNodePools: <release, cut to 5>-<its SHA-256, 10 hex digits>-<pool's initial>."""
    digest = hashlib.sha256(release.encode()).hexdigest()[:10]
    return {f"{release[:5].strip('-')}-{digest}-{pool[0]}" for pool in pools}


def _at_maximum(node: dict[str, Any], schema: dict[str, Any]) -> Any:
    """``node``'s numbers at their maximum: a number itself, an object of its properties that hold
    any (None where none does). A number is the first branch of an anyOf that is one; lists and
    free-form maps hold none the chart prints."""
    if "$ref" in node:
        return _at_maximum(schema["$defs"][node["$ref"].removeprefix("#/$defs/")], schema)
    for branch in node.get("anyOf", []):
        if branch.get("type") in ("integer", "number"):
            return branch["maximum"]
    if node.get("type") in ("integer", "number"):
        return node["maximum"]
    found = {name: _at_maximum(child, schema) for name, child in node.get("properties", {}).items()}
    held = {name: value for name, value in found.items() if value is not None}
    return held or None


def values_at_their_maxima() -> dict[str, Any]:
    """A values document giving every number values.schema.json bounds its maximum, within the
    combinations templates/validate.yaml takes: the chart's own PostgreSQL listens on 5432 only."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values: dict[str, Any] = _at_maximum(schema, schema)
    values["database"]["port"] = 5432
    return values
