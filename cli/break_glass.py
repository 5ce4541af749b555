"""`casetrail break-glass open | close | reviews | review`: emergency accesses, through intake's
API.

* ``open CASE --reason TEXT [--minutes N]``: break the glass (the token must carry the
  ``break_glass`` entitlement: ``casetrail login ... --entitlement break_glass`` on the
  development issuer); then read the case with ``--purpose emergency`` until it expires.
* ``close CASE ACCESS_ID``: end it early (the grantee, or a supervisor of the case's team or
  an auditor); nothing more is read under it, and it still waits for its review.
* ``reviews [--case C] [--all]``: the review queue, overdue first (supervisors with
  ``--purpose supervision``, auditors with ``confidentiality_review``); itself a recorded read.
* ``review CASE ACCESS_ID --outcome justified|not_justified|escalated [--note TEXT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import uuid
from datetime import timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict

from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from cli.audit import _credentials
from cli.present import iso_minute, moment_of, short, shown
from cli.rpc import answered, command, intake_stub, query

OUTCOMES = ("justified", "not_justified", "escalated")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The break-glass subcommands, added to ``casetrail``'s parser (``cli.main``)."""
    from cli.main import _caller, _data_dir, deadline, finite, sendable

    glass = commands.add_parser(
        "break-glass",
        help="emergency access to a case: open or close one, list the review queue, review one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = glass.add_subparsers(dest="glass_command", required=True)
    opening = actions.add_parser("open", help="open a time-boxed emergency access to a case")
    opening.add_argument("case_id", type=sendable)
    opening.add_argument("--reason", type=sendable, required=True, help="why (1-1,000 characters)")
    opening.add_argument(
        "--minutes",
        type=finite(0.0, 1440.0, above=True),
        default=60.0,
        help="how long, up to 1,440 (default 60)",
    )
    closing = actions.add_parser("close", help="end an emergency access before its time box")
    closing.add_argument("case_id", type=sendable)
    closing.add_argument("emergency_access_id", type=sendable)
    reviews = actions.add_parser("reviews", help="the emergency accesses awaiting review")
    reviews.add_argument("--case", type=sendable, help="only this case")
    reviews.add_argument("--all", action="store_true", help="the reviewed ones too")
    reviews.add_argument("--json", action="store_true", help="one EmergencyAccess JSON per line")
    review = actions.add_parser("review", help="record the review of an emergency access")
    review.add_argument("case_id", type=sendable)
    review.add_argument("emergency_access_id", type=sendable)
    review.add_argument("--outcome", required=True, choices=OUTCOMES)
    review.add_argument("--note", type=sendable, help="at most 2,000 characters")
    for action in (opening, closing, reviews, review):
        action.add_argument("--intake", metavar="HOST:PORT", help="default: from addresses.json")
        action.add_argument("--data-dir", default=_data_dir(), help="where addresses.json is")
        _caller(action)
        deadline(action)


def run(options: argparse.Namespace) -> int:
    ask = _ACTIONS[options.glass_command]
    return answered("intake", options.timeout, lambda: asyncio.run(ask(options)))


def _intake(
    options: argparse.Namespace,
) -> contextlib.AbstractAsyncContextManager[intake_pb2_grpc.IntakeServiceStub]:
    return intake_stub(options.intake, Path(options.data_dir), options.timeout)


async def _open(options: argparse.Namespace) -> None:
    duration = Duration()
    duration.FromTimedelta(timedelta(minutes=options.minutes))
    request = intake_pb2.OpenEmergencyAccessRequest(
        context=command(uuid.uuid4().hex),
        case_id=options.case_id,
        reason=options.reason,
        duration=duration,
    )
    async with _intake(options) as intake:
        opened = await intake.OpenEmergencyAccess(request, metadata=_credentials(options))
    print(
        shown(
            f"emergency access {opened.emergency_access_id} to case {options.case_id}"
            f" until {iso_minute(moment_of(opened.expires_at))} UTC: read it with"
            " --purpose emergency"
        )
    )


async def _close(options: argparse.Namespace) -> None:
    request = intake_pb2.CloseEmergencyAccessRequest(
        context=command(uuid.uuid4().hex),
        case_id=options.case_id,
        emergency_access_id=options.emergency_access_id,
    )
    async with _intake(options) as intake:
        closed = await intake.CloseEmergencyAccess(request, metadata=_credentials(options))
    print(
        f"emergency access {options.emergency_access_id} closed at"
        f" {iso_minute(moment_of(closed.closed_at))} UTC (it still waits for its review)"
    )


async def _reviews(options: argparse.Namespace) -> None:
    request = intake_pb2.ListEmergencyAccessesRequest(
        context=query(options.purpose), include_reviewed=options.all, case_id=options.case or ""
    )
    async with _intake(options) as intake:
        answer = await intake.ListEmergencyAccesses(request, metadata=_credentials(options))
    for access in answer.accesses:
        if options.json:
            print(json.dumps(MessageToDict(access, preserving_proto_field_name=True)))
        else:
            print(access_line(access))
    if not options.json:
        more = " (more not shown)" if answer.truncated else ""
        print(f"{len(answer.accesses)} emergency accesses{more}")


def access_line(access: intake_pb2.EmergencyAccess) -> str:
    closed = (
        f"  closed {iso_minute(moment_of(access.closed_at))}"
        if access.HasField("closed_at")
        else ""
    )
    if access.HasField("review"):
        state = f"reviewed {access.review.outcome} by {access.review.reviewer.user_id}"
    else:
        due = iso_minute(moment_of(access.review_due_at))
        state = f"OVERDUE since {due}" if access.overdue else f"review due {due}"
    access_shown = shown(
        f"{access.emergency_access_id}  case {short(access.case_id)}"
        f"  {access.grantee.user_id} ({access.grantee.role})"
        f"  {iso_minute(moment_of(access.opened_at))}-{iso_minute(moment_of(access.expires_at))}"
        f"{closed}  {state}"
    )
    return f"{access_shown}\n    reason: {shown(access.reason)}"


async def _review(options: argparse.Namespace) -> None:
    request = intake_pb2.ReviewEmergencyAccessRequest(
        context=command(uuid.uuid4().hex),
        case_id=options.case_id,
        emergency_access_id=options.emergency_access_id,
        outcome=options.outcome,
        note=options.note or "",
    )
    async with _intake(options) as intake:
        await intake.ReviewEmergencyAccess(request, metadata=_credentials(options))
    print(f"emergency access {options.emergency_access_id} reviewed: {options.outcome}")


_ACTIONS = {"open": _open, "close": _close, "reviews": _reviews, "review": _review}
