"""`casetrail serve`: the same as ``python -m services.runner``, with the runner's options."""

from __future__ import annotations

import argparse


def run(options: argparse.Namespace) -> int:
    from services import runner

    runner.main(options.runner_args)
    return 0
