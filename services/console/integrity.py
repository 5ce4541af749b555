"""The material the browser checks each shown event's integrity with (static/integrity.js).

The console only relays what audit answers with the user's token: the inclusion proof of each
event in the newest checkpoint audit verified, that checkpoint as a signed note, and every log's
published key. The browser then recomputes the leaf hash from the event's canonical bytes (sent
with the timeline page), the root from the proof, and checks the note's Ed25519 signature: the
console is not trusted to have done it.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from casetrail.audit.v1 import audit_pb2
from services.console import pages
from services.console.audit_client import AuditClient, AuditRefused, Caller

EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NOT_YET = "EVENT_NOT_YET_CHECKPOINTED"


def event_ids(values: list[str]) -> list[str]:
    if not 1 <= len(values) <= pages.PAGE_SIZE:
        raise pages.BadInput({"event": f"1 to {pages.PAGE_SIZE} event ids"})
    if not all(EVENT_ID.fullmatch(value) for value in values):
        raise pages.BadInput({"event": "event ids are lower-case UUIDs"})
    return list(dict.fromkeys(values))


async def proofs(client: AuditClient, caller: Caller, ids: list[str]) -> dict[str, Any]:
    """``{"keys": {origin: verifier key}, "proofs": {event id: proof or {"problem": ...}}}``."""
    keys = await client.ledger_keys(caller)
    answers = await asyncio.gather(
        *(client.prove_event(caller, event_id) for event_id in ids), return_exceptions=True
    )
    found: dict[str, Any] = {}
    for event_id, answer in zip(ids, answers, strict=True):
        if isinstance(answer, audit_pb2.ProveEventInclusionResponse):
            found[event_id] = _proof(answer)
        elif isinstance(answer, AuditRefused):
            found[event_id] = {"problem": _problem(answer)}
        else:
            raise answer
    return {"keys": keys, "proofs": found}


def _proof(answer: audit_pb2.ProveEventInclusionResponse) -> dict[str, Any]:
    checkpoint = answer.checkpoint
    return {
        "service": answer.service,
        "position": answer.position,
        "proof": [_b64(sibling) for sibling in answer.proof],
        "checkpoint": {
            "origin": checkpoint.origin,
            "tree_size": checkpoint.tree_size,
            "root_hash": _b64(checkpoint.root_hash),
            "signed_note": checkpoint.signed_note,
        },
    }


def _problem(refused: AuditRefused) -> str:
    refusal = refused.refusal
    if refusal.code == grpc.StatusCode.FAILED_PRECONDITION and refusal.reason == NOT_YET:
        return "pending"
    if refusal.code == grpc.StatusCode.FAILED_PRECONDITION:
        return "mismatch"  # LEDGER_MISMATCH: the log does not hold the event audit received
    if refusal.code == grpc.StatusCode.NOT_FOUND:
        return "unknown"
    raise refused


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


async def endpoint(request: Request, client: AuditClient, caller: Caller) -> Response:
    ids = event_ids(request.query_params.getlist("event"))
    return JSONResponse(await proofs(client, caller, ids))
