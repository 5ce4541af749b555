"""The chart's alert rules (metrics.prometheusRule): rendered only when asked, each metric they
name exported by the services with the labels they use (so a rule cannot drift from
casetrail_platform/telemetry/metrics.py), no label that could carry a case or a client,
thresholds from the values, and valid for Prometheus itself (promtool)."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from casetrail_platform.telemetry.metrics import Metrics
from services.audit.adapters.timeline import TimelineProjection
from tests.k8s.render import NAMESPACE, PROFILES, RELEASE, Rendered, helm_template, render_profile
from tests.k8s.tools import Tools, missing

MONITORED = "large-production-monitored"
TARGET_LABELS = {"namespace"}
"""Labels Prometheus gives every series of a PodMonitor's targets; the rules select by it."""
RESULT_LABELS = {"service", "projection", "relay", "group", "reason", "operation"}
"""The only labels an alert may carry from its series: names of casetrail's own parts (and of
the key port's operations)."""


@cache
def exported() -> dict[str, set[str]]:
    """Every series name the services export, with its labels."""
    names: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if isinstance(metric, Counter):
            names[metric._name + "_total"] = set(metric._labelnames)
        elif isinstance(metric, Histogram):
            names[metric._name + "_bucket"] = {*metric._labelnames, "le"}
            names[metric._name + "_count"] = set(metric._labelnames)
            names[metric._name + "_sum"] = set(metric._labelnames)
        elif isinstance(metric, Gauge):
            names[metric._name] = set(metric._labelnames)
    return names


def rules(rendered: Rendered) -> list[dict[str, Any]]:
    (rule,) = rendered.of_kind("PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """Each series selector: its metric name and its label matchers (name: value)."""
    found = []
    for name, matchers in re.findall(r"\b(casetrail_[a-z_]+)(\{[^}]*\})?", expr):
        pairs = re.findall(r'([a-z_]+)\s*=~?\s*"([^"]*)"', matchers)
        found.append((name, dict(pairs)))
    return found


def grouped_by(expr: str) -> set[str]:
    """Every label some aggregation of ``expr`` keeps."""
    return {label for labels in _groupings(expr) for label in labels}


def kept(expr: str) -> set[str]:
    """The labels of ``expr``'s result: its first (outermost) aggregation's, less the buckets'
    ``le`` that histogram_quantile consumes; none for an aggregation without ``by``."""
    groupings = _groupings(expr)
    return set(groupings[0]) - {"le"} if groupings else set()


def _groupings(expr: str) -> list[list[str]]:
    return [
        [label.strip() for label in labels.split(",")]
        for labels in re.findall(r"\bby \(([^)]*)\)", expr)
    ]


@pytest.fixture(scope="module")
def monitored(helm: Tools) -> Rendered:
    return render_profile(helm, MONITORED)


def test_alert_rules_are_rendered_only_when_asked(rendered: Rendered) -> None:
    found = rendered.of_kind("PrometheusRule")
    if rendered.profile != MONITORED:
        assert found == []
        return
    (rule,) = found
    assert rule["metadata"]["name"] == f"{RELEASE}-alerts"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"


def test_every_metric_a_rule_names_is_exported_with_the_labels_it_uses(
    monitored: Rendered,
) -> None:
    names = exported()
    for rule in rules(monitored):
        expr = rule["expr"]
        found = selectors(expr)
        assert found, rule["alert"]
        available = set(TARGET_LABELS)
        for name, matchers in found:
            assert name in names, f"{rule['alert']}: {name} is not exported"
            assert set(matchers) <= names[name] | TARGET_LABELS, (rule["alert"], name)
            assert matchers["namespace"] == NAMESPACE, rule["alert"]
            available |= names[name]
        assert grouped_by(expr) <= available, rule["alert"]
        # The labels its text names are those the expression keeps.
        for text in rule["annotations"].values():
            named = set(re.findall(r"\$labels\.([a-z_]+)", text))
            assert named <= kept(expr), rule["alert"]


def test_the_label_values_rules_select_by_are_real(monitored: Rendered) -> None:
    """The access log's projection and the status codes counted as server faults."""
    exprs = [rule["expr"] for rule in rules(monitored)]
    assert any(f'projection="{TimelineProjection.name}"' in expr for expr in exprs)
    (codes,) = {code for expr in exprs for code in re.findall(r'code=~"([A-Z_|]+)"', expr)}
    assert set(codes.split("|")) <= {code.name for code in grpc.StatusCode}


def test_no_alert_carries_a_label_that_could_hold_case_or_client_data(
    monitored: Rendered,
) -> None:
    alerts = rules(monitored)
    assert {rule["alert"] for rule in alerts} == {
        "CasetrailProjectionStuck",
        "CasetrailAccessLogBehind",
        "CasetrailBusProjectionSlow",
        "CasetrailOutboxStuck",
        "CasetrailOutboxParked",
        "CasetrailConsumerLag",
        "CasetrailConsumerStalled",
        "CasetrailDeadLetters",
        "CasetrailRpcErrors",
        "CasetrailKeyPortFailures",
        "CasetrailLedgerWitness",
    }
    for rule in alerts:
        assert set(rule["labels"]) == {"severity"}, rule["alert"]
        assert kept(rule["expr"]) <= RESULT_LABELS, rule["alert"]
        # Every rule aggregates: a series' own labels (pod, partition...) never reach the alert.
        assert re.match(r"^\(?(sum|max|min|histogram_quantile)\b", rule["expr"]), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert "README" in rule["annotations"]["description"], rule["alert"]


def test_thresholds_and_durations_come_from_the_values(helm: Tools) -> None:
    result = helm_template(
        helm,
        PROFILES[MONITORED],
        "--set",
        "metrics.prometheusRule.alerts.outboxStuck.threshold=600",
        "--set",
        "metrics.prometheusRule.alerts.outboxStuck.for=30m",
        "--set",
        "metrics.prometheusRule.alerts.consumerLag.enabled=false",
    )
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    by_name = {r["alert"]: r for r in rules(Rendered(MONITORED, result.stdout, documents))}
    assert by_name["CasetrailOutboxStuck"]["expr"].endswith("> 600")
    assert by_name["CasetrailOutboxStuck"]["for"] == "30m"
    assert "CasetrailConsumerLag" not in by_name
    # values-monitoring.yaml's own, over the defaults.
    assert by_name["CasetrailProjectionStuck"]["expr"].endswith("> 300")
    assert by_name["CasetrailProjectionStuck"]["labels"]["severity"] == "warning"


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("alerts.busProjectionSlow.threshold=60", "/busProjectionSlow/threshold"),
        ("alerts.accessLogBehind.threshold=20001", "/accessLogBehind/threshold"),
        ("alerts.rpcErrors.threshold=2", "/rpcErrors/threshold"),
        ("alerts.outboxStuck.for=soon", "/outboxStuck/for"),
        # The PrometheusRule CRD takes units from the largest down only.
        ("alerts.outboxStuck.for=30s1h", "/outboxStuck/for"),
        ("alerts.deadLetters.severity=page", "/deadLetters/severity"),
        ("alerts.ledgerWitness.threshold=1", "ledgerWitness"),
        ("alerts.diskFull.enabled=true", "diskFull"),
        ("labels.release=a b", "/prometheusRule/labels"),
    ],
)
def test_alert_settings_out_of_bounds_are_refused(helm: Tools, setting: str, where: str) -> None:
    result = helm_template(helm, PROFILES[MONITORED], "--set", f"metrics.prometheusRule.{setting}")
    assert result.returncode != 0, setting
    assert where in result.stderr


def test_the_rules_pass_promtool(monitored: Rendered, tools: Tools, tmp_path: Path) -> None:
    missing(tools.promtool)
    (rule,) = monitored.of_kind("PrometheusRule")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [str(tools.promtool), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    """An input series as the PodMonitor's targets give it: in the release's namespace, of a pod."""
    matchers = ",".join(f'{k}="{v}"' for k, v in {"namespace": NAMESPACE, **labels}.items())
    return {"series": f"{name}{{{matchers}}}", "values": values}


def test_the_alerts_fire_on_the_series_the_services_export(
    monitored: Rendered, tools: Tools, tmp_path: Path
) -> None:
    """promtool's rule unit tests (annotations left out: their text is not what is tested), on
    series labelled as Metrics() labels them, from several pods."""
    missing(tools.promtool)
    (rule,) = monitored.of_kind("PrometheusRule")
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            alert.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    dlq_group = "casetrail.planning.case-view"
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # A group's first dead letter: a series that did not exist before.
                    _series(
                        "casetrail_dead_letters_total",
                        "_ _ 1x30",
                        pod="planning-a",
                        group=dlq_group,
                        reason="handler-failed",
                    ),
                    # Counted since the start, once more at 21m.
                    _series(
                        "casetrail_dead_letters_total",
                        "1x20 2x20",
                        pod="planning-a",
                        group=dlq_group,
                        reason="undecodable",
                    ),
                    # Two replicas, a partition each; a third pod's stale copy of partition 0.
                    _series(
                        "casetrail_consumer_lag_messages",
                        "6000x30",
                        pod="audit-a",
                        group="casetrail.audit.timeline",
                        partition="0",
                    ),
                    _series(
                        "casetrail_consumer_lag_messages",
                        "6000x30",
                        pod="audit-b",
                        group="casetrail.audit.timeline",
                        partition="1",
                    ),
                    _series(
                        "casetrail_consumer_lag_messages",
                        "10x30",
                        pod="audit-c",
                        group="casetrail.audit.timeline",
                        partition="0",
                    ),
                    # Planning's case view failing from 2m on (seconds since), and, on another
                    # pod, a group failing for a minute only.
                    _series(
                        "casetrail_consumer_stalled_seconds",
                        "0 0 0+60x28",
                        pod="planning-a",
                        group="casetrail.planning.case-view",
                    ),
                    _series(
                        "casetrail_consumer_stalled_seconds",
                        "0 60 0x28",
                        pod="intake-a",
                        group="casetrail.intake.case-facts",
                    ),
                    # The KMS refusing audit's unwraps, 3 a minute, from 1m; one wrap once.
                    _series(
                        "casetrail_key_port_failures_total",
                        "_ 0+3x29",
                        pod="audit-a",
                        operation="unwrap",
                    ),
                    _series(
                        "casetrail_key_port_failures_total",
                        "0 1x29",
                        pod="intake-a",
                        operation="wrap",
                    ),
                    _series("casetrail_ledger_witness_consistent", "1 1 0x30", pod="audit-a"),
                    _series(
                        "casetrail_projection_position_age_seconds",
                        "0+60x30",
                        pod="coordination-a",
                        service="coordination",
                        projection="assignments",
                    ),
                    # Another namespace's casetrail is not this release's business.
                    {
                        "series": 'casetrail_outbox_parked_events{namespace="other",relay="x"}',
                        "values": "5x30",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "3m",
                        "alertname": "CasetrailDeadLetters",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "group": dlq_group,
                                    "reason": reason,
                                }
                            }
                            for reason in ("handler-failed", "undecodable")
                        ],
                    },
                    # Nothing counted in the last 15 minutes: resolved.
                    {"eval_time": "18m", "alertname": "CasetrailDeadLetters", "exp_alerts": []},
                    {
                        "eval_time": "22m",
                        "alertname": "CasetrailDeadLetters",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "group": dlq_group,
                                    "reason": "undecodable",
                                }
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "CasetrailConsumerLag",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "group": "casetrail.audit.timeline",
                                }
                            }
                        ],
                    },
                    {
                        "eval_time": "3m",
                        "alertname": "CasetrailLedgerWitness",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    },
                    # values-monitoring.yaml: over 300 s for 10 minutes.
                    {"eval_time": "10m", "alertname": "CasetrailProjectionStuck", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "CasetrailProjectionStuck",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "service": "coordination",
                                    "projection": "assignments",
                                }
                            }
                        ],
                    },
                    {"eval_time": "20m", "alertname": "CasetrailOutboxParked", "exp_alerts": []},
                    # Over 120 s from 5m (seconds since 2m), for 5 minutes from then.
                    {"eval_time": "9m", "alertname": "CasetrailConsumerStalled", "exp_alerts": []},
                    {
                        "eval_time": "11m",
                        "alertname": "CasetrailConsumerStalled",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "group": "casetrail.planning.case-view",
                                }
                            }
                        ],
                    },
                    # Failing for 5 minutes: the unwraps only; the one failed wrap is not.
                    {"eval_time": "4m", "alertname": "CasetrailKeyPortFailures", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "CasetrailKeyPortFailures",
                        "exp_alerts": [
                            {"exp_labels": {"severity": "critical", "operation": "unwrap"}}
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [str(tools.promtool), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
