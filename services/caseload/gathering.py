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
waiting for that nonce (``CONFIRMATION_PATH``; ``confirm`` answers it once, ``nonces``) before
answering, else 403 ``PART_NOT_ASKED``, refused on the record as the views' other refusals
(``PartNotAsked``: the verified caller, the view, no case; their subject and agency logged). A
caller sending the marks gains nothing: no nonce it sends is awaited, so it gets no part, and a
part request is answered here, never forwarded again. A confirmation that cannot be had (the
asker out of reach or silent), or of a nonce whose view the asker has given up (another part
failed: ``Confirmation.GIVEN_UP``, 410), is 503 ``OWNER_UNAVAILABLE``: the asker's view fails,
no caller is suspected.

Two processes gathering from each other wait on each other: a part request holds a connection
of the asker until its receiver has confirmed it with the asker. Each kind of request has its
own pool of connections (``OwnerRouter.pool``), so that a confirmation never waits behind part
requests or forwarded per-worker views (sharing Faust's 100, ~100 views gathered at once on each
of two processes starved every confirmation: every view 503, and each part refused as unasked).
A process gathers at most ``GATHERS_AT_ONCE`` views at once, one part connection to each other
process each: a part request never waits for a connection; a view over it waits its turn, up
to ``TURN_SECONDS``, else 503 ``SERVER_BUSY`` with ``Retry-After``, as when the nonces it
keeps are at their limit (``NONCES_KEPT``: views given up by the hundred a second). Answering a
part or a confirmation takes no turn: a process answers the others whatever it gathers itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from yarl import URL

from services.caseload.access import Refused
from services.caseload.nonces import NONCES_KEPT, Confirmation, PartNonces
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
"""Where a process tells whether it waits for the nonce of ``PART_MARK`` (``Confirmation``)."""
PART_SECONDS = 20.0
"""A part: read from tables in memory, after one confirmation (``CONFIRMATION_SECONDS``); a
nonce given up is kept as long (``PartNonces``)."""
CONFIRMATION_SECONDS = 10.0
GATHERS_AT_ONCE = 64
"""All-worker views this process gathers at once, and the part connections it holds to each
other process (``PARTS_POOL``): each view one, so no part request waits for a connection."""
TURN_SECONDS = 10.0
"""How long a view over ``GATHERS_AT_ONCE`` waits for its turn before 503 ``SERVER_BUSY``."""
RETRY_AFTER_SECONDS = 1
CONFIRMATION_CONNECTIONS = 1000
"""Confirmations this process asks of each other process at once: one per part it is asked,
up to ``GATHERS_AT_ONCE`` from each other process, with room to spare."""
PARTS_POOL = "parts"
CONFIRMATIONS_POOL = "confirmations"

P = TypeVar("P", bound=Part)


class Gathering:
    """The parts of the all-worker views, asked of the group's other processes and answered to
    them."""

    def __init__(self, app: CaseloadApp) -> None:
        self.app = app
        self._nonces = PartNonces(given_up_seconds=PART_SECONDS)
        self._turns = asyncio.Semaphore(GATHERS_AT_ONCE)

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
        asker = str(self.app.conf.canonical_url)
        async with self._turn():  # no part request waits for a connection (GATHERS_AT_ONCE)
            issued = self._nonces.issue(len(others))
            if issued is None:
                raise _busy(
                    f"this process keeps its limit of {NONCES_KEPT} part nonces, of views"
                    " gathered or given up lately"
                )
            nonces = dict(zip(others, issued, strict=True))
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
            finally:  # a part still being confirmed is told its view was given up
                self._nonces.give_up(issued)
        return [task.result() for task in asked]

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """One of the ``GATHERS_AT_ONCE`` views gathered at once, waited for up to
        ``TURN_SECONDS``; else ``Refused`` 503 ``SERVER_BUSY``."""
        try:
            async with asyncio.timeout(TURN_SECONDS):
                await self._turns.acquire()
        except TimeoutError:
            raise _busy(
                f"this process is gathering its limit of {GATHERS_AT_ONCE} all-worker views at once"
            ) from None
        try:
            yield
        finally:
            self._turns.release()

    async def _part(self, at: URL, view: URL, headers: Mapping[str, str], kind: type[P]) -> P:
        router = self._router
        parts = router.pool(PARTS_POOL, GATHERS_AT_ONCE)
        reply = await router.ask(at, view, headers, seconds=PART_SECONDS, client=parts)
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
        """``PartNotAsked`` unless the group's process the part request names asked for it:
        that process, at its address in the assignment, waits for the request's nonce
        (``CONFIRMATION_PATH``); ``Refused`` 503 ``OWNER_UNAVAILABLE`` when it cannot tell, or
        has given the view up."""
        nonce, asker = headers.get(PART_MARK, ""), headers.get(ASKER, "")
        router = self._router
        members = [
            at
            for at in router.owners(HELD_CASES)
            if not router.is_this_process(at) and router.same_process(at, asker)
        ]
        if not nonce or not members:
            raise PartNotAsked()
        confirmed = await router.ask(  # out of reach or silent: 503, logged there
            members[0],
            URL(CONFIRMATION_PATH),
            {PART_MARK: nonce},
            seconds=CONFIRMATION_SECONDS,
            client=router.pool(CONFIRMATIONS_POOL, CONFIRMATION_CONNECTIONS),
        )
        if confirmed.status == Confirmation.NOT_ASKED:
            raise PartNotAsked()
        if confirmed.status == Confirmation.GIVEN_UP:  # another part failed: nobody forged it
            log.info("caseload: a process of the group gave up a view before its part came")
            raise owner_unavailable()
        if confirmed.status != Confirmation.ASKED:  # no yes or no from the asker
            log.warning(
                "caseload: a process of the group answered a confirmation %d", confirmed.status
            )
            raise owner_unavailable()

    def confirm(self, nonce: str) -> Confirmation:
        """Whether this process waits for the part of ``nonce``, or gave its view up; once
        only."""
        return self._nonces.confirm(nonce)


class PartNotAsked(Refused):
    """403 ``PART_NOT_ASKED``: a part request no process of the group made (a caller's), to be
    refused on the record (``web``)."""

    def __init__(self) -> None:
        super().__init__(
            403,
            "a part of an all-worker view is answered only to the process of the group that"
            " asked for it: ask for the view without X-Caseload-Forwarded or X-Caseload-Part",
            "PART_NOT_ASKED",
        )


def _busy(why: str) -> Refused:
    return Refused(
        503,
        f"{why}: ask again in {RETRY_AFTER_SECONDS} s",
        "SERVER_BUSY",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    )
