"""Property: whatever a client sends to any RPC, the answer is a documented status, it comes
before the deadline, it fits gRPC's metadata, and a refusal writes nothing (issue 8).

Runs on the embedded backend (the four services in this process, SQLite, in-process bus) with
``EXAMPLES_PER_RPC`` generated calls per RPC; ``python -m bench.fuzz_bench`` runs the same
generators for ten thousand calls and more and reports the statuses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from cli.rpc import TokenSource
from services.demo import embedded_services
from tests.support.fuzzing import (
    BackgroundLoop,
    Call,
    Known,
    Outcomes,
    Rpc,
    calls,
    close_channels,
    every_rpc,
    last_position,
    learn,
    perform,
)

EXAMPLES_PER_RPC = int(os.environ.get("CASETRAIL_FUZZ_EXAMPLES", "10"))
RPCS = every_rpc()


@dataclass(frozen=True)
class Fuzzed:
    loop: BackgroundLoop
    addresses: dict[str, str]
    tokens: TokenSource
    data_dir: Path
    known: Known


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    loop = BackgroundLoop()
    data_dir = tmp_path_factory.mktemp("fuzz")
    services = embedded_services(data_dir)
    local = loop.run(services.__aenter__())
    try:
        known = Known()
        loop.run(learn(local.addresses, local.tokens, known))
        yield Fuzzed(loop, local.addresses, local.tokens, data_dir, known)
    finally:
        loop.run(close_channels())
        loop.run(services.__aexit__(None, None, None))
        loop.stop()


def test_every_rpc_of_every_service_is_fuzzed(fuzzed: Fuzzed) -> None:
    services = {rpc.service for rpc in RPCS}
    assert services == {"intake", "coordination", "planning", "audit"}
    assert len(RPCS) >= 45
    # The no-write check reads each service's store: it sees the demo walk's events.
    assert all(last_position(fuzzed.data_dir, service) > 0 for service in services)
    assert len(fuzzed.known.seeds) >= 20


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.path.rsplit("/", 2)[-1])
def test_any_request_gets_a_documented_answer_and_a_refusal_writes_nothing(
    fuzzed: Fuzzed, rpc: Rpc
) -> None:
    out = Outcomes()

    @settings(
        max_examples=EXAMPLES_PER_RPC,
        deadline=None,  # each call has its gRPC deadline; this machine is too noisy for more
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(call=calls(rpc, fuzzed.known))
    def answered_as_documented(call: Call) -> None:
        seen = len(out.failures)
        fuzzed.loop.run(perform(call, fuzzed.addresses, fuzzed.tokens, fuzzed.data_dir, out))
        assert len(out.failures) == seen, out.failures[seen:]

    answered_as_documented()
    assert out.failures == []
