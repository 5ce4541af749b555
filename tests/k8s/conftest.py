"""Fixtures of the Kubernetes checks: the installed tools and the chart rendered per profile."""

from __future__ import annotations

import pytest

from tests.k8s.render import PROFILES, Rendered, render_profile
from tests.k8s.tools import Tools, missing, tool_paths


@pytest.fixture(scope="session")
def tools() -> Tools:
    return tool_paths()


@pytest.fixture(scope="session")
def helm(tools: Tools) -> Tools:
    missing(tools.helm)
    return tools


@pytest.fixture(scope="session", params=sorted(PROFILES))
def rendered(request: pytest.FixtureRequest, helm: Tools) -> Rendered:
    """The chart rendered with one profile's values files."""
    return render_profile(helm, request.param)
