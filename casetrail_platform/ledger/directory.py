"""Every service's log as another party sees it: its ledger (read only) and its public key.

Audit reads the other services' ledgers the way a transparency-log client reads a log's tiles:
hashes and signed checkpoints only, never the events (on PostgreSQL as the role
``casetrail_ledger_reader``, which may read nothing else and write nothing). A log appears once
its service has stored something (embedded: its ``ledger.db`` exists).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from casetrail_platform.ledger.hosting import key_path, open_ledger_store
from casetrail_platform.ledger.note import (
    KeySchedule,
    LogKeys,
    NoteError,
    Verifier,
    origin_of,
    parse_verifiers,
    read_keys_file,
)
from casetrail_platform.ledger.port import LedgerNotCreated, LedgerStore

if TYPE_CHECKING:
    from casetrail_platform.infrastructure import Infrastructure

SERVICES = ("intake", "coordination", "planning", "audit")


class PublishedKeysUnreadable(NoteError):
    """A service's own ``ledger.pub`` that is there but holds no one log's keys (it cannot be
    read, is no keys file, or holds several logs'), named: taken for no key, the witness told
    the operator to configure keys, ``ListLedgerKeys`` left the log out and ``verify-store``
    said a store OK with no signature checked."""


class LedgerDirectory:
    def __init__(self, infra: Infrastructure, services: tuple[str, ...] = SERVICES) -> None:
        self._infra = infra
        self.services = services
        self._logs: dict[str, LedgerStore] = {}
        self._files: dict[str, tuple[int, int] | None] = {}
        """The SQLite file each open log was opened from (``_file_identity``)."""
        self._lock = asyncio.Lock()

    def origin(self, service: str) -> str:
        return origin_of(self._infra.agency, service)

    def service_of(self, origin: str) -> str | None:
        for service in self.services:
            if self.origin(service) == origin:
                return service
        return None

    async def log(self, service: str) -> LedgerStore | None:
        """The service's ledger as another party reads it; ``None`` when it does not exist
        (not created yet, or gone: deleted, its schema dropped, which the witness alarms on
        when it held a checkpoint of it)."""
        async with self._lock:
            infra = self._infra
            file: tuple[int, int] | None = None
            if infra.postgres_dsn is None:
                # The file, not a handle opened earlier: one deleted or replaced since is read
                # through an open handle as it was, and the witness would never see it go.
                file = await asyncio.to_thread(_file_identity, infra.data_dir / service)
                if self._files.get(service) != file:
                    await self._forget(service)
                if file is None:
                    return None
            if service in self._logs:
                return self._logs[service]
            try:
                store = await open_ledger_store(infra, service, reader=True)
            except LedgerNotCreated:
                return None  # not created yet by its service, or gone (the witness tells)
            # Anything else is raised: an outage read as "no log" hid a log the witness held.
            self._logs[service] = store
            self._files[service] = file
            return store

    async def forget(self, service: str) -> None:
        """Close and forget the service's log, found gone (``LedgerNotCreated`` reading it):
        the next ``log`` looks for it again."""
        async with self._lock:
            await self._forget(service)

    async def _forget(self, service: str) -> None:
        self._files.pop(service, None)
        store = self._logs.pop(service, None)
        if store is not None:
            await store.close()

    async def verifier(self, service: str) -> LogKeys | None:
        """The service's published key: from the configured keys file when there is one
        (``Infrastructure.ledger_public_keys``; a key it lacks is no key), else the key
        port's, else the ``.pub`` file the service wrote (none written is no key; one that
        holds no one log's keys raises ``PublishedKeysUnreadable``)."""
        infra = self._infra
        if infra.ledger_public_keys is not None:
            text = await asyncio.to_thread(read_keys_file, infra.ledger_public_keys)
            return parse_verifiers(text).get(self.origin(service))
        if infra.ledger_signer is not None:
            return await infra.ledger_signer(self.origin(service)).verifier()
        published = key_path(infra.data_dir, service).with_suffix(".pub")
        try:
            text = await asyncio.to_thread(read_keys_file, published)
            schedules = list(parse_verifiers(text).values())
        except FileNotFoundError:
            return None  # never written: the service was given its key (a Secret, a port)
        except (OSError, NoteError) as error:
            why = error.strerror if isinstance(error, OSError) else error
            raise PublishedKeysUnreadable(
                f"{published}: cannot read the public keys: {why}"
            ) from None
        if len(schedules) != 1:
            raise PublishedKeysUnreadable(
                f"{published}: cannot read the public keys: {len(schedules)} logs' keys, not one"
            )
        # The keys as written when generated (or rotated), under the origin of today's agency
        # name (FileSigner writes the file only once, so it may name an earlier one).
        keys = tuple(
            replace(key, verifier=Verifier(self.origin(service), key.verifier.public_key))
            for key in schedules[0].keys
        )
        return keys[0].verifier if len(keys) == 1 else KeySchedule(keys)

    async def verifiers(self) -> dict[str, LogKeys]:
        found: dict[str, LogKeys] = {}
        for service in self.services:
            verifier = await self.verifier(service)
            if verifier is not None:
                found[verifier.name] = verifier
        return found

    async def close(self) -> None:
        for store in self._logs.values():
            await store.close()
        self._logs.clear()
        self._files.clear()


def _file_identity(directory: Path) -> tuple[int, int] | None:
    """The device and inode of the service's ``ledger.db``; ``None`` when there is none."""
    try:
        status = (directory / "ledger.db").stat()
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino
