"""`casetrail parked list|retry SERVICE`: the records a service's outbox relay parked because
the bus refused them for good (and the later records of their case held behind them)."""

from __future__ import annotations

import argparse
import asyncio
import sys


def run(options: argparse.Namespace) -> int:
    return asyncio.run(_parked(options))


async def _parked(options: argparse.Namespace) -> int:
    from casetrail_platform.hosting import relay_name
    from casetrail_platform.infrastructure import open_event_store, open_parking_lot
    from cli.present import shown
    from cli.stores import has_local_store, infrastructure, where_stored

    infra = infrastructure(options)
    if not has_local_store(infra, options.service):
        print(
            f"{options.service} has no store in {where_stored(infra, options.service)}",
            file=sys.stderr,
        )
        return 2
    relay = relay_name(options.service)
    store, _checkpoints, close_store = await open_event_store(infra, options.service)
    try:
        lot = await open_parking_lot(infra, options.service, store)
        if options.action == "retry":
            count = await lot.request_retry(relay, options.case)
            print(f"{relay}: retry requested for {count} parked records")
            return 0 if count else 1
        records = await lot.parked(relay)
        for record in records:
            retry = " (retry requested)" if record.retry_requested else ""
            # Each field escaped, so none holds the tab that separates them (or a line's end).
            fields = (
                str(record.position),
                shown(record.key),
                shown(f"{record.stream}#{record.sequence}"),
                shown(record.event_type),
                str(record.event_id),
                record.parked_at.isoformat(),
                shown(record.reason) + retry,
            )
            print("\t".join(fields))
        print(f"{len(records)} parked records")  # the count line, alone when none is parked
        return 0
    finally:
        await close_store()
