"""Planning decides on the case's record kept folded between commands: a case worked for
years (every contact logged) costs a command what a new one does, and each command still
answers with the plan's version right after its own events."""

from __future__ import annotations

from datetime import date

import pytest

from casetrail_platform import decide
from casetrail_platform.commands import CommandContext
from events.catalog.monitoring import ContactKind
from services.planning.app.handlers import Dependencies, handle, stream_for
from services.planning.domain import commands as c
from services.planning.domain import model
from services.planning.domain.model import case_fold
from tests.unit.planning.support import START, WORKER, Bus, goal


def _contact(number: int) -> c.LogContact:
    return c.LogContact(
        "case-a", f"contact-{number}", ContactKind.PHONE_CALL, "Managing", date(2030, 3, 10)
    )


async def test_commands_read_only_what_came_since_the_kept_record(
    deps: Dependencies, bus: Bus
) -> None:
    await bus.open_case("case-a")
    drafted = await handle(
        deps,
        CommandContext(WORKER, "draft", occurred_at=START),
        c.DraftPlan("case-a", "plan-a", (goal("goal-walk"),)),
    )
    assert drafted.plan_version == 1
    reads: list[int] = []
    store = deps.store
    read_for_command = store.read_for_command

    async def counted(causation_id, stream, from_version=1):  # type: ignore[no-untyped-def]
        earlier, new = await read_for_command(causation_id, stream, from_version)
        reads.append(len(new))
        return earlier, new

    store.read_for_command = counted  # type: ignore[method-assign]
    for number in range(30):
        logged = await handle(
            deps, CommandContext(WORKER, f"contact-{number}", occurred_at=START), _contact(number)
        )
        assert logged.plan_version == 1

    # Nothing left to read: the previous command's answer folded its own event in (whole
    # history before: 2, 3, ... 31 events read and decoded, twice per command).
    assert reads == [0] * 30
    cache = decide._folds[store]
    record, version, _ = cache.take(case_fold("case-a"), stream_for("case-a"))
    assert version == 31
    assert len(record.contact_ids) == 30


async def test_a_retry_answers_with_the_plan_version_of_its_own_events(
    deps: Dependencies, bus: Bus
) -> None:
    await bus.open_case("case-a")
    context = CommandContext(WORKER, "draft", occurred_at=START)
    draft = c.DraftPlan("case-a", "plan-a", (goal("goal-walk"),))
    await handle(deps, context, draft)
    await handle(
        deps,
        CommandContext(WORKER, "agree", occurred_at=START),
        c.RecordAgreement("case-a", None, "Yes", True),
    )
    await handle(
        deps,
        CommandContext(WORKER, "add", occurred_at=START),
        c.AddGoal("case-a", goal("goal-club", "Join the Thursday club")),
    )

    reads = _counting_stream_reads(deps)

    retried = await handle(deps, CommandContext(WORKER, "draft", occurred_at=START), draft)

    assert retried.plan_version == 1  # as drafted, not the version 2 the plan is at now
    assert reads == []  # answered by the kept record (before: the case read up to the draft)


async def test_a_retry_older_than_the_changes_kept_reads_the_case_up_to_its_events(
    deps: Dependencies, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "VERSION_CHANGES_KEPT", 2)
    await bus.open_case("case-a")
    draft = c.DraftPlan("case-a", "plan-a", (goal("goal-walk"),))
    await handle(deps, CommandContext(WORKER, "draft", occurred_at=START), draft)
    commands: list[c.Command] = [
        c.RecordAgreement("case-a", None, "Yes", True),
        c.AddGoal("case-a", goal("goal-club", "Join the Thursday club")),
        c.RecordAgreement("case-a", None, "Yes", True),
        c.AddGoal("case-a", goal("goal-garden", "Tend the garden")),
    ]
    for number, command in enumerate(commands):
        await handle(deps, CommandContext(WORKER, f"k-{number}", occurred_at=START), command)
    reads = _counting_stream_reads(deps)

    agreed = await handle(
        deps,
        CommandContext(WORKER, "k-2", occurred_at=START),
        c.RecordAgreement("case-a", None, "Yes", True),
    )
    retried = await handle(deps, CommandContext(WORKER, "draft", occurred_at=START), draft)

    # Versions changed at the draft (1), the first added goal (2) and the second (3): the
    # record keeps the last two, so the agreement's retry is answered without a read.
    assert (agreed.plan_version, retried.plan_version) == (2, 1)
    assert reads == [(1, 1)]  # only the draft, older than the changes kept, was read


def _counting_stream_reads(deps: Dependencies) -> list[tuple[int, int | None]]:
    """The (from, to) versions of every ``read_stream`` of ``deps.store`` up to a version from
    now on (a kept record catching up reads what came after it, not up to a version)."""
    reads: list[tuple[int, int | None]] = []
    store = deps.store
    read_stream = store.read_stream

    async def counted(stream, *, from_version=1, to_version=None, **more):  # type: ignore[no-untyped-def]
        if to_version is not None:
            reads.append((from_version, to_version))
        return await read_stream(stream, from_version=from_version, to_version=to_version, **more)

    store.read_stream = counted  # type: ignore[method-assign]
    return reads
