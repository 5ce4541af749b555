"""The signing-key port: who signs a log's checkpoints, without handing out the private key.

``CheckpointSigner`` is shaped like a KMS: it signs bytes and tells its public key, nothing
more, so a production adapter can keep the key in a KMS or HSM (``RemoteSigner`` wraps any
such sign call). The embedded default, ``FileSigner``, generates an Ed25519 key into the data
directory on first use (mode 0600) and publishes its verifier key beside it; a key it is given
(a mounted Secret) it only reads.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from casetrail_platform.ledger.note import Checkpoint, Verifier, signature_line
from casetrail_platform.private_files import (
    private_directory,
    private_replacement,
    read_private,
)


class CheckpointSigner(ABC):
    """Signs checkpoints of one log (its key name is the log's origin)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""

    @abstractmethod
    async def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature of ``message``."""

    async def verifier(self) -> Verifier:
        return Verifier(self.name, await self.public_key())

    async def sign_checkpoint(self, checkpoint: Checkpoint) -> str:
        """The checkpoint as a signed note."""
        if checkpoint.origin != self.name:
            raise ValueError(f"this key signs {self.name!r}, not {checkpoint.origin!r}")
        return await self.sign_note(checkpoint.body())

    async def sign_note(self, body: str) -> str:
        """``body`` (lines, each ending in a newline) as a signed note under the log's key.
        Besides checkpoints, only statements that can never parse as one (audit's
        ``PendingStatement`` and ``ExportStatement``: their first line is no origin) are
        signed so."""
        signature = await self.sign(body.encode())
        return body + "\n" + signature_line(self.name, await self.public_key(), signature)


async def handover_note(
    checkpoint: Checkpoint, old: CheckpointSigner, new: CheckpointSigner
) -> str:
    """``checkpoint`` signed by a log's key and by its successor: one body, two signature
    lines (C2SP signed-note allows several; Go's ``note.Open`` opens it with either key and
    ignores the other line). The new key's first checkpoint is the old key's last."""
    if not checkpoint.origin == old.name == new.name:
        raise ValueError(f"both keys must sign {checkpoint.origin!r}")
    body = checkpoint.body()
    lines = [
        signature_line(signer.name, await signer.public_key(), await signer.sign(body.encode()))
        for signer in (old, new)
    ]
    return body + "\n" + "".join(lines)


class FileSigner(CheckpointSigner):
    """An Ed25519 key in a PEM file, generated when missing (the embedded default).

    Only a key it generates is published beside it (``ledger.pub``, which audit reads when it
    shares the data directory). A key it is given is only read: on Kubernetes it is a
    read-only Secret mount in a directory the container's user may not write, and audit gets
    the public keys from ``CASETRAIL_LEDGER_PUBLIC_KEYS`` instead.
    """

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        generated = not path.exists()
        self._key = _load_or_create(path)
        self._public = _raw_public(self._key)
        if generated:
            # Whoever could rewrite it would choose the key audit checks this log with.
            with private_replacement(path.with_suffix(".pub")) as published:
                published.write(f"{Verifier(name, self._public)}\n".encode())

    async def public_key(self) -> bytes:
        return self._public

    async def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


class RemoteSigner(CheckpointSigner):
    """A key held elsewhere (a KMS, an HSM): ``sign`` is the remote call; the public key is
    configured (published by the key's owner), never fetched from the signer itself."""

    def __init__(
        self, name: str, public_key: bytes, sign: Callable[[bytes], Awaitable[bytes]]
    ) -> None:
        super().__init__(name)
        self._public = public_key
        self._sign = sign

    async def public_key(self) -> bytes:
        return self._public

    async def sign(self, message: bytes) -> bytes:
        return await self._sign(message)


def _load(path: Path) -> Ed25519PrivateKey:
    # As ssh with a private key: one others can read signs for whoever read it. Group-readable
    # is accepted: a Kubernetes Secret mounted with the pod's fsGroup is 0440.
    pem = read_private(path, "the ledger's signing key", group_readable=True)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _load_or_create(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        return _load(path)
    private_directory(path.parent)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Written under a temporary name with 0600, then renamed: never a readable or half key.
    with private_replacement(path) as file:
        file.write(pem)
    return key


def published_key(name: str, path: Path) -> Verifier:
    """The verifier key of the Ed25519 private key in ``path`` (never created here), for
    ``name``: what an operator gives audit as ``CASETRAIL_LEDGER_PUBLIC_KEYS``."""
    return Verifier(name, _raw_public(_load(path)))


async def file_signer(name: str, path: Path) -> FileSigner:
    return await asyncio.to_thread(FileSigner, name, path)
