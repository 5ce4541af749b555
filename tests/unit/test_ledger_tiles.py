"""Batch tree building and tile bookkeeping against the one-leaf-at-a-time accumulator."""

from __future__ import annotations

import hashlib
import random

from casetrail_platform.ledger import merkle, tiles


def test_extend_levels_adds_the_same_subtrees_as_one_leaf_at_a_time() -> None:
    picker = random.Random(10)
    for _ in range(30):
        single, batched = merkle.RootAccumulator(), merkle.RootAccumulator()
        expected: dict[merkle.SubtreeKey, bytes] = {}
        found: dict[merkle.SubtreeKey, bytes] = {}
        leaves: list[bytes] = []
        for _ in range(picker.randint(1, 6)):
            batch = [
                hashlib.sha256(b"%d" % (len(leaves) + i)).digest()
                for i in range(picker.randint(0, 600))
            ]
            leaves.extend(batch)
            for leaf in batch:
                expected.update(single.append_completing(leaf))
            for level, start, hashes in batched.extend_levels(batch):
                found.update(((level, start + i), digest) for i, digest in enumerate(hashes))
            assert batched.size == len(leaves)
            assert batched.root() == single.root() == merkle.root_of(leaves)
            assert batched.edge() == single.edge()
        assert found == expected
        stored: dict[tiles.TileKey, bytes] = {}
        accumulator = merkle.RootAccumulator()
        for first in range(0, len(leaves), 97):
            for write in tiles.writes(accumulator.extend_levels(leaves[first : first + 97])):
                key = (write.level, write.index)
                assert len(stored.get(key, b"")) == write.offset * merkle.HASH_SIZE
                stored[key] = stored.get(key, b"") + write.hashes
        assert tiles.subtrees_from(expected, stored) == expected
