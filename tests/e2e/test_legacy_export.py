"""Events stored under an older schema version, end to end on both backends (issue 10): a
client and a case recorded by an earlier release (``client.registered`` v1 and
``case.opened`` v1, its need sealed with the client's key) are in intake's store when the
services start; the relay publishes them upcast with their stored form, audit keeps it, and
`casetrail verify` accepts the export offline (audit's ExportCase before the client's erasure,
`casetrail export` after it, with the same proof), while the stored form never shows the sealed
need in clear (export and Kafka); without it, or with a forged one, the line is refused."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from casetrail.audit.v1 import audit_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.infrastructure import Infrastructure, open_event_store
from casetrail_platform.ledger.export import PROOF_ATTRIBUTE
from casetrail_platform.store.port import NO_STREAM
from cli.rpc import Person, command, connect, eventually, query
from events.catalog.base import Role
from events.catalog.cases import CaseOpened, ReferralSource, ReferralSourceKind
from events.catalog.clients import PersonName
from events.catalog.legacy import CaseOpenedV1, ClientRegisteredV1
from events.envelope import Actor, EventMetadata, NewEvent
from events.registry import EventRegistry
from events.sealed_values import ERASED_TEXT
from services.demo import embedded_services
from tests.e2e.conftest import Casetrail
from tests.e2e.exports import SIGN_EVERY, proven_export
from tests.e2e.support import casetrail_cli
from tests.support.backends import CASETRAIL_BACKENDS
from tests.support.cases import key
from tests.support.distributed import ServiceProcesses, fresh_database, fresh_topic
from tests.support.identity import TestIssuer
from tests.support.kafka_reading import partitions_of, records_to_end

pytestmark = pytest.mark.asyncio(loop_scope="module")

SUPERVISOR = Person("dpo-erin-walsh", "supervisor")
AUDITOR = Person("auditor-ledger", "auditor")
REVIEW = "confidentiality_review"
CANARY = f"LEGACY-CANARY-{uuid.uuid4().hex}"
"""The need an earlier release recorded in clear text, sealed in the store."""


SEED: dict[str, str] = {}
"""The seeded client and case ids, and the seeded case opening's event id."""


async def _seed(infra: Infrastructure) -> None:
    """What an earlier release stored in intake: the events at version 1, sealed with the
    agency's keys (the same key files and tables the services use)."""
    client_id, case_id, opened_id = str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4()
    store, checkpoints, close = await open_event_store(infra, "intake")
    del checkpoints
    try:
        metadata = EventMetadata(
            source="casetrail/intake",  # what intake has always recorded (hosting.py)
            actor=Actor("receptionist-earlier-release", Role.RECEPTIONIST),
            occurred_at=datetime.now(UTC),
            correlation_id=uuid.uuid4(),
        )
        registered = ClientRegisteredV1(
            client_id=client_id,
            name=PersonName(given_names="Alda", family_name=f"Merini-{key()[:8]}"),
        )
        opened = CaseOpenedV1(
            case_id=case_id,
            client_id=client_id,
            referral_source=ReferralSource(kind=ReferralSourceKind.SELF),
            presenting_need=CANARY,
        )
        await store.append(f"client-{client_id}", [NewEvent(registered, metadata)], NO_STREAM)
        await store.append(
            f"case-{case_id}", [NewEvent(opened, metadata, event_id=opened_id)], NO_STREAM
        )
    finally:
        await close()
    SEED.update(client_id=client_id, case_id=case_id, opened_id=str(opened_id))


def _legacy_registry() -> EventRegistry:
    return EventRegistry([ClientRegisteredV1, CaseOpenedV1])


@pytest_asyncio.fixture(
    scope="module",
    loop_scope="module",
    params=CASETRAIL_BACKENDS,
)
async def upgraded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, issuer: TestIssuer
) -> AsyncIterator[Casetrail]:
    """casetrail started on a store an earlier release wrote to."""
    data_dir = tmp_path_factory.mktemp(f"legacy-{request.param}")
    if request.param == "embedded":
        await _seed(Infrastructure(data_dir=data_dir, registry=_legacy_registry()))
        async with (
            embedded_services(data_dir) as local,
            connect(local.addresses, local.tokens) as connection,
        ):
            yield Casetrail("embedded", local.addresses, connection, local.tokens, 30.0, data_dir)
        return
    async with fresh_database() as dsn, fresh_topic() as topic:
        await _seed(
            Infrastructure(data_dir=data_dir, postgres_dsn=dsn, registry=_legacy_registry())
        )
        processes = ServiceProcesses(data_dir, dsn, topic, issuer.env())
        try:
            await processes.start()
            async with connect(processes.addresses, issuer.tokens) as connection:
                yield Casetrail(
                    "distributed",
                    processes.addresses,
                    connection,
                    issuer.tokens,
                    90.0,
                    data_dir,
                    dsn,
                    topic,
                )
        finally:
            await processes.stop_all()


async def test_an_upcast_event_is_exported_with_a_proof_that_verifies_offline_after_erasure(
    upgraded: Casetrail, tmp_path: Path
) -> None:
    stubs = upgraded.stubs
    case_id, opened_id = SEED["case_id"], SEED["opened_id"]
    await eventually(
        lambda: stubs.as_(AUDITOR).audit.GetTimeline(
            audit_pb2.GetTimelineRequest(context=query(REVIEW), case_id=case_id)
        ),
        what="audit to learn the case an earlier release opened",
        patience=upgraded.patience,
    )
    lines = await proven_export(upgraded, case_id)
    opened = _opening(lines, opened_id)
    assert (opened["schemaversion"], opened["storedversion"]) == (CaseOpened.schema_version, 1)
    stored = base64.b64decode(opened["storeddata"])
    assert b'"presenting_need":"ct1~' in stored
    assert CANARY.encode() not in stored
    assert CANARY not in json.dumps(lines)
    before = await _proof(upgraded, opened_id)

    keys_file = tmp_path / "keys.txt"
    keys = await stubs.as_(AUDITOR).audit.ListLedgerKeys(
        audit_pb2.ListLedgerKeysRequest(context=query(REVIEW))
    )
    keys_file.write_text("".join(k.verifier_key + "\n" for k in keys.keys))
    await _verifies(lines, tmp_path / "export.jsonl", keys_file)

    # Without its stored form the upcast line cannot be proven; with a forged one it is refused.
    bare = [{k: v for k, v in line.items() if not k.startswith("stored")} for line in lines]
    number = lines.index(opened) + 1
    upcast = sum("storeddata" in line for line in lines)
    await _refused(bare, tmp_path / "bare.jsonl", keys_file, f"line {number}:", upcast)
    forged_data = json.loads(stored)
    forged_data["referral_source"] = {"kind": "hospital", "name": "St Mary's Hospital"}
    forged = [dict(line) for line in lines]
    forged[number - 1]["storeddata"] = base64.b64encode(json.dumps(forged_data).encode()).decode()
    await _refused(forged, tmp_path / "forged.jsonl", keys_file, "does not upcast", 1)

    if upgraded.backend == "distributed":
        published = await _stored_forms_on_topic(upgraded.topic)
        assert published[opened_id] == stored
        assert all(CANARY.encode() not in form for form in published.values())

    # The client's erasure: the need reads as erased; the same proof, and the export verifies.
    erase = intake_pb2.EraseClientRequest(
        context=command(key()), client_id=SEED["client_id"], request_reference="dms://dsr/77"
    )
    erased = await stubs.as_(SUPERVISOR).intake.EraseClient(erase)
    assert list(erased.erased_case_ids) == [case_id]
    record = await stubs.as_(AUDITOR).intake.GetCase(
        intake_pb2.GetCaseRequest(context=query(REVIEW), case_id=case_id)
    )
    assert record.record.presenting_needs[0].description == ERASED_TEXT
    after = await stubs.as_(AUDITOR).audit.ProveEventInclusion(
        audit_pb2.ProveEventInclusionRequest(
            context=query(REVIEW), event_id=opened_id, tree_size=before.checkpoint.tree_size
        )
    )
    assert (after.leaf_hash, list(after.proof)) == (before.leaf_hash, list(before.proof))
    # `casetrail export` to a file, then `casetrail verify` of that file.
    await proven_export(upgraded, case_id)
    exported = await _cli_export(upgraded, case_id, tmp_path / "erased.jsonl")
    lines_after = [json.loads(line) for line in exported.read_text().splitlines()]
    assert _opening(lines_after, opened_id)["storeddata"] == opened["storeddata"]
    assert CANARY not in exported.read_text()
    status, out, err = await casetrail_cli("verify", str(exported), "--keys", str(keys_file))
    assert status == 0, err
    assert f"{len(lines_after)} of {len(lines_after)} events verified" in out
    # The data dir holds the ledger keys on both backends (else the CLI's default one is read).
    storage = ["--data-dir", str(upgraded.data_dir)] + (
        ["--backend", "distributed", "--pg-dsn", upgraded.postgres_dsn]
        if upgraded.backend == "distributed"
        else []
    )
    status, out, err = await casetrail_cli("verify-store", "intake", *storage)
    assert status == 0, err + out


async def _cli_export(casetrail: Casetrail, case_id: str, path: Path) -> Path:
    """``casetrail export CASE -o FILE`` once every line of it carries its proof (each export
    records an access, proven at the next checkpoint)."""
    audit = ["--audit", casetrail.addresses["audit"], "--token", casetrail.tokens(AUDITOR)]
    deadline = asyncio.get_running_loop().time() + casetrail.patience
    while True:
        status, _, err = await casetrail_cli("export", case_id, "-o", str(path), *audit)
        assert status == 0, err
        if all(PROOF_ATTRIBUTE in json.loads(line) for line in _lines_of(path)):
            return path
        assert asyncio.get_running_loop().time() < deadline, "the export was never all proven"
        await asyncio.sleep(SIGN_EVERY * 2.5)


def _lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _opening(lines: list[dict[str, Any]], event_id: str) -> dict[str, Any]:
    [opened] = [line for line in lines if line["id"] == event_id]
    return opened


async def _proof(casetrail: Casetrail, event_id: str) -> audit_pb2.ProveEventInclusionResponse:
    answer: audit_pb2.ProveEventInclusionResponse = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.ProveEventInclusion(
            audit_pb2.ProveEventInclusionRequest(context=query(REVIEW), event_id=event_id)
        ),
        what="audit to prove the upcast event",
        patience=casetrail.patience,
        retry=lambda refusal: (
            refusal.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
        ),
    )
    return answer


async def _verifies(lines: list[dict[str, Any]], path: Path, keys_file: Path) -> None:
    status, out, err = await casetrail_cli(
        "verify", _written(lines, path), "--keys", str(keys_file)
    )
    assert status == 0, err
    assert f"{len(lines)} of {len(lines)} events verified" in out


async def _refused(
    lines: list[dict[str, Any]], path: Path, keys_file: Path, says: str, failing: int
) -> None:
    status, out, err = await casetrail_cli(
        "verify", _written(lines, path), "--keys", str(keys_file)
    )
    assert status == 1, out
    assert says in err, err
    assert f"{len(lines) - failing} of {len(lines)} events verified" in out


def _written(lines: list[dict[str, Any]], path: Path) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


async def _stored_forms_on_topic(topic: str) -> dict[str, bytes]:
    """The stored forms the case-events topic carries (``ce_storeddata``), by event id."""
    partitions = await partitions_of([topic])
    assert partitions, f"no partitions of {topic}"
    found: dict[str, bytes] = {}
    for record in await records_to_end(partitions):
        headers = dict(record.headers)
        if "ce_storeddata" in headers:
            found[headers["ce_id"].decode()] = base64.b64decode(headers["ce_storeddata"])
    return found
