"""`casetrail client correct-birth-date CLIENT --date YYYY-MM-DD --reason TEXT`: correct a
client's recorded date of birth (rectification, GDPR Art. 16) through intake's
``CorrectClientDateOfBirth``: a coordinator, the worker assigned to one of the client's cases
or that worker's supervisor. The dates are never printed (personal data): the answer names the
client and the event recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path

from casetrail.intake.v1 import intake_pb2
from cli.audit import _credentials
from cli.present import shown
from cli.rpc import answered, command, intake_stub


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The client subcommands, added to ``casetrail``'s parser (``cli.main``)."""
    from cli.main import _caller, _data_dir, deadline, sendable

    client = commands.add_parser(
        "client",
        help="correct a client's record at intake",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = client.add_subparsers(dest="client_command", required=True)
    correcting = actions.add_parser(
        "correct-birth-date", help="correct the client's recorded date of birth"
    )
    correcting.add_argument("client_id", type=sendable)
    correcting.add_argument(
        "--date", type=sendable, required=True, help="the right date of birth, YYYY-MM-DD"
    )
    correcting.add_argument(
        "--reason",
        type=sendable,
        required=True,
        help="why the recorded one was wrong and how this is known",
    )
    correcting.add_argument("--intake", metavar="HOST:PORT", help="default: from addresses.json")
    correcting.add_argument("--data-dir", default=_data_dir(), help="where addresses.json is")
    _caller(correcting)
    deadline(correcting)


def run(options: argparse.Namespace) -> int:
    return answered("intake", options.timeout, lambda: asyncio.run(_correct(options)))


async def _correct(options: argparse.Namespace) -> None:
    request = intake_pb2.CorrectClientDateOfBirthRequest(
        context=command(uuid.uuid4().hex),
        client_id=options.client_id,
        date_of_birth=options.date,
        reason=options.reason,
    )
    async with intake_stub(options.intake, Path(options.data_dir), options.timeout) as intake:
        corrected = await intake.CorrectClientDateOfBirth(request, metadata=_credentials(options))
    print(
        shown(
            f"client {options.client_id}: date of birth corrected"
            f" (event {', '.join(corrected.result.event_ids)}, version {corrected.result.version})"
        )
    )
