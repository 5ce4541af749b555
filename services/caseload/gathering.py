"""The all-worker views (``/caseload/``, ``/overdue/``) answered whole however many processes
share the tables.

Each process's tables hold its own partitions only (``tables``), so the process asked reads its
part and asks every other process holding partitions of ``held-cases`` in the assignment it was
last given (``OwnerRouter.owners``) for theirs, forwarded as a per-worker view is
(``OwnerRouter.ask``: the process's address from the assignment, the deployment's TLS, the
views' headers only, ``FORWARDED_MARK``), then merges them (``parts``). Each part states the
partitions its process read, ready, from its tables: the view is answered only when they are
every partition once. A process out of reach or not ready, a part not well formed, or parts
read under different assignments (a rebalance seen at different moments) make it 503
``OWNER_UNAVAILABLE``: never a part of the view shown as if it were all.

The read is recorded once, by the process asked, for the cases its answer names, as when one
process runs alone. A part is no person's read: its receiver verifies the token (401 otherwise)
and records nothing, or audit would list, part by part, cases the answer never named (each part
names up to ``limit`` of them, the answer ``limit`` of all). So that a part is no way around the
record, it is answered only to the process that asked for it: the request carries a one-time
nonce (``PART_MARK``) and the asker's address (``ASKER``), which must be a process of the
group, and the receiver asks that process, at the address the assignment gives, whether it is
waiting for that nonce (``CONFIRMATION_PATH``; ``confirm`` consumes it) before answering, else
403 ``PART_NOT_ASKED``. A caller sending the marks gains nothing: no nonce it sends is awaited,
so it gets no part, and a part request is answered here, never forwarded again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from yarl import URL

from services.caseload.access import Refused
from services.caseload.parts import Part
from services.caseload.processor import HELD_CASES, CaseloadApp
from services.caseload.routing import (
    FORWARDED_MARK,
    OwnerRouter,
    forwarded_headers,
    owner_unavailable,
)

log = logging.getLogger(__name__)

PART_MARK = "X-Caseload-Part"
"""On a part request: the nonce the asker waits for (and on the receiver's confirmation)."""
ASKER = "X-Caseload-Asker"
"""On a part request: the asker's address (its canonical URL, as the assignment names it)."""
CONFIRMATION_PATH = "/caseload-parts/"
"""Where a process tells whether it waits for the nonce of ``PART_MARK`` (200, else 404)."""
PART_SECONDS = 20.0
"""A part: read from tables in memory, after one confirmation (``CONFIRMATION_SECONDS``)."""
CONFIRMATION_SECONDS = 10.0

P = TypeVar("P", bound=Part)


class Gathering:
    """The parts of the all-worker views, asked of the group's other processes and answered to
    them."""

    def __init__(self, app: CaseloadApp) -> None:
        self.app = app
        self._awaited: set[str] = set()
        """Nonces of the parts this process is asking for now."""

    @property
    def _router(self) -> OwnerRouter:
        return cast(OwnerRouter, self.app.router)

    def partitions_here(self) -> frozenset[int]:
        """The ``held-cases`` partitions this process holds (none before an assignment)."""
        router = self._router
        held = router.owners(HELD_CASES).items()
        return next((mine for at, mine in held if router.is_this_process(at)), frozenset())

    async def parts(self, request: Any, pinned: Mapping[str, str], kind: type[P]) -> list[P]:
        """The part of the view ``request`` asks for (its path and query, with ``pinned``) of
        every other process holding partitions of the tables, asked with the caller's headers
        the views read; ``Refused`` 503 ``OWNER_UNAVAILABLE`` when one is not had."""
        router = self._router
        others = [
            at
            for at, held in router.owners(HELD_CASES).items()
            if held and not router.is_this_process(at)
        ]
        if not others:  # alone in the group
            return []
        view = request.rel_url.with_query({**request.query, **pinned})
        headers = forwarded_headers(request.headers)
        nonces = {at: secrets.token_urlsafe(32) for at in others}
        self._awaited.update(nonces.values())
        asker = str(self.app.conf.canonical_url)
        try:
            async with asyncio.TaskGroup() as group:
                asked = [
                    group.create_task(
                        self._part(at, view, {**headers, PART_MARK: nonce, ASKER: asker}, kind)
                    )
                    for at, nonce in nonces.items()
                ]
        except ExceptionGroup:  # each logged where it failed; the others were cancelled
            raise owner_unavailable() from None
        finally:
            self._awaited.difference_update(nonces.values())
        return [task.result() for task in asked]

    async def _part(self, at: URL, view: URL, headers: Mapping[str, str], kind: type[P]) -> P:
        reply = await self._router.ask(at, view, headers, seconds=PART_SECONDS)
        if reply.status != 200:  # not ready, refused, another assignment: no part of it
            log.warning("caseload: a process of the group answered a part %d", reply.status)
            raise owner_unavailable()
        try:
            return kind.model_validate_json(reply.text)
        except ValidationError as error:
            log.warning(
                "caseload: a process of the group answered a part not well formed (%d errors)",
                error.error_count(),
            )
            raise owner_unavailable() from None

    @staticmethod
    def is_part(headers: Mapping[str, str]) -> bool:
        """Whether an all-worker view is asked as a part (marked), to be answered here."""
        return PART_MARK in headers or FORWARDED_MARK in headers

    async def require_asked(self, headers: Mapping[str, str]) -> None:
        """``Refused`` 403 ``PART_NOT_ASKED`` unless the group's process the part request
        names asked for it: that process, at its address in the assignment, waits for the
        request's nonce (``CONFIRMATION_PATH``)."""
        nonce, asker = headers.get(PART_MARK, ""), headers.get(ASKER, "")
        router = self._router
        members = [
            at
            for at in router.owners(HELD_CASES)
            if not router.is_this_process(at) and router.same_process(at, asker)
        ]
        if not nonce or not members:
            raise _not_asked()
        try:
            confirmed = await router.ask(
                members[0],
                URL(CONFIRMATION_PATH),
                {PART_MARK: nonce},
                seconds=CONFIRMATION_SECONDS,
            )
        except Refused:
            raise _not_asked() from None
        if confirmed.status != 200:
            raise _not_asked()

    def confirm(self, nonce: str) -> bool:
        """Whether this process waits for the part of ``nonce``; once only."""
        if nonce not in self._awaited:
            return False
        self._awaited.discard(nonce)
        return True


def _not_asked() -> Refused:
    log.warning("caseload: a part of an all-worker view was asked by no process of the group")
    return Refused(
        403,
        "a part of an all-worker view is answered only to the process of the group that asked"
        " for it: ask for the view without X-Caseload-Forwarded or X-Caseload-Part",
        "PART_NOT_ASKED",
    )
