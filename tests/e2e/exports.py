"""What the end-to-end tests of exports share: the ledger's auditor, an export once every line
is proven, the agency's ledger keys as `casetrail ledger keys` lists them, and `casetrail
verify` run on lines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from casetrail.audit.v1 import audit_pb2
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.export import PROOF_ATTRIBUTE
from cli.rpc import Person, eventually, query
from tests.e2e.conftest import Casetrail
from tests.e2e.support import casetrail_cli

AUDITOR = Person("auditor-ledger", "auditor")
SIGN_EVERY = Infrastructure(data_dir=Path()).ledger_sign_every


def context() -> Any:
    return query("confidentiality_review")


async def audit_learned(casetrail: Casetrail, case_id: str) -> None:
    """Until audit has the case (its timeline answers): its events reach audit over the bus."""
    await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetTimeline(
            audit_pb2.GetTimelineRequest(context=context(), case_id=case_id)
        ),
        what="audit to learn the case",
        patience=casetrail.patience,
    )


async def proven_export(casetrail: Casetrail, case_id: str) -> list[dict[str, Any]]:
    """The case's export once every line carries its proof. Checkpoints come every few
    seconds and audit verifies each before proving anything with it; every export also
    records an access (an event of audit's own log), so exports are spaced out more than a
    checkpoint interval plus a witness round apart."""
    request = audit_pb2.ExportCaseRequest(context=context(), case_id=case_id)
    deadline = asyncio.get_running_loop().time() + casetrail.patience
    while True:
        text = b"".join(
            [c.json_lines async for c in casetrail.stubs.as_(AUDITOR).audit.ExportCase(request)]
        )
        lines = [json.loads(line) for line in text.decode().splitlines()]
        if any(line["type"] == "casetrail.case.opened" for line in lines) and all(
            PROOF_ATTRIBUTE in line for line in lines
        ):
            return lines
        assert asyncio.get_running_loop().time() < deadline, "events never all proven"
        await asyncio.sleep(SIGN_EVERY * 2.5)


async def verify(lines: list[dict[str, Any]], path: Path, keys: Path) -> tuple[int, str, str]:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    await asyncio.to_thread(path.write_text, text)
    return await casetrail_cli("verify", str(path), "--keys", str(keys))


async def keys_file(casetrail: Casetrail, tmp_path: Path) -> Path:
    keys = await casetrail.stubs.as_(AUDITOR).audit.ListLedgerKeys(
        audit_pb2.ListLedgerKeysRequest(context=context())
    )
    path = tmp_path / "keys.txt"
    await asyncio.to_thread(path.write_text, "".join(k.verifier_key + "\n" for k in keys.keys))
    return path
