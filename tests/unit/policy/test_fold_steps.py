"""Audit folds a case's whole history of facts on every read: it does so a step at a time
(``guard.FOLD_STEP`` entries a turn of the event loop), to the very facts ``fold`` gives in
one, so the policy's decision is unchanged."""

from __future__ import annotations

import asyncio
import random
from typing import cast

import pytest

from casetrail_platform.policy.facts import fold
from casetrail_platform.policy.guard import FOLD_STEP, AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.store.port import EventStore
from tests.support.fact_history import history


def audit_access() -> AccessControl:
    return AccessControl(cast(EventStore, None), None, "audit", home_agency=DEFAULT_HOME_AGENCY)


@pytest.mark.parametrize("seed", range(40))
async def test_the_facts_folded_in_steps_are_those_folded_at_once(seed: int) -> None:
    entries = history(seed, random.Random(seed).choice([0, 1, 7, FOLD_STEP, 3 * FOLD_STEP + 1]))
    assert await audit_access().case_facts("case-1", entries) == fold("case-1", entries)


async def test_other_calls_run_while_a_long_case_is_folded() -> None:
    """Before, 3,000 entries were folded in one turn of the loop: nothing else ran."""
    entries = history(7, 3000)
    turns = 0
    folding = True

    async def other_call() -> None:
        nonlocal turns
        while folding:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_call())
    await asyncio.sleep(0)
    counted = turns
    facts = await audit_access().case_facts("case-1", entries)
    folding = False
    await other
    assert facts == fold("case-1", entries)
    assert turns - counted >= 3000 // FOLD_STEP - 1
