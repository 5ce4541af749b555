"""`casetrail disclosures | as-seen`: the need-to-know reviews, through audit's API.

``disclosures`` is the accounting of disclosures of a client's record (HIPAA 45 CFR 164.528
shape): every disclosure outside the agency's care team in a period of at most six years.
``as-seen`` shows a case as a user saw it at a moment: the state recorded up to then, cleared
of what the user was not entitled to, beside what the user actually read. Both calls are
themselves recorded by audit as accesses.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from casetrail.audit.v1 import audit_pb2
from cli.audit import _audit, _credentials, moment
from cli.present import case_state_lines, iso_minute, moment_of, shown
from cli.rpc import answered, query, timestamp

PAGE_SIZE = 1000


def run(options: argparse.Namespace) -> int:
    ask = _disclosures if options.command == "disclosures" else _as_seen
    return answered("audit", options.timeout, lambda: asyncio.run(ask(options)))


async def _disclosures(options: argparse.Namespace) -> None:
    request = audit_pb2.ListDisclosuresRequest(
        context=query(options.purpose),
        client_id=options.client,
        period_start=timestamp(moment(options.period_from, "--from")),
        page_size=PAGE_SIZE,
    )
    if options.period_to:
        request.period_end.CopyFrom(timestamp(moment(options.period_to, "--to")))
    async with _audit(options) as audit:
        while True:
            page = await audit.ListDisclosures(request, metadata=_credentials(options))
            if request.page_token == "" and not options.json:
                print(
                    shown(
                        f"disclosures of client {options.client}"
                        f" from {iso_minute(moment_of(page.period_start))}"
                        f" to {iso_minute(moment_of(page.period_end))}"
                        f" (cases {', '.join(page.case_ids)})"
                    )
                )
            for item in page.disclosures:
                print(_json(item) if options.json else disclosure_line(item))
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    if not options.json:
        print(f"{page.total_disclosures} disclosures")


def disclosure_line(item: audit_pb2.Disclosure) -> str:
    basis = item.basis or "NO BASIS RECORDED"
    reference = ", ".join(item.consent_ids) or item.emergency_access_id
    what = ", ".join(item.sections) + (f" (+{len(item.fields)} fields)" if item.fields else "")
    disclosed = shown(
        f"{iso_minute(moment_of(item.disclosed_at))}  {item.recipient.kind} "
        f"{item.recipient.recipient_id}  {what}  purpose {item.purpose or '-'}  "
        f"{basis}{' ' + reference if reference else ''}"
    )
    return f"{disclosed}\n    {shown(item.description)}"


async def _as_seen(options: argparse.Namespace) -> None:
    request = audit_pb2.GetCaseAsSeenRequest(
        context=query(options.purpose),
        case_id=options.case_id,
        user_id=options.user,
        as_of=timestamp(moment(options.at, "--at")),
        user_role=options.user_role or "",
        user_agency_id=options.user_agency or "",
        user_team=options.user_team or "",
        user_purpose=options.user_purpose or "",
    )
    async with _audit(options) as audit:
        answer = await audit.GetCaseAsSeen(request, metadata=_credentials(options))
    if options.json:
        print(json.dumps(MessageToDict(answer, preserving_proto_field_name=True), indent=2))
        return
    user, entitled = answer.user, answer.entitlement
    print(
        shown(
            f"case {options.case_id} as {user.user_id} ({user.role}, {user.agency_id}"
            + (f", team {user.team}" if user.team else "")
            + f", purpose {user.purpose}) saw it at {options.at}  [{user.derived_from}]"
        )
    )
    if entitled.allowed:
        print(
            shown(
                f"entitled by rule {entitled.rule} ({entitled.policy_version}) to "
                + ", ".join(entitled.sections)
                + ("" if entitled.sensitive_disclosed else "; sensitive fields withheld")
                + (f"; consent {', '.join(entitled.consent_ids)}" if entitled.consent_ids else "")
            )
        )
        print("\n".join(case_state_lines(answer.state)))
        if entitled.withheld_fields:
            # A cleared status or count reads as none: say it was withheld.
            print(shown("  withheld: " + ", ".join(entitled.withheld_fields)))
    else:
        print(shown(f"entitled to nothing: {entitled.rule} ({entitled.reason})"))
    listed = "" if not answer.reads_truncated else f", the latest {len(answer.reads)} listed"
    print(shown(f"what {user.user_id} read up to then: {answer.reads_total} reads{listed}"))
    for read in answer.reads:
        print(
            shown(
                f"  {iso_minute(moment_of(read.recorded_at))}  {read.source}  "
                f"{', '.join(read.sections)}  purpose {read.purpose}  rule {read.rule}"
                + (f"  fields {', '.join(read.fields)}" if read.fields else "")
            )
        )


def _json(message: Message) -> str:
    return json.dumps(MessageToDict(message, preserving_proto_field_name=True))
