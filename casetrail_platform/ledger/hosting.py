"""How a service process runs its ledger: open it beside the event store, follow the store,
sign on a schedule, publish checkpoints, report health (``casetrail.<service>.ledger``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from casetrail_platform.ledger.keys import CheckpointSigner, FileSigner, published_key
from casetrail_platform.ledger.log import LedgerLog, LedgerTampered
from casetrail_platform.ledger.note import origin_of, read_keys_file
from casetrail_platform.ledger.port import CheckpointRecord, LedgerStore
from casetrail_platform.private_files import private_replacement, read_private
from casetrail_platform.typed_numbers import ascii_decimal

if TYPE_CHECKING:
    from grpc_health.v1 import health

    from casetrail_platform.infrastructure import Infrastructure
    from casetrail_platform.store.port import EventStore

log = logging.getLogger(__name__)


def ledger_settings(infra: Infrastructure, environ: Mapping[str, str]) -> Infrastructure:
    """``CASETRAIL_AGENCY`` (the origins' middle part), ``CASETRAIL_LEDGER_SIGN_EVERY``
    (seconds between checkpoints) and ``CASETRAIL_LEDGER_PUBLIC_KEYS`` (a file of the
    services' published keys, for audit's witness) from the environment, when set."""
    agency = environ.get("CASETRAIL_AGENCY") or infra.agency
    text = environ.get("CASETRAIL_LEDGER_SIGN_EVERY", "")
    every = ascii_decimal(text) if text else infra.ledger_sign_every
    if every is None or not every > 0:
        raise ValueError("CASETRAIL_LEDGER_SIGN_EVERY must be a positive number of seconds")
    origin_of(agency, "intake")  # refuses an agency name that makes no valid origin
    keys = environ.get("CASETRAIL_LEDGER_PUBLIC_KEYS")
    public_keys = Path(keys) if keys else infra.ledger_public_keys
    return dataclasses.replace(
        infra, agency=agency, ledger_sign_every=every, ledger_public_keys=public_keys
    )


CHECKPOINT_FILE = "ledger.checkpoint"
"""The newest checkpoint signed, beside the key (embedded: ``checkpoint_record``)."""


def key_path(data_dir: Path, service: str) -> Path:
    """Where the embedded default keeps a service's signing key (its ``.pub`` beside it)."""
    return data_dir / service / "ledger.key"


def install_rotated_key(data_dir: Path, service: str, new_key: Path, handed_over: str) -> Path:
    """After a handover (``LedgerLog.hand_over``), the embedded default's key files: the new
    key in ``ledger.key`` (the old one kept beside it as ``ledger.key.retired-<N>``, 0600:
    audit's witness needs only its public key, but an operator may want it for an incident
    statement) and ``handed_over``, the new key's keys-file line with its range, added to
    ``ledger.pub`` (the schedule audit reads when it shares the data directory). Returns the
    retired key's path. Raises ``OSError`` where the key is not the service's to write (a
    mounted Secret): then the operator replaces it there; ``NoteError`` when ``ledger.pub`` is
    no keys file (not text, or larger than ``MAX_KEYS_FILE_BYTES``), before anything is
    written."""
    key = key_path(data_dir, service)
    size = handed_over.rsplit(" from=", 1)[1].split(" ", 1)[0]
    retired = key.with_name(f"{key.name}.retired-{size}")
    pem = read_private(new_key, "the new ledger signing key", group_readable=True)
    published = key.with_suffix(".pub")
    # A key given rather than generated has no ledger.pub: its schedule starts with the old key.
    origin = handed_over.split("+", 1)[0]
    # Within the keys file's bound, as every other reader of it (read whole, a device or a
    # huge file held the command, and a file not UTF-8 ended it with a traceback).
    lines = read_keys_file(published) if published.exists() else f"{published_key(origin, key)}\n"
    os.link(key, retired)  # fails, changing nothing, if that size was rotated at before
    with private_replacement(key) as file:
        file.write(pem)
    with private_replacement(published) as file:
        file.write(f"{lines.rstrip(chr(10))}\n{handed_over}\n".encode())
    return retired


def signer_for(infra: Infrastructure, service: str) -> CheckpointSigner:
    origin = origin_of(infra.agency, service)
    if infra.ledger_signer is not None:
        return infra.ledger_signer(origin)
    return FileSigner(origin, key_path(infra.data_dir, service))


async def open_ledger_store(
    infra: Infrastructure, service: str, *, reader: bool = False, read_only: bool = False
) -> LedgerStore:
    """The ledger of the service's event store (which must have been opened once);
    ``reader``: as another party reads it (PostgreSQL: ``READER_ROLE``; SQLite: read only,
    as ``read_only``);
    ``read_only``: as an auditor checks it, hashes and events, writing nothing on either
    backend (``LedgerNotCreated`` where its service has not created the ledger yet)."""
    if infra.postgres_dsn is not None:
        from casetrail_platform.ledger.postgres import PostgresLedgerStore

        schema = f"{service}_events"
        if reader:
            return await PostgresLedgerStore.connect_reader(infra.postgres_dsn, schema=schema)
        if read_only:
            return await PostgresLedgerStore.connect_read_only(infra.postgres_dsn, schema=schema)
        return await PostgresLedgerStore.connect(infra.postgres_dsn, schema=schema)
    from casetrail_platform.ledger.sqlite import SqliteLedgerStore

    directory = infra.service_dir(service)
    if read_only or reader:
        # Another party's ledger (audit's witness): never created or migrated by the reader,
        # only its service does that; ``LedgerNotCreated`` until it has (asked again later).
        return await SqliteLedgerStore.open_read_only(
            directory / "ledger.db", directory / "events.db"
        )
    return await SqliteLedgerStore.open(directory / "ledger.db", directory / "events.db")


async def open_ledger(infra: Infrastructure, service: str) -> LedgerLog:
    store = await open_ledger_store(infra, service)
    try:
        signer = await asyncio.to_thread(signer_for, infra, service)
    except BaseException:
        await store.close()
        raise
    return LedgerLog(store, signer)


async def run_ledger(
    ledger: LedgerLog,
    store: EventStore,
    health_servicer: health.aio.HealthServicer,
    health_name: str,
    stop: asyncio.Event,
    *,
    sign_every: float,
    retry_after: float = 5.0,
) -> None:
    """Follow ``store`` and sign until ``stop``; NOT_SERVING while the ledger is stopped (the
    service itself keeps serving): SERVING again once it follows the store again after an
    outage (a database restart), but never after it found the store no longer matching it
    (``LedgerTampered``: an operator must look)."""
    from grpc_health.v1 import health_pb2

    await health_servicer.set(health_name, health_pb2.HealthCheckResponse.SERVING)
    tampered = False

    async def stopped(error: Exception) -> None:
        nonlocal tampered
        tampered = tampered or isinstance(error, LedgerTampered)
        await health_servicer.set(health_name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def resumed() -> None:
        if not tampered:
            await health_servicer.set(health_name, health_pb2.HealthCheckResponse.SERVING)

    await ledger.run(
        store.wait_for_append,
        stop,
        sign_every=sign_every,
        on_error=stopped,
        on_resumed=resumed,
        retry_after=retry_after,
    )
    with contextlib.suppress(Exception):
        await ledger.sign()  # a last checkpoint of everything stored before stopping


def checkpoint_record(infra: Infrastructure, service: str) -> CheckpointRecord:
    """Where the service's signed checkpoints are published, and its ledger learns on start
    the newest it signed: the Kafka topic on the distributed backend; embedded, a file beside
    the signing key (the in-process bus keeps nothing across a restart)."""
    if infra.kafka is not None:
        from casetrail_platform.ledger.publication import KafkaCheckpointPublisher

        return KafkaCheckpointPublisher(infra.kafka)
    from casetrail_platform.ledger.checkpoint_file import FileCheckpointRecord

    return FileCheckpointRecord(key_path(infra.data_dir, service).with_name(CHECKPOINT_FILE))
