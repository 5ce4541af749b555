"""`casetrail`: run the services, rebuild projections, follow stores, read the audit trail.

Each subcommand's work lives in its own module, imported only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

SERVICES = ("intake", "coordination", "planning", "audit")
COMMANDS = {
    "serve": "cli.serve",
    "rebuild": "cli.rebuild",
    "tail": "cli.tail",
    "timeline": "cli.audit",
    "state": "cli.audit",
    "export": "cli.audit",
    "parked": "cli.parked",
}


def main(argv: Sequence[str] | None = None) -> None:
    options = parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[options.command])
    try:
        status: int = module.run(options)
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="casetrail", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="start services (see services/runner.py)")
    serve.add_argument("--backend", choices=["embedded", "distributed"], default="embedded")
    serve.add_argument("--service", action="append", choices=SERVICES, help="repeatable")
    serve.add_argument("--data-dir", default=_data_dir())
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--any-port", action="store_true", help="let the OS pick free ports")
    serve.add_argument(
        "--topic", help="case-event topic (distributed; default casetrail.case-events)"
    )

    rebuild = commands.add_parser(
        "rebuild",
        help="rebuild a projection of a service's own store from zero",
        description="Throw a projection's documents away and replay the service's own store "
        "into it. Best done with the service stopped. Without PROJECTION, list them.",
    )
    rebuild.add_argument("service", choices=SERVICES)
    rebuild.add_argument("projection", nargs="?")
    _storage(rebuild)

    tail = commands.add_parser(
        "tail", help="print events as they are appended, as CloudEvents JSON lines"
    )
    tail.add_argument("--service", action="append", choices=SERVICES, help="repeatable; all")
    tail.add_argument("--from-start", action="store_true", help="print the stored events first")
    _storage(tail)

    parked = commands.add_parser(
        "parked",
        help="records a service's relay parked because the bus refused them",
        description="list: the records parked, with the reason. retry: ask the running relay "
        "to publish a case's parked records again, in order (after fixing the cause, e.g. "
        "raising the topic's max.message.bytes); it acts within seconds.",
    )
    parked.add_argument("action", choices=["list", "retry"])
    parked.add_argument("service", choices=SERVICES)
    parked.add_argument("--case", help="retry only this case (bus key); default: every case")
    _storage(parked)

    timeline = commands.add_parser("timeline", help="a case's timeline, from audit")
    timeline.add_argument("case_id")
    timeline.add_argument("--basis", choices=["occurred", "recorded"], default="occurred")
    timeline.add_argument("--as-of", help="ISO 8601 moment (UTC when no offset is given)")
    timeline.add_argument("--json", action="store_true", help="one CloudEvents JSON per line")
    _audit(timeline)

    state = commands.add_parser("state", help="a case as it was (or was known) at a moment")
    state.add_argument("case_id")
    state.add_argument("--as-of", required=True, help="ISO 8601 moment (UTC when no offset)")
    state.add_argument("--basis", choices=["occurred", "recorded"], default="occurred")
    state.add_argument("--json", action="store_true", help="the CaseState as JSON")
    _audit(state)

    export = commands.add_parser("export", help="a case's history as CloudEvents JSON Lines")
    export.add_argument("case_id")
    export.add_argument("--basis", choices=["occurred", "recorded"], default="occurred")
    export.add_argument("-o", "--output", help="file to write (standard output by default)")
    _audit(export)
    return root


def _data_dir() -> str:
    return os.environ.get("CASETRAIL_DATA_DIR", "var/data")


def _storage(command: argparse.ArgumentParser) -> None:
    command.add_argument("--data-dir", default=_data_dir())
    command.add_argument("--backend", choices=["embedded", "distributed"], default="embedded")
    command.add_argument("--pg-dsn", help="PostgreSQL (distributed; default $CASETRAIL_PG_DSN)")


def _audit(command: argparse.ArgumentParser) -> None:
    command.add_argument("--audit", metavar="HOST:PORT", help="default: from addresses.json")
    command.add_argument("--data-dir", default=_data_dir(), help="where addresses.json is")
    command.add_argument("--user", default=os.environ.get("USER", "operator"))
    command.add_argument("--role", default="auditor", choices=["auditor", "supervisor"])
    command.add_argument("--purpose", default="confidentiality_review")


if __name__ == "__main__":
    main()
