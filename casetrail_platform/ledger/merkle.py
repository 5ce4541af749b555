"""RFC 9162 Merkle trees (section 2.1): hashes, roots, inclusion and consistency proofs.

Leaf hash ``SHA-256(0x00 || leaf)``, node hash ``SHA-256(0x01 || left || right)``; a tree of n
leaves splits at k, the largest power of two below n. Proofs list hashes from the bottom up,
as RFC 9162 (and RFC 6962, and Go's ``golang.org/x/mod/sumdb/tlog``) define them.

Proofs are built from *complete subtrees*: the hash of the 2**level leaves starting at
``index * 2**level``. A ledger stores every one of them once it is complete, so any proof or
root needs only O(log n) stored hashes (``SubtreeSource``); the hashes of incomplete subtrees
on a tree's right edge are computed from complete ones on the fly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

Hash = bytes
SubtreeKey = tuple[int, int]
"""(level, index): the complete subtree over leaves [index * 2**level, (index + 1) * 2**level)."""
HashRun = tuple[int, int, Sequence[Hash]]
"""(level, index of the first, hashes): consecutive complete subtrees of one level."""
SubtreeSource = Callable[[Iterable[SubtreeKey]], Mapping[SubtreeKey, Hash]]
"""Looks up stored complete-subtree hashes, many at once (one query for a whole proof)."""

HASH_SIZE = 32
_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A proof or a request for one is invalid; the message names what is wrong."""


def leaf_hash(leaf: bytes) -> Hash:
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: Hash, right: Hash) -> Hash:
    return _sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = _sha256(b"").digest()
"""The root of the empty tree (RFC 9162: the hash of the empty string)."""


def parents(row: Sequence[Hash]) -> list[Hash]:
    """The node hashes of consecutive pairs of ``row`` (a last unpaired hash is left out)."""
    sha256 = _sha256
    return [sha256(b"\x01" + row[i] + row[i + 1]).digest() for i in range(0, len(row) - 1, 2)]


def packed_parents(row: bytes) -> bytes:
    """``parents`` of packed hashes, packed: one slice and one concatenation a node, no object
    per hash (verify-store builds a million leaves' tree this way)."""
    sha256 = _sha256
    pair = 2 * HASH_SIZE
    return b"".join(
        [
            sha256(b"\x01" + row[at : at + pair]).digest()
            for at in range(0, len(row) - HASH_SIZE, pair)
        ]
    )


def packed_levels(leaves: bytes, start: int) -> list[bytes]:
    """The complete subtrees over packed leaf hashes that start at leaf ``start``, level by
    level from 1, packed: as many levels as ``start`` is aligned to (all, from 0), so that
    node i of level k is the global subtree (k, (start >> k) + i)."""
    levels: list[bytes] = []
    row = leaves
    while len(row) >= 2 * HASH_SIZE and start % (2 << len(levels)) == 0:
        row = packed_parents(row)
        levels.append(row)
    return levels


def fold(row: Sequence[Hash]) -> Hash:
    """The root of the complete subtree whose 2**k hashes at some level are ``row``."""
    nodes = list(row)
    while len(nodes) > 1:
        nodes = parents(nodes)
    return nodes[0]


def split_hashes(packed: bytes) -> list[Hash]:
    """Concatenated 32-byte hashes, one by one."""
    return [packed[at : at + HASH_SIZE] for at in range(0, len(packed), HASH_SIZE)]


def root_of(leaf_hashes: Sequence[Hash]) -> Hash:
    """The root over ``leaf_hashes`` (already hashed leaves)."""
    accumulator = RootAccumulator()
    accumulator.extend(leaf_hashes)
    return accumulator.root()


class RootAccumulator:
    """The root of a growing tree, one leaf hash at a time: keeps the right edge's complete
    subtrees (at most log2 n hashes) and does one node hash per leaf on average, so a whole
    store is checked in one pass with constant memory, and the root at any size on the way
    is available (``root``) at O(log n)."""

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[Hash] = []
        self.size = 0

    def append(self, leaf: Hash) -> None:
        stack = self._stack
        size = self.size
        node = leaf
        # Each trailing 1 bit of the old size is a complete subtree that now has a sibling.
        while size & 1:
            node = _sha256(b"\x01" + stack.pop() + node).digest()
            size >>= 1
        stack.append(node)
        self.size += 1

    def extend(self, leaves: Iterable[Hash]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def extend_levels(self, leaves: Sequence[Hash]) -> list[HashRun]:
        """``extend`` by a batch, level by level (one pass of node hashes per level instead of
        a loop per leaf), returning the complete subtrees the batch adds at every level as
        runs (level, index of the first, hashes): what a ledger stores."""
        runs: list[HashRun] = []
        size = self.size
        # The right edge's complete subtrees by level (one per set bit of the size).
        edge: dict[int, Hash] = {}
        level_of_top = size.bit_length() - 1
        for level in range(level_of_top, -1, -1):
            if size >> level & 1:
                edge[level] = self._stack[len(edge)]
        nodes = list(leaves)
        level = 0
        start = size
        while nodes:
            runs.append((level, start, nodes))
            # ``start`` is size >> level: odd means the edge's subtree at this level is the
            # left sibling of the first new node.
            row = [edge.pop(level), *nodes] if start & 1 else nodes
            count = len(row)
            if count & 1:
                edge[level] = row[-1]
            nodes = parents(row)
            start >>= 1
            level += 1
        self.size = size + len(leaves)
        self._stack = [edge[level] for level in sorted(edge, reverse=True)]
        return runs

    def append_completing(self, leaf: Hash) -> list[tuple[SubtreeKey, Hash]]:
        """``append``, returning every subtree it completes (the leaf itself first): what a
        ledger stores so that proofs never need more than O(log n) stored hashes."""
        index = self.size
        completed = [((0, index), leaf)]
        stack = self._stack
        node = leaf
        level = 0
        while index & 1:
            node = _sha256(b"\x01" + stack.pop() + node).digest()
            index >>= 1
            level += 1
            completed.append(((level, index), node))
        stack.append(node)
        self.size += 1
        return completed

    @classmethod
    def resume(cls, size: int, edge: Sequence[Hash]) -> RootAccumulator:
        """The accumulator of a tree of ``size`` leaves, given the hashes of its right edge's
        complete subtrees (``completed()``'s keys, in that order)."""
        accumulator = cls()
        if len(edge) != bin(size).count("1"):
            raise ValueError("a tree's right edge has one complete subtree per set bit of its size")
        accumulator._stack = list(edge)
        accumulator.size = size
        return accumulator

    def root(self) -> Hash:
        if not self._stack:
            return EMPTY_ROOT
        stack = self._stack
        node = stack[-1]
        for left in reversed(stack[:-1]):
            node = _sha256(b"\x01" + left + node).digest()
        return node

    def edge(self) -> list[Hash]:
        """The hashes of ``completed()``'s subtrees (what ``resume`` takes back)."""
        return list(self._stack)

    def completed(self) -> list[SubtreeKey]:
        """The complete subtrees on the right edge, largest first (what ``append`` keeps)."""
        keys: list[SubtreeKey] = []
        start = 0
        for level in range(self.size.bit_length() - 1, -1, -1):
            if self.size >> level & 1:
                keys.append((level, start >> level))
                start += 1 << level
        return keys


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_keys(start: int, end: int) -> list[SubtreeKey]:
    """The complete subtrees whose hashes make the hash of leaves [start, end), where
    [start, end) is a subtree of some RFC 9162 tree (start aligned to a power of two at least
    as large as the range, as every range in a proof is)."""
    keys: list[SubtreeKey] = []
    size = end - start
    while size:
        # Each set bit of the size, largest first, is one complete subtree.
        level = size.bit_length() - 1
        keys.append((level, start >> level))
        start += 1 << level
        size -= 1 << level
    return keys


def _fold(keys: list[SubtreeKey], known: Mapping[SubtreeKey, Hash]) -> Hash:
    """MTH of a range from the hashes of its complete subtrees (``subtree_keys``)."""
    node = known[keys[-1]]
    for key in reversed(keys[:-1]):
        node = _sha256(b"\x01" + known[key] + node).digest()
    return node


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes make up PATH(index, D[0:size]), bottom up."""
    ranges: list[tuple[int, int]] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = split_point(end - start)
        if m < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
    ranges.reverse()
    return ranges


def _consistency_ranges(old_size: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes make up PROOF(old_size, D[0:size]), bottom up (RFC 9162
    2.1.4.1: SUBPROOF)."""
    ranges: list[tuple[int, int]] = []
    start, end, m, complete = 0, size, old_size, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def _hashes_of(ranges: list[tuple[int, int]], source: SubtreeSource) -> list[Hash]:
    plans = [subtree_keys(start, end) for start, end in ranges]
    wanted = [key for keys in plans for key in keys]
    known = source(wanted)
    if len(known) < len(set(wanted)):
        missing = sorted(set(wanted) - known.keys())
        raise LookupError(f"the ledger lacks subtree hashes {missing[:3]} (level, index)")
    return [known[keys[0]] if len(keys) == 1 else _fold(keys, known) for keys in plans]


def inclusion_subtrees(index: int, size: int) -> list[SubtreeKey]:
    """The stored subtrees ``inclusion_proof`` reads (to fetch them in one query)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    return [k for s, e in _inclusion_ranges(index, size) for k in subtree_keys(s, e)]


def consistency_subtrees(old_size: int, size: int) -> list[SubtreeKey]:
    """The stored subtrees ``consistency_proof`` reads."""
    check_sizes(old_size, size)
    if old_size == 0 or old_size == size:
        return []
    return [k for s, e in _consistency_ranges(old_size, size) for k in subtree_keys(s, e)]


def inclusion_proof(index: int, size: int, source: SubtreeSource) -> list[Hash]:
    """The audit path of leaf ``index`` (0-based) in the tree of the first ``size`` leaves."""
    if size < 1:
        raise ProofError("tree size must be at least 1")
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    return _hashes_of(_inclusion_ranges(index, size), source)


def consistency_proof(old_size: int, size: int, source: SubtreeSource) -> list[Hash]:
    """The proof that the tree of ``size`` leaves extends the one of ``old_size`` leaves."""
    check_sizes(old_size, size)
    if old_size == 0 or old_size == size:
        return []
    return _hashes_of(_consistency_ranges(old_size, size), source)


def root_at(size: int, source: SubtreeSource) -> Hash:
    """The root of the first ``size`` leaves, from stored complete subtrees."""
    if size == 0:
        return EMPTY_ROOT
    return _hashes_of([(0, size)], source)[0]


def check_sizes(old_size: int, size: int) -> None:
    if old_size < 0 or size < 0:
        raise ProofError("tree sizes cannot be negative")
    if old_size > size:
        raise ProofError(
            f"sizes in the wrong order: the first ({old_size}) must not exceed the second ({size})"
        )


def verify_inclusion(index: int, size: int, leaf: Hash, proof: Sequence[Hash], root: Hash) -> None:
    """Raises ``ProofError`` unless ``proof`` shows leaf ``index`` hashing to ``leaf`` is in the
    tree of ``size`` leaves whose root is ``root`` (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    node = leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    if node != root:
        raise ProofError("the inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int, size: int, old_root: Hash, root: Hash, proof: Sequence[Hash]
) -> None:
    """Raises ``ProofError`` unless ``proof`` shows the tree (``size``, ``root``) extends the
    tree (``old_size``, ``old_root``) (RFC 9162 2.1.4.2)."""
    check_sizes(old_size, size)
    if old_size == size:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != root:
            raise ProofError("the roots of the same size differ")
        return
    if old_size == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        raise ProofError("the consistency proof is empty")
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != old_root:
        raise ProofError("the consistency proof does not lead to the first root")
    if sr != root:
        raise ProofError("the consistency proof does not lead to the second root")
