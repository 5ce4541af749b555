"""What ``casetrail serve`` (services/runner.py) composes, for tests of its later steps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.infrastructure import Infrastructure
from services import runner


async def composed_infrastructure(
    monkeypatch: pytest.MonkeyPatch, options: argparse.Namespace, data_dir: Path
) -> Infrastructure:
    """The infrastructure ``runner.serve`` hands ``_serve`` for ``options`` (the settings of
    the environment, with a stand-in token issuer), nothing started."""
    monkeypatch.setenv("CASETRAIL_OIDC_ISSUER", "https://issuer.example")
    monkeypatch.setenv("CASETRAIL_OIDC_AUDIENCE", "casetrail")
    built: list[Infrastructure] = []

    async def composed(_options: Any, _data_dir: Path, infra: Infrastructure, *_: Any) -> None:
        built.append(infra)

    with monkeypatch.context() as patched:
        patched.setattr(runner, "_serve", composed)
        await runner.serve(options, data_dir)
    (infra,) = built
    return infra
