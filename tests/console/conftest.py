"""A real embedded casetrail (the four services, SQLite, in-process bus, development issuer)
holding Marco's demo case, running on an event loop of its own thread, for the console's tests:
the console's TestClient and the browser tests reach it only over gRPC, as the console does."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from casetrail_platform.identity.development import DevelopmentSigner
from casetrail_platform.identity.verifier import TokenVerifier
from cli.rpc import connect
from services.console.settings import ConsoleSettings
from services.demo import WalkResult, embedded_services, walk_case

T = TypeVar("T")


class BackgroundLoop:
    """An event loop in its own thread; ``run`` waits for a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass(frozen=True)
class DemoCasetrail:
    data_dir: Path
    addresses: dict[str, str]
    case_id: str
    client_id: str
    signer: DevelopmentSigner
    background: BackgroundLoop

    def settings(self, **changes: Any) -> ConsoleSettings:
        values: dict[str, Any] = {
            "audit_address": self.addresses["audit"],
            "verifier": TokenVerifier.for_issuer(self.signer.issuer, self.signer.audience),
            "development_signer": self.signer,
        }
        return ConsoleSettings(**(values | changes))


@pytest.fixture(scope="package")
def demo_casetrail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCasetrail]:
    data_dir = tmp_path_factory.mktemp("console")
    background = BackgroundLoop()
    stack = AsyncExitStack()

    async def start() -> tuple[dict[str, str], WalkResult]:
        local = await stack.enter_async_context(embedded_services(data_dir))
        async with connect(local.addresses, local.tokens) as connection:
            result = await walk_case(connection, say=lambda _: None)
        return local.addresses, result

    try:
        addresses, walked = background.run(start())
        yield DemoCasetrail(
            data_dir,
            addresses,
            walked.case_id,
            walked.client_id,
            DevelopmentSigner.load(data_dir),
            background,
        )
    finally:
        background.run(stack.aclose())
        background.close()
