"""casetrail_projection_lag_seconds is kept per service: in the embedded process intake and
planning both feed policy.case-facts from the bus, and one series mixed their delays."""

from __future__ import annotations

from pathlib import Path

import pytest

from casetrail_platform.policy.projection import CaseFactsProjection
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.telemetry.metrics import process_metrics
from tests.unit.audit.support import T0, intake, opened


def _count(service: str, projection: str) -> float:
    value = process_metrics().registry.get_sample_value(
        "casetrail_projection_lag_seconds_count", {"service": service, "projection": projection}
    )
    return value or 0.0


async def test_two_services_feeding_one_projection_have_a_series_each(tmp_path: Path) -> None:
    name = CaseFactsProjection.name
    before = {service: _count(service, name) for service in ("intake", "planning")}
    for service, batch in (("intake", 1), ("planning", 2)):
        read_models = SqliteReadModelStore(tmp_path / f"{service}.db")
        try:
            handler = BusProjectionHandler(read_models, CaseFactsProjection(), service=service)
            for _ in range(batch):
                await handler.handle_batch([intake().record(opened(), occurred_at=T0)])
        finally:
            await read_models.close()

    assert _count("intake", name) - before["intake"] == 1
    assert _count("planning", name) - before["planning"] == 2


async def test_a_redelivered_batch_adds_no_observation(tmp_path: Path) -> None:
    # A batch handed over again after a restart, hours after it was recorded: the repeats are
    # skipped, and their age is not a projection's delay (it fired the lag alert for nothing).
    name = CaseFactsProjection.name
    service = "redelivered"
    producer = intake()
    first = producer.record(opened(), occurred_at=T0)
    read_models = SqliteReadModelStore(tmp_path / "facts.db")
    try:
        handler = BusProjectionHandler(read_models, CaseFactsProjection(), service=service)
        await handler.handle_batch([first])
        assert _count(service, name) == 1
        await handler.handle_batch([first])
        assert _count(service, name) == 1
        second = producer.record(opened(), occurred_at=T0)
        await handler.handle_batch([first, second])
        assert _count(service, name) == 2
    finally:
        await read_models.close()


async def test_a_handler_without_a_service_is_refused(tmp_path: Path) -> None:
    """An empty name would be a series of its own, mixing the lag of whoever left it out."""
    read_models = SqliteReadModelStore(tmp_path / "read-models.db")
    try:
        with pytest.raises(ValueError, match="name of its service"):
            BusProjectionHandler(read_models, CaseFactsProjection(), service="")
    finally:
        await read_models.close()
