"""Create or upgrade every service's PostgreSQL schemas, then exit (the chart's migration Job).

``python -m services.migrate [--service NAME ...]`` with ``CASETRAIL_PG_DSN`` (and libpq's
``PG*`` variables for the user and TLS; the password from ``CASETRAIL_PG_PASSWORD_FILE``).
Each service's stores (events, checkpoints, the relay's parking lot, read models) apply the
same idempotent DDL under advisory locks when they connect, so this runs safely beside
starting services; running it first means a new version's schema changes happen once, before
traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psycopg

from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.infrastructure import (
    Infrastructure,
    open_event_store,
    open_parking_lot,
    open_read_models,
)
from casetrail_platform.store.pg_dsn import UnusableDsn
from casetrail_platform.store.pg_password import DSN_VARIABLE, deployment_dsn
from services.runner import SERVICES

log = logging.getLogger("casetrail.migrate")


async def migrate(dsn: str, services: Sequence[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="casetrail-migrate-") as scratch:
        infra = Infrastructure(data_dir=Path(scratch), postgres_dsn=dsn)
        for service in services:
            store, _checkpoints, close_store = await open_event_store(infra, service)
            try:
                # Opening the lot creates its table; it keeps no connection open.
                await open_parking_lot(infra, service, store)
            finally:
                await close_store()
            read_models = await open_read_models(infra, service)
            await read_models.close()
            log.info(
                "%s: schemas %s_events and %s_read_models are current", service, service, service
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.migrate", description=__doc__)
    parser.add_argument("--service", action="append", choices=SERVICES, help="repeatable")
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("CASETRAIL_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        dsn = deployment_dsn(os.environ)
    except UnusableDsn as error:  # never the DSN's text: it may hold a password
        log.error("%s: %s", DSN_VARIABLE, error)
        return 1
    except ValueError as error:
        log.error("PostgreSQL password: %s", error)
        return 1
    try:
        asyncio.run(migrate(dsn, options.service or SERVICES))
    except (psycopg.OperationalError, StorageUnavailableError) as error:
        # The database may not be up yet; the Job retries. One line, no stack trace.
        log.error("cannot reach PostgreSQL: %s", str(error).strip().splitlines()[0])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
