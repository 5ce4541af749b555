"""Rotating the agency's key-encryption key: every live data key re-wrapped by the new KEK.

While a rotation runs (and until it reports done) keys are wrapped by either KEK, so every
process holds a ``KeyEncryptionKeyRing``: the new KEK wraps, and each stored key is unwrapped by
the KEK its ``kek_id`` names. ``rotate_kek`` re-wraps in batches, each batch in one transaction
that replaces a key only where its wrapped bytes are still those read: a key destroyed meanwhile
stays destroyed, and a rotation stopped at any point is simply run again. Data keys themselves
do not change, so no sealed value is touched and caches stay valid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from casetrail_platform.keys.keyring import wrap_context
from casetrail_platform.keys.port import (
    DataKeyTable,
    KeyEncryptionKey,
    KeyUnavailableError,
    StoredDataKey,
)

DEFAULT_BATCH_SIZE = 500


class KeyEncryptionKeyRing(KeyEncryptionKey):
    """The current KEK (it wraps) and the previous ones, kept to unwrap what they wrapped until
    a rotation to the current one is done."""

    def __init__(self, current: KeyEncryptionKey, previous: Sequence[KeyEncryptionKey]) -> None:
        self.current = current
        self.previous = tuple(previous)
        self._by_id: dict[str, KeyEncryptionKey] | None = None

    @property
    def key_id(self) -> str:
        return self.current.key_id

    def check(self) -> None:
        for kek in (self.current, *self.previous):
            kek.check()

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        return self.current.wrap(data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self.current.unwrap(wrapped, context)

    def unwrapper(self, kek_id: str) -> KeyEncryptionKey:
        if self._by_id is None:
            # Asked lazily: a previous KEK is read (or its KMS named) only when needed.
            self._by_id = {kek.key_id: kek for kek in (*self.previous, self.current)}
        # An unknown id falls to the current KEK, which refuses what it did not wrap.
        return self._by_id.get(kek_id, self.current)


@dataclass(frozen=True, slots=True)
class RotationProgress:
    rewrapped: int
    """Keys re-wrapped by this run so far."""
    changed: int
    """Keys destroyed or re-wrapped by someone else between read and write (left as they are)."""


@dataclass(frozen=True, slots=True)
class RotationResult:
    kek_id: str
    rewrapped: int
    changed: int
    remaining: dict[str, int]
    """Live keys still wrapped by another KEK, by ``kek_id`` (empty: the rotation is done)."""

    @property
    def done(self) -> bool:
        return not self.remaining


def rotate_kek(
    table: DataKeyTable,
    kek: KeyEncryptionKey,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[RotationProgress], None] | None = None,
) -> RotationResult:
    """Re-wrap every live key of ``table`` that another KEK wraps by ``kek`` (its current KEK;
    its ``unwrapper`` must reach the old ones). Idempotent and resumable."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    kek_id = kek.key_id
    rewrapped = changed = 0
    after: tuple[str, int] | None = None
    while batch := table.wrapped_by_other_keks(kek_id, after, batch_size):
        pairs = [(key, kek.wrap(_unwrapped(kek, key), _context(key))) for key in batch]
        replaced = table.rewrap(pairs, kek_id)
        rewrapped += replaced
        changed += len(batch) - replaced
        after = (batch[-1].owner, batch[-1].version)
        if on_batch is not None:
            on_batch(RotationProgress(rewrapped, changed))
    remaining = {
        other: count for other, count in table.live_keys_by_kek().items() if other != kek_id
    }
    return RotationResult(kek_id, rewrapped, changed, remaining)


def _unwrapped(kek: KeyEncryptionKey, key: StoredDataKey) -> bytes:
    assert key.wrapped is not None
    try:
        return kek.unwrapper(key.kek_id).unwrap(key.wrapped, _context(key))
    except KeyUnavailableError as error:
        # Names the KEK, never the key: the operator has to configure it as a previous KEK.
        # The cause is chained, not quoted: its text ended "is unavailable; retry later" too.
        raise KeyUnavailableError(
            f"KEK {key.kek_id!r} of live data keys (configure it as a previous KEK)"
        ) from error


def _context(key: StoredDataKey) -> bytes:
    return wrap_context(key.owner, key.version)
