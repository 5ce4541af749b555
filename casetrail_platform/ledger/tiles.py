"""How a ledger keeps its hashes: in tiles, after Go's ``golang.org/x/mod/sumdb/tlog``.

Only every fourth level of the tree is stored (levels 0, 4, 8, ...), in tiles of 256
consecutive hashes of one level (8 KiB, one row; the last tile of a level grows as the tree
does). A store of n events keeps about 1.07 n hashes in n / 256 rows, so following a store
writes a few rows per batch instead of two rows (and two index entries) per event.

A complete subtree at any other level is the root of at most 8 consecutive hashes of the
stored level below it, which lie in one tile: a proof in a tree of a million events reads five
tiles and hashes about 50 nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from casetrail_platform.ledger.merkle import (
    HASH_SIZE,
    Hash,
    HashRun,
    SubtreeKey,
    fold,
    split_hashes,
)

TILE_HEIGHT = 4
"""Levels between two stored ones (tlog's tile height)."""
TILE_WIDTH = 256
"""Hashes per tile (a multiple of ``2 ** TILE_HEIGHT``, so a fold never spans two tiles)."""
TileKey = tuple[int, int]
"""(level, index): the hashes of ``level`` (a multiple of ``TILE_HEIGHT``) from index
``index * TILE_WIDTH`` on."""


@dataclass(frozen=True, slots=True)
class TileWrite:
    level: int
    index: int
    offset: int
    """Hashes the tile holds already (0: a new tile); ``hashes`` follow them."""
    hashes: bytes


def writes(runs: Iterable[HashRun]) -> list[TileWrite]:
    """The tile writes that store ``runs`` (new complete subtrees, per level)."""
    planned: list[TileWrite] = []
    for level, start, hashes in runs:
        if level % TILE_HEIGHT:
            continue
        index, remaining = start, list(hashes)
        while remaining:
            offset = index % TILE_WIDTH
            taken, remaining = remaining[: TILE_WIDTH - offset], remaining[TILE_WIDTH - offset :]
            planned.append(TileWrite(level, index // TILE_WIDTH, offset, b"".join(taken)))
            index += len(taken)
    return planned


TileSlice = tuple[int, int, int, int]
"""(level, tile index, offset, count): ``count`` consecutive hashes of one tile."""


def locate(key: SubtreeKey) -> TileSlice:
    """The stored hashes that subtree ``key`` folds (one tile's, at most ``2**TILE_HEIGHT``)."""
    level, index = key
    stored = level - level % TILE_HEIGHT
    span = 1 << (level - stored)
    first = index * span
    return stored, first // TILE_WIDTH, first % TILE_WIDTH, span


def fold_slice(packed: bytes | None, count: int) -> Hash | None:
    """The subtree hash from its stored hashes (``None`` unless all ``count`` are there)."""
    if packed is None or len(packed) != count * HASH_SIZE:
        return None
    return packed if count == 1 else fold(split_hashes(packed))


def subtrees_from(
    keys: Iterable[SubtreeKey], tiles: Mapping[TileKey, bytes]
) -> dict[SubtreeKey, Hash]:
    """The hashes of complete subtrees ``keys`` from whole tiles (those not complete in the
    tiles are left out)."""
    found: dict[SubtreeKey, Hash] = {}
    for key in keys:
        level, index, offset, count = locate(key)
        packed = tiles.get((level, index), b"")[offset * HASH_SIZE : (offset + count) * HASH_SIZE]
        digest = fold_slice(packed, count)
        if digest is not None:
            found[key] = digest
    return found


def size_of(last_leaf_tile: tuple[int, int] | None) -> int:
    """The tree size given (index, byte length) of the last tile of level 0."""
    if last_leaf_tile is None:
        return 0
    index, length = last_leaf_tile
    return index * TILE_WIDTH + length // HASH_SIZE


def leaf_range(first_index: int, limit: int) -> tuple[int, int]:
    """The first and last tile index of level 0 that hold leaves [first, first + limit)."""
    return first_index // TILE_WIDTH, (first_index + max(limit, 1) - 1) // TILE_WIDTH


def slice_leaves(first_index: int, limit: int, tiles: Sequence[tuple[int, bytes]]) -> bytes:
    """Leaves [first, first + limit) from consecutive level-0 tiles (index, hashes), stopping
    at the first gap or short tile."""
    packed: list[bytes] = []
    expected = first_index // TILE_WIDTH
    for index, hashes in tiles:
        if index != expected:
            break
        packed.append(hashes)
        expected += 1
        if len(hashes) < TILE_WIDTH * HASH_SIZE:
            break
    start = (first_index % TILE_WIDTH) * HASH_SIZE
    return b"".join(packed)[start : start + limit * HASH_SIZE]
