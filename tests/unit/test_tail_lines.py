"""`casetrail tail` prints each event as one line of ASCII JSON: what staff typed cannot move,
reorder or forge the lines a terminal shows."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.identity.keys import IssuerKeys
from casetrail_platform.identity.verifier import TokenVerifier
from casetrail_platform.policy.decide import decide
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.vocabulary import Action
from casetrail_platform.store.port import ANY_VERSION
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.tail import TAIL_CLIENT, TAIL_STREAMS, follow
from events.catalog.access import AccessPurpose
from events.catalog_registry import default_registry
from events.envelope import EventMetadata, NewEvent
from tests.support.identity import TestIssuer
from tests.unit.audit.support import INTAKE_WORKER, assigned

TYPED = "Licensed\u2028to\x85counsel \u202eesrever\u2066"
"""A reason holding a line separator, a C1 next line, a right-to-left override and an
isolate: each reorders or breaks a line on a terminal that acts on it."""


async def test_a_tail_prints_what_staff_typed_escaped_on_one_ascii_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer = TestIssuer()
    store = await SqliteEventStore.open(tmp_path / "events.db", default_registry())
    try:
        verifier = TokenVerifier(IssuerKeys(issuer.url), issuer.audience)
        token = issuer.mint("auditor-kim", "auditor")
        principal = replace(await verifier.verify(token), client=TAIL_CLIENT)
        purpose = AccessPurpose.CONFIDENTIALITY_REVIEW
        decision = decide(
            principal,
            Action.TAIL,
            purpose,
            None,
            home_agency=DEFAULT_HOME_AGENCY,
            now=datetime.now(UTC),
        )
        metadata = EventMetadata(
            source="casetrail/intake",
            actor=INTAKE_WORKER,
            occurred_at=datetime.now(UTC),
            correlation_id=uuid4(),
        )
        event = assigned("case-typed").model_copy(update={"reason": TYPED})
        await store.append("case-case-typed", [NewEvent(event, metadata)], ANY_VERSION)

        tailing = asyncio.create_task(
            follow(
                store,
                AccessControl(
                    store,
                    None,
                    "casetrail/intake",
                    home_agency=DEFAULT_HOME_AGENCY,
                    own_streams=TAIL_STREAMS,
                ),
                principal,
                purpose,
                decision,
                from_start=True,
                credential=lambda: verifier.verify(token),
                idle_timeout=0.05,
            )
        )
        await asyncio.sleep(0.5)
        tailing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tailing

        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1
        assert lines[0].isascii()
        assert json.loads(lines[0])["data"]["reason"] == TYPED
    finally:
        await store.close()
        issuer.stop()
