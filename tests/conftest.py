"""Fixtures of the whole suite: a real token issuer over HTTP on 127.0.0.1 (every gRPC call of
every test carries one of its tokens), certificates for the TLS tests. Ordering: the fault
suite (marker ``faults``) restarts the shared servers, so it runs after every other test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from infra.servers import use_recorded_servers
from tests.support.certificates import Certificates, made_certificates
from tests.support.identity import TestIssuer, forget_callers


@pytest.fixture(scope="session")
def issuer() -> Iterator[TestIssuer]:
    started = TestIssuer()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def certificates() -> Certificates:
    """A test CA, a server certificate for localhost and a client certificate, all made here."""
    return made_certificates()


@pytest.fixture(autouse=True)
def _fresh_callers() -> Iterator[None]:
    yield
    forget_callers()


def pytest_configure(config: pytest.Config) -> None:
    # The servers `make servers-start` recorded for this checkout, for whatever reads the
    # environment (service processes, KafkaSettings.from_env) as well as tests.support.servers.
    use_recorded_servers(os.environ)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("faults") is not None)
