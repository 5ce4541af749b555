"""Telling every process that shares PostgreSQL read models which documents changed.

A transaction that changes a document of a watched collection sends ``NOTIFY`` on the schema's
channel; PostgreSQL delivers it to every listening session only once that transaction has
committed (and never if it rolled back), in commit order. Each process listens on one
connection and tells its watchers. While that connection is lost (a server restart) changes go
untold: the watchers are told "anything may have changed" (``None``) when it is lost and again
when it listens anew, and ``live`` is false in between, so nothing is cached on the word of a
deaf listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable

import psycopg
from psycopg import sql

from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.projections.port import ChangeCallback
from casetrail_platform.store.pg_connections import Connection, open_connection

log = logging.getLogger(__name__)


def channel_of(schema: str) -> str:
    return f"casetrail_documents.{schema}"


def change_payload(collection: str, key: str | None) -> str:
    return json.dumps([collection, key])


class ChangeListener:
    def __init__(self, dsn: str, channel: str, what: str) -> None:
        self._dsn = dsn
        self.channel = channel
        self._what = what
        self._watchers: dict[str, list[ChangeCallback]] = {}
        self._task: asyncio.Task[None] | None = None
        self.live = False
        """Listening now: every committed change from here on will be told."""

    def watch(self, collection: str, changed: ChangeCallback) -> None:
        self._watchers.setdefault(collection, []).append(changed)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"listen:{self.channel}"
            )

    @property
    def collections(self) -> Iterable[str]:
        return self._watchers.keys()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.live = False

    async def _run(self) -> None:
        delay = 0.1
        while True:
            connection: Connection | None = None
            try:
                connection = await open_connection(self._dsn, self._what)
                await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                # Whatever changed before this moment was told to nobody.
                self._tell_all()
                self.live = True
                delay = 0.1
                async for notify in connection.notifies():
                    self._tell(notify.payload)
            except (psycopg.Error, StorageUnavailableError) as error:
                log.warning("document change notifications interrupted (%s)", error)
            finally:
                self.live = False
                self._tell_all()
                if connection is not None:
                    with contextlib.suppress(psycopg.Error):
                        await connection.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _tell(self, payload: str) -> None:
        try:
            collection, key = json.loads(payload)
        except (ValueError, TypeError):
            self._tell_all()
            return
        for changed in self._watchers.get(str(collection), ()):
            changed(None if key is None else str(key))

    def _tell_all(self) -> None:
        for watchers in self._watchers.values():
            for changed in watchers:
                changed(None)
