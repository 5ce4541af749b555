"""Nonces drawn in bulk are still 12 fresh random bytes each, and never shared with a child."""

from __future__ import annotations

import os

from casetrail_platform.keys.nonces import NONCE_BYTES, random_nonce


def test_nonces_are_twelve_bytes_and_never_repeat_across_pool_refills() -> None:
    drawn = [random_nonce() for _ in range(5000)]
    assert {len(nonce) for nonce in drawn} == {NONCE_BYTES}
    assert len(set(drawn)) == len(drawn)


def test_a_forked_child_draws_its_own_pool() -> None:
    random_nonce()  # the parent's pool holds unused nonces now
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(reader)
        os.write(writer, b"".join(random_nonce() for _ in range(10)))
        os._exit(0)
    os.close(writer)
    from_child = b""
    while chunk := os.read(reader, 4096):
        from_child += chunk
    os.close(reader)
    os.waitpid(child, 0)
    in_parent = b"".join(random_nonce() for _ in range(10))
    assert len(from_child) == 10 * NONCE_BYTES
    assert from_child != in_parent
