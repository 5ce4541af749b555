"""Audit's ledger over an agency whose logs are none signed yet: every event an export holds is
pending, vouched for by audit's signed statement, as before a log's first checkpoint. For the
tests that check an export with ``casetrail verify``'s checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import Verifier, origin_of
from casetrail_platform.store.port import EventStore
from services.audit.app.ledger import LedgerDeps

AGENCY = "agency"


class _Logs:
    """Audit's directory of its agency's logs, none signed yet."""

    services = type("Every", (), {"__contains__": lambda self, service: True})()

    def __init__(self, key: Verifier) -> None:
        self._key = key

    def origin(self, service: str) -> str:
        return origin_of(AGENCY, service)

    async def verifier(self, service: str) -> Verifier:
        return self._key

    async def log(self, service: str) -> None:
        return None


class _NoAlarms:
    async def alarm(self, origin: str) -> None:
        return None


async def _no_event(event_id: Any) -> None:
    return None


async def unsigned_ledger(store: EventStore, directory: Path) -> tuple[LedgerDeps, Verifier]:
    """The ledger's dependencies for audit on ``store``, and the key of audit's own log (its
    statements'), kept in ``directory``."""
    signer = FileSigner(origin_of(AGENCY, "audit"), directory / "audit.key")
    key = await signer.verifier()
    deps = LedgerDeps(
        _Logs(key),  # type: ignore[arg-type]
        _NoAlarms(),  # type: ignore[arg-type]
        store,
        _no_event,
        sign_every=60.0,
        sign_note=signer.sign_note,
    )
    return deps, key
