"""KEK rotation on fakes: which KEK unwraps which key, and a rotation that a process still
wrapping with the old KEK leaves not done."""

from __future__ import annotations

import pytest

from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.rotation import KeyEncryptionKeyRing, RotationProgress, rotate_kek
from tests.unit.keys.support import FakeKms, MemoryDataKeyTable


class NamedKms(FakeKms):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    @property
    def key_id(self) -> str:
        return self.name


def test_the_ring_wraps_with_the_current_kek_and_unwraps_with_the_one_named() -> None:
    old, new = NamedKms("kms/old"), NamedKms("kms/new")
    ring = KeyEncryptionKeyRing(new, [old])

    assert ring.key_id == "kms/new"
    assert ring.unwrapper("kms/old") is old
    assert ring.unwrapper("kms/new") is new
    assert ring.unwrapper("kms/unknown") is new  # which refuses what it did not wrap
    assert new.unwrap(ring.wrap(b"k" * 32, b"context"), b"context") == b"k" * 32


def test_keys_wrapped_by_the_old_kek_meanwhile_leave_the_rotation_not_done_until_run_again() -> (
    None
):
    old, new = NamedKms("kms/old"), NamedKms("kms/new")
    table = MemoryDataKeyTable()
    stale = ClientKeyring(old, table)  # a process not yet configured with the new KEK
    for client in ("a", "b", "c"):
        stale.encryption_key(client)

    def meanwhile(progress: RotationProgress) -> None:
        if progress.rewrapped == 2:  # after the first batch: one behind the cursor, one ahead
            stale.encryption_key("0-late")
            stale.encryption_key("z-late")

    ring = KeyEncryptionKeyRing(new, [old])
    first = rotate_kek(table, ring, batch_size=2, on_batch=meanwhile)

    assert first.rewrapped == 4  # a, b, c and z-late
    assert first.remaining == {"kms/old": 1}
    assert not first.done
    second = rotate_kek(table, ring)
    assert second.done
    assert second.rewrapped == 1
    keyring = ClientKeyring(new, table, cache_seconds=0)
    for owner, _ in table.keys:
        assert keyring.decryption_key(owner, 1) is not None


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        rotate_kek(MemoryDataKeyTable(), FakeKms(), batch_size=0)


def test_with_the_new_kek_first_added_as_previous_old_and_new_processes_read_each_others_keys() -> (
    None
):
    old, new = NamedKms("kms/old"), NamedKms("kms/new")
    table = MemoryDataKeyTable()
    rolling_out = ClientKeyring(KeyEncryptionKeyRing(old, [new]), table, cache_seconds=0)
    swapped = ClientKeyring(KeyEncryptionKeyRing(new, [old]), table, cache_seconds=0)

    rolling_out.encryption_key("a")
    swapped.encryption_key("b")

    assert table.live_keys_by_kek() == {"kms/old": 1, "kms/new": 1}
    for keyring in (rolling_out, swapped):
        assert keyring.decryption_key("a", 1) is not None
        assert keyring.decryption_key("b", 1) is not None
