"""`casetrail` commands against a stand-in audit service: what they print for an empty answer
and how they end when the service does not answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from cli.main import main


@dataclass
class _Audit(audit_pb2_grpc.AuditServiceServicer):  # type: ignore[misc]  # generated, untyped
    """Answers GetTimeline with an empty page, or not at all until released."""

    hang: bool = False
    released: threading.Event = field(default_factory=threading.Event)

    def GetTimeline(self, request: Any, context: Any) -> audit_pb2.GetTimelineResponse:  # noqa: N802
        if self.hang:
            self.released.wait(30)
        return audit_pb2.GetTimelineResponse(total_events=0)


@pytest.fixture
def audit() -> Iterator[tuple[_Audit, str]]:
    servicer = _Audit()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        servicer.released.set()
        server.stop(None)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | str | None, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASETRAIL_TOKEN", "header.payload.signature")


def test_an_empty_timeline_says_so_without_a_blank_line(
    audit: tuple[_Audit, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "timeline", "case-1", "--audit", audit[1])
    assert code == 0
    assert out == "0 events\n"
