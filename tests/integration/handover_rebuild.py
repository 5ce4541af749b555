"""``casetrail rebuild`` of the handover tests' projection, as a process of its own
(``test_projection_handover.py``): it does what ``cli.rebuild`` does (alone, then a rebuild
from zero) with a projection slow enough to be frozen in the middle.

Lines on stdout, each with the time: ``rebuilding`` (alone), then ``rebuilt``, ``not alone``
or ``lost`` (``AloneLost``: its lock session ended while it ran).
Run: ``python -m tests.integration.handover_rebuild <dsn> <service> <pause> <dir>``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.locking.serving import AloneLost, alone
from casetrail_platform.projections.postgres import PostgresReadModelStore
from casetrail_platform.projections.runner import rebuild
from casetrail_platform.store.postgres import PostgresEventStore
from tests.integration.handover_replica import StreamPositions, say
from tests.support.sample_events import sample_registry


async def main(dsn: str, service: str, pause: float, data_dir: str) -> int:
    store = await PostgresEventStore.connect(dsn, sample_registry(), schema=f"{service}_events")
    read_models = await PostgresReadModelStore.connect(dsn, schema=f"{service}_read_models")
    infra = Infrastructure(data_dir=Path(data_dir), postgres_dsn=dsn, seal_sensitive=False)
    try:
        async with alone(infra, service, StreamPositions.name) as nobody_follows:
            if not nobody_follows:
                say("not alone")
                return 2
            say("rebuilding")
            await rebuild(store, read_models, StreamPositions(pause))
        say("rebuilt")
        return 0
    except AloneLost:
        say("lost")
        return 1
    finally:
        await read_models.close()
        await store.close()


if __name__ == "__main__":
    dsn, service, pause, data_dir = sys.argv[1:5]
    sys.exit(asyncio.run(main(dsn, service, float(pause), data_dir)))
