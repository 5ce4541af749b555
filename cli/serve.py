"""`casetrail serve`: the same as ``python -m services.runner``."""

from __future__ import annotations

import argparse


def run(options: argparse.Namespace) -> int:
    from services import runner

    runner.main(_runner_argv(options))
    return 0


def _runner_argv(options: argparse.Namespace) -> list[str]:
    argv = ["--backend", options.backend, "--data-dir", options.data_dir, "--host", options.host]
    for name in options.service or []:
        argv += ["--service", name]
    if options.any_port:
        argv.append("--any-port")
    if options.topic is not None:
        argv += ["--topic", options.topic]
    for flag in ("tls_cert", "tls_key", "tls_client_ca"):
        if getattr(options, flag):
            argv += [f"--{flag.replace('_', '-')}", getattr(options, flag)]
    return argv
