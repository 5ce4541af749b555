"""The review queue's read model forgets an erased client's emergency-access reasons and review
notes (sensitive, copied in the clear), and keeps the accesses: the duty to review stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from casetrail_platform.projections.sqlite import SqliteReadModelStore
from events.catalog.base import Role
from events.catalog.emergency import (
    EmergencyAccessOpened,
    EmergencyAccessOutcome,
    EmergencyAccessReviewed,
)
from events.catalog.erasure import ClientErased
from events.sealed_values import ERASED_TEXT
from services.intake.adapters.emergency_accesses import (
    EmergencyAccessesProjection,
    EmergencyAccessQueue,
)
from tests.unit.intake.support import recorded

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)


def _opened(case_id: str, access_id: str, reason: str) -> EmergencyAccessOpened:
    return EmergencyAccessOpened(
        case_id=case_id,
        emergency_access_id=access_id,
        grantee_id="sw-luis-ortega",
        grantee_role=Role.SOCIAL_WORKER,
        grantee_agency_id="eastbay-dss",
        entitlement="break_glass",
        reason=reason,
        opened_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )


def _reviewed(case_id: str, access_id: str, note: str) -> EmergencyAccessReviewed:
    return EmergencyAccessReviewed(
        case_id=case_id,
        emergency_access_id=access_id,
        reviewer_id="james.liu",
        reviewer_role=Role.AUDITOR,
        outcome=EmergencyAccessOutcome.JUSTIFIED,
        note=note,
    )


async def _apply(read_models: SqliteReadModelStore, *events: object) -> None:
    projection = EmergencyAccessesProjection()
    async with read_models.transaction() as transaction:
        for sequence, event in enumerate(events, start=1):
            assert isinstance(event, EmergencyAccessOpened | EmergencyAccessReviewed | ClientErased)
            await projection.handle(transaction, recorded(event, "stream", sequence))


async def test_erasure_forgets_the_reasons_and_notes_of_the_erased_cases_only(
    read_models: SqliteReadModelStore,
) -> None:
    await _apply(
        read_models,
        _opened("case-erased", "ea-1", "Secret reason one"),
        _reviewed("case-erased", "ea-1", "Secret note"),
        _opened("case-erased", "ea-2", "Secret reason two"),
        _opened("case-kept", "ea-3", "Another client's reason"),
        ClientErased(
            client_id="client-1", case_ids=("case-erased",), request_reference="dms://dsr/1"
        ),
        # Reviewed after the erasure: the note is about the erased client too.
        _reviewed("case-erased", "ea-2", "Secret late note"),
    )
    entries = {
        e.emergency_access_id: e
        for e in (
            await EmergencyAccessQueue(read_models).entries(include_reviewed=True, case_id=None)
        )[0]
    }
    assert {key: (e.reason, e.review and e.review.note) for key, e in entries.items()} == {
        "ea-1": (ERASED_TEXT, ERASED_TEXT),
        "ea-2": (ERASED_TEXT, ERASED_TEXT),
        "ea-3": ("Another client's reason", None),
    }
    kept = entries["ea-1"]
    assert (kept.case_id, kept.grantee_id, kept.opened_at) == ("case-erased", "sw-luis-ortega", NOW)
    assert kept.review is not None
    assert kept.review.outcome == "justified"
    async for _, document in read_models.scan("intake_emergency_accesses"):
        assert "Secret" not in str(document)
