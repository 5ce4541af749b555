"""The fault suite restarts the real servers `make test` started; it runs last (see
``tests/conftest.py``), and leaves both servers running and ready whatever happens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.faults.servers import ensure_servers_running


@pytest.fixture(autouse=True)
async def servers_running_afterwards() -> AsyncIterator[None]:
    yield
    await ensure_servers_running()
