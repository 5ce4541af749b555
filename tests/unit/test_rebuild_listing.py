"""`casetrail rebuild SERVICE` names every bus-fed projection of the service: the consumer
groups the chart's topology lists (which tests/k8s/test_chart_topology.py holds to the code)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from casetrail_platform.hosting import ServiceHost
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.projections.port import Projection
from cli.rebuild import FROM_BUS, OWN_STORE, _canonical, _own_name, _projection
from services.audit import bootstrap as audit
from services.coordination import bootstrap as coordination
from services.intake import bootstrap as intake
from services.planning import bootstrap as planning
from tests.support.identity import TestIssuer

BOOTSTRAPS = {
    "intake": intake,
    "coordination": coordination,
    "planning": planning,
    "audit": audit,
}

TOPOLOGY = Path(__file__).resolve().parents[2] / "infra" / "helm" / "casetrail" / "topology.yaml"


def test_every_consumer_group_of_a_service_is_listed_as_fed_from_the_bus() -> None:
    services = yaml.safe_load(TOPOLOGY.read_text())["services"]
    for service, spec in services.items():
        prefix = f"casetrail.{service}."
        groups = {_canonical(group.removeprefix(prefix)) for group in spec["groups"]}
        assert groups == set(FROM_BUS[service]), service


async def test_every_projection_of_a_service_s_own_store_is_rebuilt_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each bootstrap feeds from its own store alone, the command rebuilds, named as the
    projection names itself (a renamed one too: ``intake.client-directory-v6``) or as listed.
    (Audit's timeline and disclosure index also take the bus: replaying the store into them
    would lose the other services' events.)"""
    own: dict[str, list[Projection]] = {}
    from_bus: set[str] = set()

    def project_own_events(host: ServiceHost, projection: Projection) -> None:
        own.setdefault(host.service, []).append(projection)

    subscribe = ServiceHost.subscribe

    def subscribing(host: ServiceHost, projection: Projection) -> None:
        from_bus.add(projection.name)
        subscribe(host, projection)

    monkeypatch.setattr(ServiceHost, "project_own_events", project_own_events)
    monkeypatch.setattr(ServiceHost, "subscribe", subscribing)
    for service, bootstrap in BOOTSTRAPS.items():
        infra = Infrastructure.embedded(tmp_path / service, verifier=TestIssuer().verifier())
        running = await bootstrap.start(infra)
        await running.stop()
    rebuildable = {
        service: [p for p in projections if p.name not in from_bus]
        for service, projections in own.items()
    }
    assert {service for service, found in rebuildable.items() if found} == OWN_STORE.keys()
    for service, projections in rebuildable.items():
        assert len(projections) == len(OWN_STORE.get(service, {})), service
        for projection in projections:
            for name in (projection.name, _canonical(projection.name)):
                listed = _own_name(OWN_STORE[service], name)
                assert listed is not None, name
                assert type(_projection(OWN_STORE[service][listed])) is type(projection)
