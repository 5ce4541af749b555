"""The chart's topology.yaml (consumer groups, ports) says what the code actually does: every
service is composed by its own bootstrap and the groups it subscribes are recorded."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from casetrail_platform.health import LIVENESS_SERVICE
from casetrail_platform.hosting import ServiceHost
from casetrail_platform.infrastructure import Infrastructure
from events.topics import LEDGER_CHECKPOINTS_TOPIC
from services.caseload.settings import DEFAULT_APP_ID, DEFAULT_WEB_PORT
from services.runner import DEFAULT_PORTS, SERVICES
from tests.k8s.tools import CHART

TOPOLOGY = yaml.safe_load((CHART / "topology.yaml").read_text())


class Composed(Exception):
    """Raised instead of serving once a bootstrap has composed its host."""

    def __init__(self, groups: list[str]) -> None:
        super().__init__()
        self.groups = groups


async def subscribed_groups(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    async def record(
        host: ServiceHost, address: str, registrations: Iterable[Any], names: Iterable[str]
    ) -> Any:
        groups = [group for group, *_ in host._subscriptions]
        await host._close_all()
        raise Composed(groups)

    monkeypatch.setattr(ServiceHost, "start", record)
    bootstrap = importlib.import_module(f"services.{service}.bootstrap")
    with pytest.raises(Composed) as composed:
        await bootstrap.start(Infrastructure.embedded(tmp_path), "127.0.0.1:0")
    return composed.value.groups


@pytest.mark.parametrize("service", SERVICES)
async def test_consumer_groups_match_the_code(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = await subscribed_groups(service, tmp_path, monkeypatch)
    assert sorted(TOPOLOGY["services"][service]["groups"]) == sorted(groups)


def test_ports_and_the_caseload_processor_match_the_code() -> None:
    assert set(TOPOLOGY["services"]) == set(SERVICES)
    for service in SERVICES:
        assert TOPOLOGY["services"][service]["grpcPort"] == DEFAULT_PORTS[service]
    assert TOPOLOGY["ledgerCheckpointsTopic"] == LEDGER_CHECKPOINTS_TOPIC
    assert TOPOLOGY["livenessService"] == LIVENESS_SERVICE
    assert TOPOLOGY["caseload"]["appId"] == DEFAULT_APP_ID
    assert TOPOLOGY["caseload"]["webPort"] == DEFAULT_WEB_PORT
