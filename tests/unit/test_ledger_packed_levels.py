"""verify-store's tree from packed hashes: a worker's levels of an aligned range
(``merkle.packed_levels``) and the parent's ``_Subtrees`` give the same subtrees and roots as
the list-based ``merkle`` code."""

from __future__ import annotations

import hashlib

import pytest

from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.verify import _Subtrees

LEAVES = [hashlib.sha256(b"%d" % i).digest() for i in range(70)]


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 8, 9, 16, 33])
def test_packed_levels_are_the_parents_level_by_level(count: int) -> None:
    row = LEAVES[:count]
    levels = merkle.packed_levels(b"".join(row), 0)
    for packed in levels:
        row = merkle.parents(row)
        assert packed == b"".join(row)
    assert len(row) <= 1  # every level with a pair is there
    # A range starting at 8 is aligned to level 3 only: no level above it is its own.
    assert len(merkle.packed_levels(b"".join(LEAVES[8:16]), 8)) == 3
    assert len(merkle.packed_levels(b"".join(LEAVES[8:12]), 8)) == 2


@pytest.mark.parametrize("with_levels", [True, False])
@pytest.mark.parametrize("count", [1, 8, 13, 64, 70])
def test_subtrees_from_ranges_give_every_root(count: int, with_levels: bool) -> None:
    """Ranges of 8 as workers answer them (their levels, or none as in one process)."""
    subtrees = _Subtrees()
    for start in range(0, count, 8):
        packed = b"".join(LEAVES[start : min(start + 8, count)])
        subtrees.extend(packed, merkle.packed_levels(packed, start) if with_levels else ())
    assert subtrees.size == count
    for size in range(1, count + 1):
        assert merkle.root_at(size, subtrees.source) == merkle.root_of(LEAVES[:size]), size
