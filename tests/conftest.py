"""Fixtures of the whole suite: a real token issuer over HTTP on 127.0.0.1 (every gRPC call of
every test carries one of its tokens)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.identity import TestIssuer, forget_callers


@pytest.fixture(scope="session")
def issuer() -> Iterator[TestIssuer]:
    started = TestIssuer()
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def _fresh_callers() -> Iterator[None]:
    yield
    forget_callers()
