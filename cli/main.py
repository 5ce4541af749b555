"""`casetrail`: run the services, rebuild projections, follow stores, read the audit trail.

Each subcommand's work lives in its own module, imported only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from casetrail_platform.addresses import unbracketed
from casetrail_platform.typed_numbers import ascii_decimal, ascii_whole_number

SERVICES = ("intake", "coordination", "planning", "audit")
ROLES = (
    "receptionist",
    "intake_worker",
    "coordinator",
    "case_manager",
    "social_worker",
    "supervisor",
    "auditor",
    "client",
    "partner_agency",
    "system",
)
"""events.catalog.base.Role's values (not imported: this module stays light)."""
MAX_LOGIN_HOURS = 24.0
"""The verifier's default maximum token lifetime (identity.verifier, not imported: light)."""
COMMANDS = {
    "serve": "cli.serve",
    "rebuild": "cli.rebuild",
    "tail": "cli.tail",
    "timeline": "cli.audit",
    "state": "cli.audit",
    "export": "cli.audit",
    "disclosures": "cli.reviews",
    "as-seen": "cli.reviews",
    "parked": "cli.parked",
    "login": "cli.login",
    "token": "cli.login",
    "dlq": "cli.dlq",
    "console": "cli.console",
    "verify": "cli.ledger",
    "verify-store": "cli.ledger",
    "ledger": "cli.ledger",
    "break-glass": "cli.break_glass",
    "client": "cli.clients",
    "keys": "cli.keys",
}


EXIT_STATUSES = """exit status, the same for every command:
  0    done (verify: every line verified)
  1    refused by a service (its code, rule and fields on standard error), a database or
       Kafka unreachable, or verification failed (verify, verify-store, a ledger alarm)
  2    usage error: an argument, file, token or setting that cannot be used (named), or a
       database or Kafka login without the rights the command needs
  3    verify: nothing failed, but some events are not yet provable
  130  interrupted
  141  standard output's reader went away (| head)"""


def main(argv: Sequence[str] | None = None) -> None:
    root = parser()
    options, rest = root.parse_known_args(argv)
    if rest and options.command != "serve":
        root.error(f"unrecognized arguments: {' '.join(rest)}")
    options.runner_args = rest
    if getattr(options, "token", None) is not None:
        print(TOKEN_VISIBLE, file=sys.stderr)  # still used: scripts that pass it keep working
    module = importlib.import_module(COMMANDS[options.command])
    try:
        status: int = module.run(options)
        sys.stdout.flush()  # here, where a reader gone is told apart, rather than on exit
    except KeyboardInterrupt:
        status = 130
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        # A command's own "bad input" exits (a moment, a file, a token, a setting named), a
        # usage error like argparse's: exit 2, where a bare SystemExit(text) gives 1 (refused).
        print(stop.code, file=sys.stderr)
        status = USAGE
    except Exception as error:  # tail's task group too: one handler, so each check sees it
        if _reader_gone(error):
            status = _quietly_without_reader()
        elif (refused := _not_authorized(error)) is not None:
            print(f"casetrail {options.command}: {refused}", file=sys.stderr)
            status = USAGE
        else:
            away = _unavailable(error)
            if away is None:
                raise
            print(f"casetrail {options.command}: {away}", file=sys.stderr)
            status = UNAVAILABLE
    sys.exit(status)


UNAVAILABLE = 1
"""The exit status when a database or Kafka the command reads is unreachable, as when a
service's refusal (``UNAVAILABLE`` among them) ends a command."""


def _unavailable(error: BaseException) -> str | None:
    """One line for an operator tool's database or Kafka being unreachable (the operator
    commands open them directly), or ``None`` for any other error (in a task group, e.g.
    ``tail``'s, only when every error of the group is one)."""
    if isinstance(error, BaseExceptionGroup):
        found = [_unavailable(inner) for inner in error.exceptions]
        return found[0] if all(found) else None
    from casetrail_platform.errors import StorageUnavailableError

    if isinstance(error, StorageUnavailableError):
        return str(error)  # names what is away, never the driver's text (nor the DSN)
    kafka = sys.modules.get("aiokafka.errors")  # imported only by the commands that use Kafka
    if kafka is not None and isinstance(error, kafka.KafkaConnectionError):
        return f"Kafka is unreachable ({error})"
    return None


def _not_authorized(error: BaseException) -> str | None:
    """One line for Kafka refusing the command's login a topic, group or the cluster (an ACL
    missing: a setting to fix, exit 2 as a PostgreSQL login without its rights), naming what
    it refused; ``None`` for any other error. Raised through the operator commands' reads
    (``verify-store``'s checkpoints topic, ``dlq``'s group), it ended them in a traceback."""
    kafka = sys.modules.get("aiokafka.errors")  # imported only by the commands that use Kafka
    if kafka is None:
        return None
    refusals = {
        kafka.TopicAuthorizationFailedError: "topic",
        kafka.GroupAuthorizationFailedError: "consumer group",
        kafka.ClusterAuthorizationFailedError: "cluster",
    }
    kind = next((kind for kind in refusals if isinstance(error, kind)), None)
    if kind is None:
        return None
    # aiokafka gives the topic, a set of them (a commit) or the group; nothing of a record.
    named = error.args[0] if error.args else ""
    names = ", ".join(sorted(named)) if isinstance(named, set | frozenset) else str(named)
    refused = f"{refusals[kind]} {names}" if names else refusals[kind]
    return (
        f"Kafka did not authorize this login: {refused} ({kind.message}); grant its user the"
        " ACLs the command needs there"
    )


USAGE = 2
"""Bad input: an argument, file, token or setting (named on standard error); argparse's too."""
READER_GONE = 141
"""The exit status once standard output's reader has gone (``| head``): 128 + SIGPIPE, what a
program the signal ended exits with (Python ignores the signal and raises instead)."""


def _reader_gone(error: BaseException) -> bool:
    """Whether ``error`` is only standard output's reader going away (in a task group, e.g.
    ``tail``'s, every error of the group)."""
    if isinstance(error, BaseExceptionGroup):
        _, rest = error.split(BrokenPipeError)
        return rest is None
    return isinstance(error, BrokenPipeError)


def _quietly_without_reader() -> int:
    """End without a traceback: what is left in standard output's buffer goes nowhere (Python
    would otherwise fail to flush it on exit, and say so)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return READER_GONE


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="casetrail",
        description=__doc__,
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # The runner's own options, parsed by the runner (`casetrail serve --help`): one parser, so
    # the two cannot drift apart (this one once lacked --metrics-address and --health-port).
    commands.add_parser(
        "serve",
        help="start services: python -m services.runner's options (casetrail serve --help)",
        add_help=False,
    )

    rebuild = commands.add_parser(
        "rebuild",
        help="rebuild a projection of a service's own store from zero",
        description="Throw a projection's documents away and replay the service's own store "
        "into it; refused while the service runs. Without PROJECTION, list them.",
    )
    rebuild.add_argument("service", choices=SERVICES)
    rebuild.add_argument("projection", nargs="?")
    _storage(rebuild)

    tail = commands.add_parser(
        "tail",
        help="print events as they are appended, as CloudEvents JSON lines (auditors only;"
        " every case shown is recorded as accessed)",
    )
    tail.add_argument("--service", action="append", choices=SERVICES, help="repeatable; all")
    tail.add_argument("--from-start", action="store_true", help="print the stored events first")
    _storage(tail)
    _caller(tail)

    parked = commands.add_parser(
        "parked",
        help="records a service's relay parked because the bus refused them",
        description="list: the records parked, with the reason. retry: ask the running relay "
        "to publish a case's parked records again, in order (after fixing the cause, e.g. "
        "raising the topic's max.message.bytes); it acts within seconds.",
    )
    parked.add_argument("action", choices=["list", "retry"])
    parked.add_argument("service", choices=SERVICES)
    parked.add_argument(
        "--case", type=identifier, help="retry only this case (bus key); default: every case"
    )
    _storage(parked)

    timeline = commands.add_parser("timeline", help="a case's timeline, from audit")
    timeline.add_argument("case_id", type=sendable)
    timeline.add_argument("--basis", choices=["occurred", "recorded"], default="occurred")
    timeline.add_argument("--as-of", help="ISO 8601 moment (UTC when no offset is given)")
    timeline.add_argument("--json", action="store_true", help="one CloudEvents JSON per line")
    _audit(timeline)

    state = commands.add_parser("state", help="a case as it was (or was known) at a moment")
    state.add_argument("case_id", type=sendable)
    state.add_argument("--as-of", help="ISO 8601 moment (UTC when no offset); default: audit's now")
    state.add_argument("--basis", choices=["occurred", "recorded"], default="occurred")
    state.add_argument("--json", action="store_true", help="the CaseState as JSON")
    _audit(state)

    export = commands.add_parser("export", help="a case's history as CloudEvents JSON Lines")
    export.add_argument("case_id", type=sendable)
    export.add_argument("--basis", choices=["occurred", "recorded"], default="occurred")
    export.add_argument("-o", "--output", help="file to write (standard output by default)")
    _audit(export)

    disclosures = commands.add_parser(
        "disclosures",
        help="the accounting of disclosures of a client's record, from audit",
        description="Every disclosure of the client's record outside the agency's care team "
        "(partner agencies, emergency access, legal obligation, referrals) in a period of at "
        "most six years: date, recipient, what was disclosed, purpose, consent or basis.",
    )
    disclosures.add_argument("--client", type=sendable, required=True, help="the client id")
    disclosures.add_argument(
        "--from", dest="period_from", required=True, help="ISO 8601 moment (UTC when no offset)"
    )
    disclosures.add_argument("--to", dest="period_to", help="ISO 8601 moment; default now")
    disclosures.add_argument("--json", action="store_true", help="one Disclosure JSON per line")
    _audit(disclosures)

    as_seen = commands.add_parser(
        "as-seen",
        help="a case as a user saw it at a moment, beside what they read, from audit",
        description="The case as recorded up to --at, filtered through the user's entitlements "
        "as they stood then, and the user's recorded reads. The user's role, agency, team and "
        "purpose default to those of their latest recorded access to the case.",
    )
    as_seen.add_argument("case_id", type=sendable)
    as_seen.add_argument("--user", type=sendable, required=True, help="the user id (U)")
    as_seen.add_argument("--at", required=True, help="ISO 8601 moment T (UTC when no offset)")
    as_seen.add_argument("--user-role", choices=ROLES)
    as_seen.add_argument("--user-agency", type=sendable)
    as_seen.add_argument("--user-team", type=sendable)
    as_seen.add_argument("--user-purpose", type=sendable)
    as_seen.add_argument("--json", action="store_true", help="the whole answer as JSON")
    _audit(as_seen)

    console = commands.add_parser(
        "console",
        help="serve the audit console in the browser (see services/console/)",
        description="The audit console for auditors and supervisors, talking to audit's API "
        "with the signed-in user's token.",
    )
    console.add_argument("--audit", metavar="HOST:PORT", help="default: from addresses.json")
    console.add_argument("--data-dir", default=_data_dir(), help="where addresses.json is")
    console.add_argument(
        "--host", type=unbracketed, default="127.0.0.1", help="an IPv6 address with or without []"
    )
    console.add_argument(
        "--port", type=bounded(0, 65535), default=7305, help="0: a free port (default 7305)"
    )
    console.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark the session cookie Secure (HTTPS; always on a host other than loopback)",
    )
    _login(commands)

    dlq = commands.add_parser(
        "dlq",
        help="dead-lettered events of a consumer group: list them, or replay them",
        description="List the dead letters of GROUP's <GROUP>.dlq topic with their reasons "
        "(sensitive values redacted), or replay those not yet replayed (idempotent). "
        "Without GROUP, list every dead-letter topic.",
    )
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument(
        "group", nargs="?", type=consumer_group, help="e.g. casetrail.audit.timeline-index-v2"
    )
    dlq.add_argument("--all", action="store_true", help="list: include replayed ones")
    dlq.add_argument("--backend", choices=["embedded", "distributed"], default="distributed")
    dlq.add_argument("--bootstrap", help="Kafka host:port (default $CASETRAIL_KAFKA_BOOTSTRAP)")

    from cli.ledger import add_commands

    add_commands(commands)
    from cli.break_glass import add_commands as add_break_glass

    add_break_glass(commands)
    from cli.clients import add_commands as add_clients

    add_clients(commands)
    from cli.keys import add_commands as add_keys

    add_keys(commands)
    return root


def finite(low: float, high: float, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a number from ``low`` (``above``: more than ``low``) to ``high``,
    written as ``ascii_decimal`` reads it (never nan, infinite or another script's digits)."""

    def parse(text: str) -> float:
        value = ascii_decimal(text)
        if value is None or not (low < value if above else low <= value) or not value <= high:
            lowest = f"more than {low:g}" if above else f"from {low:g}"
            raise argparse.ArgumentTypeError(f"must be a number {lowest} to {high:g}")
        return value

    return parse


def bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        # As many digits as the highest has: an int64 tree size takes 19 (2**63 - 1).
        number = ascii_whole_number(text, max_digits=len(str(high)))
        if number is None or not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}")
        return number

    return parse


def sendable(text: str) -> str:
    """An argparse type: text a service can be sent (UTF-8). An argument that is not valid
    UTF-8 arrives as lone surrogates ($'\\xff' as '\\udcff'), which the request could not
    encode: told as an answer this CLI could not read, blaming the service (exit 1)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("not UTF-8 text") from None
    return text


def identifier(text: str) -> str:
    """An argparse type: the catalog's id (``Identifier``), as the services check it."""
    from casetrail_platform.commands import id_problem

    problem = id_problem("", text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"not an id: {problem.problem}")
    return text


def consumer_group(text: str) -> str:
    """An argparse type: a consumer group whose dead-letter topic Kafka would accept (else
    the topic check failed with a traceback after connecting)."""
    from events.topics import dead_letter_topic

    try:
        dead_letter_topic(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "a consumer group is 1-245 characters from A-Z a-z 0-9 . _ -"
        ) from None
    return text


def _data_dir() -> str:
    return os.environ.get("CASETRAIL_DATA_DIR", "var/data")


def _storage(command: argparse.ArgumentParser) -> None:
    command.add_argument("--data-dir", default=_data_dir())
    command.add_argument("--backend", choices=["embedded", "distributed"], default="embedded")
    command.add_argument(
        "--pg-dsn", type=sendable, help="PostgreSQL (distributed; default $CASETRAIL_PG_DSN)"
    )


def _audit(command: argparse.ArgumentParser) -> None:
    command.add_argument("--audit", metavar="HOST:PORT", help="default: from addresses.json")
    command.add_argument("--data-dir", default=_data_dir(), help="where addresses.json is")
    _caller(command)
    deadline(command)


DEFAULT_TIMEOUT = 30.0
"""Seconds a command waits for a service's answer to one call (``--timeout``)."""
MAX_TIMEOUT = 3600.0


def deadline(command: argparse.ArgumentParser) -> None:
    """``--timeout``: a service that accepts the connection but never answers ended nothing."""
    command.add_argument(
        "--timeout",
        type=finite(0.0, MAX_TIMEOUT, above=True),
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"wait at most this long for each answer, more than 0 and at most {MAX_TIMEOUT:g}"
        f" (default {DEFAULT_TIMEOUT:g}); a streamed export has no deadline",
    )


def _caller(command: argparse.ArgumentParser) -> None:
    """Who calls, and why: every read of case data is decided and recorded under them."""
    tokens = command.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token-file",
        metavar="FILE",
        help="read the bearer token from FILE (owner-only, e.g. 0600; refused if others can"
        " read it). Else $CASETRAIL_TOKEN, else the token `casetrail login` saved",
    )
    tokens.add_argument(
        "--token",
        help="bearer token on the command line: VISIBLE TO OTHER USERS of this machine (ps);"
        " prefer `casetrail login`, --token-file or $CASETRAIL_TOKEN",
    )
    command.add_argument("--purpose", type=sendable, default="confidentiality_review")


TOKEN_VISIBLE = (
    "casetrail: warning: --token is visible to other users of this machine (ps,"
    " /proc/PID/cmdline); use --token-file FILE, CASETRAIL_TOKEN or `casetrail login`"
)


def _login(commands: Any) -> None:
    for name, text in (
        ("login", "get a token from the development issuer of `make run` and save it"),
        ("token", "print a token from the development issuer of `make run`"),
    ):
        command = commands.add_parser(name, help=text, description=text + " (DEVELOPMENT ONLY)")
        command.add_argument("--user", required=True, help="the subject (user id)")
        command.add_argument("--role", required=True, choices=ROLES)
        command.add_argument(
            "--agency",
            help="default: the agency the services serve, $CASETRAIL_HOME_AGENCY (else the"
            " example agency, eastbay-dss)",
        )
        command.add_argument("--team")
        command.add_argument("--entitlement", action="append", help="repeatable")
        command.add_argument(
            "--hours",
            type=finite(0.0, MAX_LOGIN_HOURS, above=True),
            default=8.0,
            help=f"lifetime, more than 0 and at most {MAX_LOGIN_HOURS:g} (default 8)",
        )
        command.add_argument("--data-dir", default=_data_dir())


if __name__ == "__main__":
    main()
