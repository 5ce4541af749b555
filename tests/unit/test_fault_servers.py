"""The fault suite freezes the servers the tests use, found wherever they keep their files."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.servers import _pids

_LISTEN = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
time.sleep(60)
"""


def test_kafka_is_the_process_listening_on_the_tests_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Whatever its data directory: the old code read the repo's var/kafka/kafka.pid, which
    is not there when the scripts were given CASETRAIL_KAFKA_DIR (FileNotFoundError)."""
    broker = subprocess.Popen([sys.executable, "-c", _LISTEN], stdout=subprocess.PIPE, text=True)
    try:
        assert broker.stdout is not None
        port = int(broker.stdout.readline())
        monkeypatch.setenv("CASETRAIL_KAFKA_DIR", str(tmp_path))
        monkeypatch.setenv("CASETRAIL_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
        assert _pids("kafka") == [broker.pid]
    finally:
        broker.kill()
        broker.wait()


def test_no_listener_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening
        monkeypatch.setenv("CASETRAIL_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
        with pytest.raises(LookupError, match=f"port {port}"):
            _pids("kafka")
