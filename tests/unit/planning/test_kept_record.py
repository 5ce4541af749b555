"""Planning decides on the case's record kept folded between commands: a case worked for
years (every contact logged) costs a command what a new one does, and each command still
answers with the plan's version right after its own events."""

from __future__ import annotations

from datetime import date

from casetrail_platform import decide
from casetrail_platform.commands import CommandContext
from events.catalog.monitoring import ContactKind
from services.planning.app.handlers import Dependencies, handle, stream_for
from services.planning.domain import commands as c
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

    retried = await handle(deps, CommandContext(WORKER, "draft", occurred_at=START), draft)

    assert retried.plan_version == 1  # as drafted, not the version 2 the plan is at now
