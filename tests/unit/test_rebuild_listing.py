"""`casetrail rebuild SERVICE` names every bus-fed projection of the service: the consumer
groups the chart's topology lists (which tests/k8s/test_chart_topology.py holds to the code)."""

from __future__ import annotations

from pathlib import Path

import yaml

from cli.rebuild import FROM_BUS, _canonical

TOPOLOGY = Path(__file__).resolve().parents[2] / "infra" / "helm" / "casetrail" / "topology.yaml"


def test_every_consumer_group_of_a_service_is_listed_as_fed_from_the_bus() -> None:
    services = yaml.safe_load(TOPOLOGY.read_text())["services"]
    for service, spec in services.items():
        prefix = f"casetrail.{service}."
        groups = {_canonical(group.removeprefix(prefix)) for group in spec["groups"]}
        assert groups == set(FROM_BUS[service]), service
