"""The caseload worker process ends once Faust's Worker has stopped, even when a thread Faust
left behind would keep it: its consumer thread, not a daemon, never ends after a failed last
commit (aiokafka IllegalOperation "Not in the middle of a transaction"), which held the
process until Kubernetes killed it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.k8s.tools import REPO

# Faust's app.main() as it ends after such a stop: the Worker's loop closed, SystemExit raised,
# its consumer thread still running.
_LINGERING = textwrap.dedent(
    """
    import threading, time
    import services.caseload.__main__ as entry

    class App:
        stop_deadline = None
        def main(self):
            threading.Thread(target=lambda: time.sleep(3600), name="consumer").start()
            raise SystemExit(0)

    entry.build_app = lambda settings: App()
    entry.main()
    """
)


def test_the_worker_process_ends_when_faust_leaves_its_consumer_thread_running() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LINGERING],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO}:{REPO / 'protos'}"},
        capture_output=True,
        text=True,
        timeout=30,  # the old entry point: still running an hour later
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_a_bad_setting_ends_the_worker_with_one_line_naming_it() -> None:
    """It ended with a Python traceback (the ValueError from CaseloadSettings.from_env)."""
    for setting, value in (
        ("CASETRAIL_TLS_CA", "/nonexistent/ca.pem"),
        ("CASETRAIL_OIDC_ISSUER", "https://issuer.example"),  # its audience missing
        ("CASETRAIL_CASELOAD_SESSION_TIMEOUT", "3"),  # below the broker's minimum
    ):
        result = subprocess.run(
            [sys.executable, "-m", "services.caseload", "worker"],
            cwd=REPO,
            env={"PYTHONPATH": f"{REPO}:{REPO / 'protos'}", setting: value},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("caseload settings: ")
        assert setting in line
