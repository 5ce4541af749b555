"""`casetrail timeline | state | export`: the audit trail of a case, through audit's API.

Every call is itself recorded by audit (who saw what, for which purpose): the caller is the one
their bearer token names (``casetrail login``, ``--token-file``, ``CASETRAIL_TOKEN`` or
``--token``), and they state their purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from google.protobuf.json_format import MessageToDict

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.limits import MOMENT_RANGE, within_moment_bounds
from casetrail_platform.private_files import private_replacement
from cli.login import bearer_token
from cli.present import case_state_lines, timeline_lines
from cli.rpc import answered, command_channel, load_addresses, query, timestamp

BASES = {"occurred": audit_pb2.TIME_BASIS_OCCURRED, "recorded": audit_pb2.TIME_BASIS_RECORDED}


def run(options: argparse.Namespace) -> int:
    if options.command == "export":
        return answered("audit", options.timeout, lambda: _export_to_file(options))
    ask = _timeline if options.command == "timeline" else _state
    return answered("audit", options.timeout, lambda: asyncio.run(ask(options)))


def moment(text: str, option: str = "--as-of") -> datetime:
    """An ISO 8601 moment (a date is its midnight), in UTC; without an offset it is taken as
    UTC. Within the services' bounds: one at the ends of Python's dates (0001-01-01T00:00+01:00)
    overflowed when converted, a traceback."""
    try:
        parsed = datetime.fromisoformat(text)
        parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise SystemExit(f"{option}: {text!r} is not an ISO 8601 moment") from None
    if not within_moment_bounds(parsed):
        raise SystemExit(f"{option}: must be {MOMENT_RANGE} (UTC)")
    return parsed


@asynccontextmanager
async def _audit(options: argparse.Namespace) -> AsyncIterator[audit_pb2_grpc.AuditServiceStub]:
    address = options.audit or load_addresses(Path(options.data_dir)).get("audit")
    if not address:
        raise SystemExit("no address for audit: pass --audit HOST:PORT")
    async with command_channel(address, options.timeout) as opened:
        yield audit_pb2_grpc.AuditServiceStub(opened)


def _credentials(options: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return bearer_metadata(bearer_token(options))


async def _timeline(options: argparse.Namespace) -> None:
    request = audit_pb2.GetTimelineRequest(
        context=query(options.purpose),
        case_id=options.case_id,
        basis=BASES[options.basis],
        page_size=1000,
    )
    if options.as_of:
        request.as_of.CopyFrom(timestamp(moment(options.as_of)))
    async with _audit(options) as audit:
        while True:
            page = await audit.GetTimeline(request, metadata=_credentials(options))
            if options.json:
                for entry in page.entries:
                    print(json.dumps(json.loads(entry.cloudevent_json), separators=(",", ":")))
            else:
                # An empty page prints nothing, not a blank line: the count below says it.
                for line in timeline_lines(page.entries):
                    print(line)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    if not options.json:
        print(f"{page.total_events} events")


async def _state(options: argparse.Namespace) -> None:
    request = audit_pb2.GetCaseStateAsOfRequest(
        context=query(options.purpose),
        case_id=options.case_id,
        # Unset: audit's own now (a moment from this machine's clock, ahead of audit's, would
        # be refused as in the future), and the answer says which moment that was.
        as_of=timestamp(moment(options.as_of)) if options.as_of else None,
        basis=BASES[options.basis],
    )
    async with _audit(options) as audit:
        answer = await audit.GetCaseStateAsOf(request, metadata=_credentials(options))
    if options.json:
        print(json.dumps(MessageToDict(answer.state, preserving_proto_field_name=True), indent=2))
        return
    at = answer.as_of.ToDatetime(tzinfo=UTC).isoformat()
    print(f"as {'it was' if options.basis == 'occurred' else 'it was known'} at {at}")
    print("\n".join(case_state_lines(answer.state)))


def _export_to_file(options: argparse.Namespace) -> None:
    if not options.output:
        asyncio.run(_export(options, sys.stdout.buffer))
        return
    # Case data: owner-only, and FILE is replaced only by a complete export (a refusal or a
    # stream cut short leaves it as it was).
    try:
        with private_replacement(Path(options.output)) as output:
            count = asyncio.run(_export(options, output))
    except OSError as error:
        raise SystemExit(f"{options.output}: cannot write the export: {error}") from None
    print(f"{count} events written to {options.output}", file=sys.stderr)


async def _export(options: argparse.Namespace, output: BinaryIO) -> int:
    request = audit_pb2.ExportCaseRequest(
        context=query(options.purpose),
        case_id=options.case_id,
        basis=BASES[options.basis],
    )
    count = 0
    async with _audit(options) as audit:
        async for chunk in audit.ExportCase(request, metadata=_credentials(options)):
            output.write(chunk.json_lines)
            count += chunk.event_count
    output.flush()
    return count
