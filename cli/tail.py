"""`casetrail tail`: events of services' own stores as they are appended, as compact CloudEvents
JSON lines (one object per line, as in an export)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from cli.main import SERVICES
from events.hosting import Infrastructure


def run(options: argparse.Namespace) -> int:
    from cli.stores import has_local_store, infrastructure

    infra = infrastructure(options)
    names = options.service or [name for name in SERVICES if has_local_store(infra, name)]
    missing = [name for name in names if not has_local_store(infra, name)]
    if missing or not names:
        print(
            f"no store for {', '.join(missing) or 'any service'} under {infra.data_dir}",
            file=sys.stderr,
        )
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail_all(infra, names, options.from_start))
    return 0


async def _tail_all(infra: Infrastructure, names: list[str], from_start: bool) -> None:
    async with asyncio.TaskGroup() as group:
        for name in names:
            group.create_task(_tail(infra, name, from_start))


async def _tail(infra: Infrastructure, service: str, from_start: bool) -> None:
    from events.cloudevents import to_structured
    from events.hosting import open_event_store

    store, _checkpoints, close_store = await open_event_store(infra, service)
    try:
        after = 0 if from_start else await store.last_position()
        async for recorded in store.follow(after):
            line = json.dumps(to_structured(recorded), separators=(",", ":"), ensure_ascii=False)
            print(line, flush=True)
    finally:
        await close_store()
