"""Audit rebuilt from zero after an erasure answers for events an earlier release stored
(``client.registered`` and ``case.opened`` v1, sealed, or in clear from before sealing existed)
as the audit that kept them while the client was known: the in-process bus republishes every
store at each start, and once the client's key is destroyed the upcast events go out with the
erasure marker at every leaf the current version seals. They went out as a reader holding no
key decodes the stored form: the need's category the upcaster makes up (``other``) and, stored
in clear, the erased client's name, date of birth, national id and need, readable in `data`.
Embedded only: on Kafka a rebuilt audit replays what the topic kept, published while the client
was known (the unit test of the same input on both buses is in ``tests/unit/test_stored_form``).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from casetrail.audit.v1 import audit_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.infrastructure import Infrastructure, open_event_store
from casetrail_platform.store.port import NO_STREAM
from cli.rpc import Person, command, connect, eventually, query
from events.catalog.base import Role
from events.catalog.cases import ReferralSource, ReferralSourceKind
from events.catalog.clients import PersonalIdentifier, PersonName
from events.catalog.legacy import CaseOpenedV1, ClientRegisteredV1
from events.envelope import Actor, EventMetadata, NewEvent
from events.registry import EventRegistry
from events.sealed_values import ERASED_CODE, ERASED_TEXT
from services.demo import embedded_services
from tests.e2e.conftest import Casetrail
from tests.e2e.exports import audit_learned, keys_file, proven_export, verify
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="module")

SUPERVISOR = Person("dpo-erin-walsh", "supervisor")
AUDITOR = Person("auditor-ledger", "auditor")
REVIEW = "confidentiality_review"
NEED = f"LEGACY-NEED-{uuid.uuid4().hex}"
FAMILY = f"Merini-{uuid.uuid4().hex[:8]}"
NATIONAL_ID = f"MRN{uuid.uuid4().hex[:8]}"
TOLD = (NEED, FAMILY, NATIONAL_ID, "Alda", "1931-03-21")
"""What an earlier release recorded of the client, none of which audit may show once erased."""


async def _seed(data_dir: Path, *, sealed: bool) -> tuple[str, str]:
    """A client and a case recorded at version 1 in intake's store: their ids."""
    client_id, case_id = str(uuid.uuid4()), str(uuid.uuid4())
    legacy = EventRegistry([ClientRegisteredV1, CaseOpenedV1])
    infra = Infrastructure(data_dir=data_dir, registry=legacy, seal_sensitive=sealed)
    store, checkpoints, close = await open_event_store(infra, "intake")
    del checkpoints
    metadata = EventMetadata(
        source="casetrail/intake",
        actor=Actor("receptionist-earlier-release", Role.RECEPTIONIST),
        occurred_at=datetime(2024, 1, 1, tzinfo=UTC),
        correlation_id=uuid.uuid4(),
    )
    registered = ClientRegisteredV1(
        client_id=client_id,
        name=PersonName(given_names="Alda", family_name=FAMILY),
        date_of_birth=date(1931, 3, 21),
        identifiers=(PersonalIdentifier(scheme="national_id", value=NATIONAL_ID),),
    )
    opened = CaseOpenedV1(
        case_id=case_id,
        client_id=client_id,
        referral_source=ReferralSource(kind=ReferralSourceKind.SELF),
        presenting_need=NEED,
    )
    try:
        await store.append(f"client-{client_id}", [NewEvent(registered, metadata)], NO_STREAM)
        await store.append(f"case-{case_id}", [NewEvent(opened, metadata)], NO_STREAM)
    finally:
        await close()
    return client_id, case_id


@asynccontextmanager
async def _started(data_dir: Path) -> AsyncIterator[Casetrail]:
    async with (
        embedded_services(data_dir) as local,
        connect(local.addresses, local.tokens) as connection,
    ):
        yield Casetrail("embedded", local.addresses, connection, local.tokens, 30.0, data_dir)


async def _erased_state(casetrail: Casetrail, case_id: str) -> dict[str, Any]:
    """Audit's state of the case as recorded, once it holds the erasure and reads the need
    erased (the key is destroyed before ``client.erased`` reaches audit)."""

    def erased(answer: audit_pb2.GetCaseStateAsOfResponse) -> bool:
        needs = answer.state.presenting_needs
        return answer.state.client_erased and bool(needs) and needs[0].category == ERASED_CODE

    answer = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetCaseStateAsOf(
            audit_pb2.GetCaseStateAsOfRequest(
                context=query(REVIEW), case_id=case_id, basis=audit_pb2.TIME_BASIS_RECORDED
            )
        ),
        erased,
        what="audit to read the case's client erased",
        patience=casetrail.patience,
    )
    return MessageToDict(answer.state)


async def _timeline_data(casetrail: Casetrail, case_id: str) -> dict[str, Any]:
    """The `data` of the case's opening and its client's registration in audit's timeline."""
    answer = await casetrail.stubs.as_(AUDITOR).audit.GetTimeline(
        audit_pb2.GetTimelineRequest(
            context=query(REVIEW), case_id=case_id, page_size=100, exclude_access_events=True
        )
    )
    wanted = ("casetrail.case.opened", "casetrail.client.registered")
    return {
        entry.event_type: json.loads(entry.cloudevent_json)["data"]
        for entry in answer.entries
        if entry.event_type in wanted
    }


async def test_audit_rebuilt_after_an_erasure_answers_for_upcast_events_as_the_live_one(
    tmp_path: Path,
) -> None:
    live_dir, rebuilt_dir = tmp_path / "live", tmp_path / "rebuilt"
    seeded = [await _seed(live_dir, sealed=True), await _seed(live_dir, sealed=False)]
    live: dict[str, dict[str, Any]] = {}
    async with _started(live_dir) as casetrail:
        for client_id, case_id in seeded:
            await audit_learned(casetrail, case_id)
            await casetrail.stubs.as_(SUPERVISOR).intake.EraseClient(
                intake_pb2.EraseClientRequest(
                    context=command(key()), client_id=client_id, request_reference="dms://dsr/7"
                )
            )
            live[case_id] = await _erased_state(casetrail, case_id)
    shutil.copytree(live_dir, rebuilt_dir)
    for path in (rebuilt_dir / "audit").glob("read-models.db*"):
        path.unlink()  # audit's read models rebuilt from zero at the start

    async with _started(rebuilt_dir) as casetrail:
        for _, case_id in seeded:
            assert await _erased_state(casetrail, case_id) == live[case_id]
            data = await _timeline_data(casetrail, case_id)
            need = data["casetrail.case.opened"]["presenting_needs"][0]
            assert need == {"category": ERASED_CODE, "description": ERASED_TEXT}
            client = data["casetrail.client.registered"]
            assert client["name"]["family_name"] == ERASED_TEXT
            assert (client["date_of_birth"], client["identifiers"]) == (None, [])
            assert not [told for told in TOLD if told in json.dumps(data)]
            # The stored form is kept as the store holds it: the ledger's proofs still check.
            lines = await proven_export(casetrail, case_id)
            status, out, err = await verify(
                lines, tmp_path / f"{case_id}.jsonl", await keys_file(casetrail, tmp_path)
            )
            assert status == 0, err
            assert f"{len(lines)} of {len(lines)} events verified" in out
