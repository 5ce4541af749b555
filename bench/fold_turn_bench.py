"""How long audit's access check holds the event loop for a long case: the longest turn other
calls wait while the policy's facts of a case with N fact entries are folded, in one step
(``fold``, as before) and as ``AccessControl.case_facts`` folds them (``FOLD_STEP`` a turn).

    python -m bench.fold_turn_bench [--entries 3000] [--rounds 20]

Rounds alternate the two, after one of each to warm up; medians (ms) of the longest turn and of
the whole fold, in CPU time of the loop's thread (the shared machine's preemption left out).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from bench.common import median
from casetrail_platform.policy.facts import CaseFacts, Entry, fold
from casetrail_platform.policy.guard import FOLD_STEP, AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.store.port import EventStore
from tests.support.fact_history import history


async def measured(folding: Callable[[], Awaitable[CaseFacts]]) -> tuple[float, float]:
    """(longest turn, whole fold) in ms, the turns seen by a task ticking beside the fold."""
    longest = 0.0
    running = True

    async def ticking() -> None:
        nonlocal longest
        last = time.thread_time()
        while running:
            await asyncio.sleep(0)
            now = time.thread_time()
            longest = max(longest, now - last)
            last = now

    ticker = asyncio.create_task(ticking())
    await asyncio.sleep(0)
    started = time.thread_time()
    await folding()
    took = time.thread_time() - started
    running = False
    await ticker
    return longest * 1000, took * 1000


async def run(entries: int, rounds: int) -> None:
    case: list[Entry] = history(1, entries)
    access = AccessControl(cast(EventStore, None), None, "audit", home_agency=DEFAULT_HOME_AGENCY)

    async def at_once() -> CaseFacts:
        return fold("case-1", case)

    async def in_steps() -> CaseFacts:
        return await access.case_facts("case-1", case)

    await measured(at_once)
    await measured(in_steps)
    results: dict[str, list[tuple[float, float]]] = {"one step": [], "in steps": []}
    for number in range(rounds):
        contenders = [("one step", at_once), ("in steps", in_steps)]
        for name, folding in contenders if number % 2 else reversed(contenders):
            results[name].append(await measured(folding))
    print(f"{entries} fact entries, FOLD_STEP {FOLD_STEP}, {rounds} rounds (medians, ms)")
    for name, samples in results.items():
        turn = median([sample[0] for sample in samples])
        whole = median([sample[1] for sample in samples])
        print(f"{name:>9}: longest turn {turn:6.2f}   whole fold {whole:6.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args(argv)
    asyncio.run(run(options.entries, options.rounds))


if __name__ == "__main__":
    main()
