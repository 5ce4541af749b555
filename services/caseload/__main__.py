"""``python -m services.caseload worker [-l info] [--web-port N]``: the Faust worker CLI."""

from __future__ import annotations

import sys

from casetrail_platform.shutdown import exit_now
from services.caseload.processor import build_app
from services.caseload.settings import CaseloadSettings

STOP_DEADLINE_SECONDS = 45.0
"""From SIGTERM to the end of the process, whatever hangs: inside the chart's
``shutdown.caseloadGracePeriodSeconds`` (60; tests/k8s checks it), with room for a Faust stop
that commits and leaves the group (measured: a few seconds, tests/integration)."""


def main() -> None:
    try:
        settings = CaseloadSettings.from_env()
    except ValueError as error:
        # One line naming the setting, as casetrail serve says its own; never a traceback.
        raise SystemExit(f"caseload settings: {error}") from None
    app = build_app(settings)
    app.stop_deadline = STOP_DEADLINE_SECONDS
    code: int = 0
    try:
        app.main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):  # a refusal before anything started (CaseloadWorker)
            print(done.code, file=sys.stderr)
    # Faust's Worker has stopped and closed its event loop, but when its last commit failed
    # (aiokafka IllegalOperation "Not in the middle of a transaction") its consumer thread, not
    # a daemon, never ends and holds the interpreter open until SIGKILL. Ending here loses
    # nothing acknowledged: the views answer reads only, and the tables are rebuilt from Kafka,
    # whose transactions commit the table changes, the worker facts and the consumed offsets
    # together; a transaction left open is aborted by the broker (or fenced by the next
    # producer with its transactional id), and its events are consumed again from the last
    # committed offsets.
    exit_now(code)


if __name__ == "__main__":
    main()
