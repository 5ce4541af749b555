"""`casetrail tail` outlives the token it started with: each batch is shown only while that
token still holds, as a call to a service would be refused once it has expired."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.identity.errors import InvalidCredential
from casetrail_platform.identity.keys import IssuerKeys
from casetrail_platform.identity.verifier import TokenVerifier
from casetrail_platform.store.port import ANY_VERSION
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import RecordAccessed
from events.catalog_registry import default_registry
from events.envelope import EventMetadata, NewEvent
from tests.support.identity import TestIssuer
from tests.support.tailing import tailing
from tests.unit.audit.support import INTAKE_WORKER, opened

LIFETIME = 2
"""Seconds the auditor's token holds."""


async def test_a_tail_ends_when_its_token_expires_and_shows_nothing_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer = TestIssuer()
    store = await SqliteEventStore.open(tmp_path / "events.db", default_registry())
    try:
        # No leeway: the token is refused the second it expires.
        verifier = TokenVerifier(
            IssuerKeys(issuer.url, min_refresh_interval=0.0), issuer.audience, leeway=0.0
        )
        token = issuer.mint("auditor-kim", "auditor", lifetime_seconds=LIFETIME)
        expires = time.time() + LIFETIME
        principal = await verifier.verify(token)
        tail = tailing(store, principal, lambda: verifier.verify(token))
        await asyncio.sleep(max(0.0, expires - time.time()) + 1.5)
        case_id = f"case-{uuid4().hex[:8]}"
        metadata = EventMetadata(
            source="casetrail/intake",
            actor=INTAKE_WORKER,
            occurred_at=datetime.now(UTC),
            correlation_id=uuid4(),
        )
        await store.append(f"case-{case_id}", [NewEvent(opened(case_id), metadata)], ANY_VERSION)

        try:
            with pytest.raises(InvalidCredential):
                await asyncio.wait_for(tail, 5)
        finally:
            tail.cancel()
            with contextlib.suppress(asyncio.CancelledError, InvalidCredential):
                await tail

        # The case appended after the expiry was neither shown nor recorded as read.
        assert case_id not in capsys.readouterr().out
        recorded = await store.read_all(0)
        assert not [r for r in recorded if isinstance(r.event, RecordAccessed)]
    finally:
        await store.close()
        issuer.stop()
