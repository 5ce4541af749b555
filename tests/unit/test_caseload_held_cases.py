"""The worker tables write one small changelog record per change, however many cases one worker
(or nobody: the unassigned ones) holds. A worker's whole caseload was one value, rewritten at
every change: past about 17,000 cases it outgrew the producer's largest request (1,000,000
bytes), and the worker failed on that record at every restart."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from services.caseload import queries
from services.caseload.domain import UNASSIGNED, Holds, OverdueFollowUp, Releases, held_by, held_key
from services.caseload.processor import CaseloadApp, FactRecord, build_app
from services.caseload.settings import CaseloadSettings

CASES = 20_001
LARGEST_RECORD = 300
"""Bytes of a changelog record's key and value at most: a case id, a worker id, a date."""


def _app(tmp_path: Path) -> CaseloadApp:
    settings = CaseloadSettings(
        data_dir=tmp_path / "caseload", web_enabled=False, processing_guarantee="at_least_once"
    )
    return build_app(settings)


def _record_sizes(app: CaseloadApp) -> list[int]:
    """The size of each changelog record any table of ``app`` sends from now on, serialised
    as Faust sends it."""
    sizes: list[int] = []
    for table in app.tables.values():

        def sending(
            partition: Any,
            key: Any,
            value: Any,
            key_serializer: Any = None,
            value_serializer: Any = None,
            *,
            table: Any = table,
            send: Any = table.send_changelog,
        ) -> Any:
            topic = table.changelog_topic
            key_bytes, _ = topic.prepare_key(key, key_serializer or table.key_serializer)
            value_bytes, _ = topic.prepare_value(value, value_serializer or table.value_serializer)
            sizes.append(len(key_bytes or b"") + len(value_bytes or b""))
            return send(partition, key, value, key_serializer, value_serializer)

        table.send_changelog = sending
    return sizes


async def test_a_holder_of_more_than_20000_cases_writes_only_small_changelog_records(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path)
    sizes = _record_sizes(app)
    agent = next(agent for name, agent in app.agents.items() if name.endswith("count-caseloads"))
    due = date(2030, 1, 1)
    async with agent.test_context() as running:
        for n in range(CASES):
            await running.put(FactRecord.of(Holds(UNASSIGNED, f"case-{n:05d}", due)))
            # Stops at once on the old layout (each record held every case before it).
            assert max(sizes) <= LARGEST_RECORD, (n, max(sizes))
        await running.put(FactRecord.of(Holds("w-ana", "case-00007", None)))
        await running.put(FactRecord.of(Releases(UNASSIGNED, "case-00007")))
        await running.put(FactRecord.of(Releases(UNASSIGNED, "never-held")))
    assert max(sizes) <= LARGEST_RECORD
    assert len(sizes) == CASES + 2, "a release of a case not held writes nothing"

    unassigned = queries.unassigned(app)
    assert len(unassigned) == CASES - 1
    assert unassigned[:3] == ("case-00000", "case-00001", "case-00002")
    assert "case-00007" not in unassigned
    assert queries.caseload(app, "w-ana").case_ids == ("case-00007",)
    assert queries.caseloads(app) == {"w-ana": 1}
    assert len(queries.overdue(app, date(2030, 1, 2))) == CASES - 1
    assert queries.overdue(app, date(2030, 1, 2), "w-ana") == []


async def test_a_fact_told_again_writes_nothing_more(tmp_path: Path) -> None:
    """A repeat tells its case's facts again (``domain.restated``): a hold of a case already
    held with that due date, releases of cases no longer held."""
    app = _app(tmp_path)
    sizes = _record_sizes(app)
    agent = next(agent for name, agent in app.agents.items() if name.endswith("count-caseloads"))
    held = Holds("w-ana", "case-1", date(2030, 1, 1))
    async with agent.test_context() as running:
        for fact in (held, held, Holds("w-ana", "case-1", None), held):
            await running.put(FactRecord.of(fact))
    assert len(sizes) == 3


def test_the_views_read_the_records_of_each_holder_in_the_order_they_always_had(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path)
    held = [
        ("w-ben", "b", "2030-01-03"),
        ("w-an", "x", "2030-01-01"),  # a worker id that begins another's
        ("w-ana", "c", None),
        ("w-ana", "a", "2030-01-02"),
        (UNASSIGNED, "e", "2030-01-01"),
        ("w-ana", "weird/id", "2029-12-31"),  # only the first "/" ends the holder
    ]
    app.held_cases = {held_key(w, c): {"follow_up_due": d} for w, c, d in held}
    assert held_by(held_key("w-ana", "weird/id")) == ("w-ana", "weird/id")
    assert queries.caseload(app, "w-ana").case_ids == ("a", "c", "weird/id")
    assert queries.caseload(app, "w-an").case_ids == ("x",)
    assert queries.caseload(app, "w-nobody").case_ids == ()
    assert queries.unassigned(app) == ("e",)
    assert list(queries.caseloads(app).items()) == [("w-an", 1), ("w-ana", 3), ("w-ben", 1)]
    today = date(2030, 1, 3)
    assert queries.overdue(app, today) == [
        OverdueFollowUp(date(2029, 12, 31), "weird/id", "w-ana", 3),
        OverdueFollowUp(date(2030, 1, 1), "e", UNASSIGNED, 2),
        OverdueFollowUp(date(2030, 1, 1), "x", "w-an", 2),
        OverdueFollowUp(date(2030, 1, 2), "a", "w-ana", 1),
    ]
    assert queries.overdue(app, today, "w-an") == [
        OverdueFollowUp(date(2030, 1, 1), "x", "w-an", 2)
    ]


def test_a_worker_s_views_are_routed_to_the_partition_of_their_records(tmp_path: Path) -> None:
    """The worker facts' keys were raw, the tables' JSON, which Faust's view routing hashes:
    with several worker processes a worker's view went to one that did not hold their
    records, and was answered empty."""
    app = _app(tmp_path)
    [facts] = app.extra_internal_topics
    for worker in ("w-ana", "worker-1", UNASSIGNED):
        routed_by = app.held_cases.changelog_topic.prepare_key(worker, None)[0]
        assert facts.prepare_key(worker, None)[0] == routed_by
