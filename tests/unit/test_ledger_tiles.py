"""Batch tree building and tile bookkeeping against the one-leaf-at-a-time accumulator."""

from __future__ import annotations

import hashlib
import random

from casetrail_platform.ledger import merkle, tiles
from casetrail_platform.ledger.canonical import StoredRow, canonical_row, leaf_hashes


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


def test_leaf_hashes_of_stored_bytes_match_canonical_row_also_outside_ascii() -> None:
    row = (7, "0e7c5a0e-0000-4000-8000-000000000007", "case-ünïcode", 3, "casetrail.note.added",
           2, b'{"text":"caf\xc3\xa9"}', "casetrail/intake", "worker-åsa", "social_worker",
           "0e7c5a0e-0000-4000-8000-000000000001", None, 1_700_000_000_000_001,
           1_700_000_000_000_002, "client-ø")  # fmt: skip
    since_2000 = 946_684_800_000_000
    # As PostgreSQL's C loaders give it: text as its bytes, times in µs since 2000.
    stored: StoredRow = (
        7, b'{"text":"caf\xc3\xa9"}', b"0e7c5a0e-0000-4000-8000-000000000007",
        "case-ünïcode".encode(), 3, b"casetrail.note.added", 2, b"casetrail/intake",
        "worker-åsa".encode(), b"social_worker", b"0e7c5a0e-0000-4000-8000-000000000001", b"",
        1_700_000_000_000_001 - since_2000, 1_700_000_000_000_002 - since_2000,
        "client-ø".encode(),
    )  # fmt: skip
    assert leaf_hashes([stored], since_2000) == [(7, merkle.leaf_hash(canonical_row(row)))]
