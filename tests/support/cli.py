"""casetrail's command line run in the test's own process, as a shell would run it."""

from __future__ import annotations

import pytest

from cli.main import main


def casetrail_exit(*arguments: str) -> int:
    """``casetrail ARGUMENTS``' exit status (its output is the test's to capture)."""
    with pytest.raises(SystemExit) as exited:
        main(list(arguments))
    return int(exited.value.code or 0)
