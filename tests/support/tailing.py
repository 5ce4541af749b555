"""`casetrail tail`'s loop (``cli.tail.follow``) run over a store in a test: from the store's
start, as an auditor reviewing confidentiality, each batch shown while the credential holds."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.decide import decide
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.vocabulary import Action
from casetrail_platform.store.port import EventStore
from cli.tail import TAIL_CLIENT, TAIL_STREAMS, Credential, follow
from events.catalog.access import AccessPurpose
from events.catalog.base import Role

AUDITOR = Principal(
    "kim", Role.AUDITOR, DEFAULT_HOME_AGENCY, "https://issuer.example", client=TAIL_CLIENT
)
"""An auditor tailing, as the CLI names its client (``TAIL_CLIENT``)."""


def tailing(
    store: EventStore, principal: Principal = AUDITOR, credential: Credential | None = None
) -> asyncio.Task[None]:
    """The tail of ``store`` as ``principal``, run until cancelled or ``credential`` (default:
    ``principal``, for good) no longer holds."""
    purpose = AccessPurpose.CONFIDENTIALITY_REVIEW
    decision = decide(
        principal, Action.TAIL, purpose, None,
        home_agency=DEFAULT_HOME_AGENCY, now=datetime.now(UTC),
    )  # fmt: skip
    assert decision.allowed

    async def holds() -> Principal:
        return principal

    access = AccessControl(
        store, None, "casetrail/intake", home_agency=DEFAULT_HOME_AGENCY, own_streams=TAIL_STREAMS
    )
    return asyncio.create_task(
        follow(
            store,
            access,
            principal,
            purpose,
            decision,
            from_start=True,
            credential=credential or holds,
            idle_timeout=0.05,
        )
    )


async def tailed_briefly(store: EventStore, seconds: float = 0.5) -> None:
    """What the tail of ``store`` shows and records in ``seconds``, then it is stopped."""
    task = tailing(store)
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
